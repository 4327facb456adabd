"""The one place Jetpack runs external commands (``zfs``, ``cp``, ``mount`` ...).

argv lists only, never a shell; each command is logged as ``+ argv`` at debug level; a
failure raises :class:`~jetpack.errors.CommandError` carrying argv, exit status and stderr.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from jetpack.errors import CommandError
from jetpack.log import get_logger

if TYPE_CHECKING:
    import subprocess

log = get_logger("jetpack.command")


def run(
    argv: Sequence[str],
    *,
    input: bytes | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[bytes]:
    """Run ``argv`` to completion, capturing its output.

    Raises:
        CommandError: the program is missing, or it exited non-zero and ``check`` is set.
    """
    # Imported here: the store and its backends import this module on every pod start,
    # and only some backends (copy, zfs) and store operations run a command.
    import shlex
    import subprocess

    log.debug("+ %s", shlex.join(argv))
    try:
        proc = subprocess.run(
            list(argv), input=input, env=None if env is None else dict(env), capture_output=True
        )
    except OSError as err:
        raise CommandError(argv, None, err.strerror or str(err)) from err
    if check and proc.returncode != 0:
        raise CommandError(argv, proc.returncode, proc.stderr.decode(errors="replace"))
    return proc


def output(argv: Sequence[str], *, env: Mapping[str, str] | None = None) -> str:
    """``run(argv)``'s standard output as text, without the trailing newline."""
    return run(argv, env=env).stdout.decode(errors="replace").rstrip("\n")
