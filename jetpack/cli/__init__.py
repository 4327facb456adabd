"""The ``jetpack`` command line (click).

``main`` holds the group, the global options and the one wrapper that maps errors to exit
codes; ``options`` the state and options shared by every command; one module per noun
(``aci``, ``image``, ``pod``, ...) holds its commands. Commands parse, call the library,
and print — no logic of their own, and heavy imports only inside the command that needs
them.

:func:`main` here is the console script's entry point: it turns the cyclic garbage
collector off before anything is imported (a start of jetpack allocates hundreds of
thousands of objects and frees almost none; the collector's passes cost ~4 ms of every
pod start). The group turns it back on for every command but the short-lived ones that
start pods (see ``SHORT_LIVED`` in ``main.py``), which turn it on themselves before
anything long, such as a download.
"""

from __future__ import annotations


def main() -> None:
    """The ``jetpack`` command."""
    import gc

    gc.disable()
    from jetpack.cli.main import main as run_command_line

    run_command_line()
