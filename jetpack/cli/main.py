"""The ``jetpack`` command group and the single place that turns errors into exit codes.

Exit codes: 0 success; 1 invalid input or a failed operation (every ``JetpackError``);
2 bad usage (click's usage errors); 130 interrupted. Errors are one line on stderr starting
with ``jetpack: ``; a traceback is printed only with ``--debug``.

Each command's module is imported only when that command runs, and imports its heavy
dependencies inside the command body, so ``jetpack --help`` and the fast commands start
quickly.

The console script enters through :func:`jetpack.cli.main` (``jetpack/cli/__init__.py``),
which turns the garbage collector off while modules load; the group turns it back on for
every command but :data:`SHORT_LIVED`.
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import click

from jetpack import __version__
from jetpack.cli.options import CliState
from jetpack.errors import JetpackError

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_INTERNAL = 70

# click >= 8.2 raises this (a UsageError) when a group is run with no subcommand.
_NoArgsIsHelp: type[click.UsageError] = getattr(
    click.exceptions, "NoArgsIsHelpError", type("_NeverRaised", (click.UsageError,), {})
)


# Each command's module, imported only when that command runs (or help lists them all):
# importing every module costs ~60 ms, more than a whole pod start is allowed.
COMMANDS = {
    "aci": "jetpack.cli.aci:aci",
    "cat-manifest": "jetpack.cli.pod:cat_manifest",
    "discover": "jetpack.cli.discover:discover",
    "enter": "jetpack.cli.pod:enter",
    "fetch": "jetpack.cli.fetch:fetch",
    "gc": "jetpack.cli.pod:gc",
    "image": "jetpack.cli.image:image",
    "info": "jetpack.cli.system:info",
    "init": "jetpack.cli.system:init",
    "list": "jetpack.cli.pod:list_pods",
    "logs": "jetpack.cli.pod:logs",
    "mds": "jetpack.cli.metadata:metadata_service",
    "metadata-service": "jetpack.cli.metadata:metadata_service",
    "prepare": "jetpack.cli.pod:prepare",
    "push": "jetpack.cli.serve:push",
    "rm": "jetpack.cli.pod:rm",
    "run": "jetpack.cli.pod:run",
    "run-prepared": "jetpack.cli.pod:run_prepared",
    "serve": "jetpack.cli.serve:serve",
    "status": "jetpack.cli.pod:status",
    "stop": "jetpack.cli.pod:stop",
    "trust": "jetpack.cli.trust:trust",
    "untrust": "jetpack.cli.trust:untrust",
    "version": "jetpack.cli.system:version",
}


ALIASES = frozenset({"mds"})  # work, but are not listed twice in --help

# Commands that only start a pod and end (or exec stage1): the collector stays off.
SHORT_LIVED = frozenset({"run", "prepare", "run-prepared"})


class LazyGroup(click.Group):
    """A group whose commands are imported when used (see COMMANDS)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*COMMANDS, *self.commands} - ALIASES)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands:
            return self.commands[cmd_name]
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        import importlib

        module, _, attr = target.partition(":")
        command = getattr(importlib.import_module(module), attr)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--dir",
    "data_dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="JETPACK_DIR",
    show_envvar=True,
    help="Data directory (default: /var/lib/jetpack, or data-dir in the config file).",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="JETPACK_CONFIG",
    show_envvar=True,
    help="Configuration file (default: /etc/jetpack/jetpack.toml if it exists).",
)
@click.option("--debug", is_flag=True, help="Log what happens and show tracebacks on errors.")
@click.version_option(__version__, "--version", prog_name="jetpack", message="%(prog)s %(version)s")
@click.pass_context
def cli(ctx: click.Context, data_dir: Path | None, config_file: Path | None, debug: bool) -> None:
    """Jetpack runs App Container (appc) images."""
    if ctx.invoked_subcommand not in SHORT_LIVED:
        gc.enable()
    state: CliState = ctx.obj
    state.data_dir = data_dir
    state.config_file = config_file
    state.debug = debug
    if debug:
        import logging  # ~15 ms: only for --debug

        logging.basicConfig(level=logging.DEBUG, format="jetpack: %(name)s: %(message)s")
    # Load it now, so a broken --config fails every command alike, once, before any work.
    _ = state.config


def _print_traceback() -> None:
    import traceback

    traceback.print_exc()


def _one_line(text: str) -> str:
    return " ".join(text.split())


def run(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit code (never raises, never exits)."""
    state = CliState()
    try:
        rv = cli.main(
            args=list(argv) if argv is not None else None,
            prog_name="jetpack",
            standalone_mode=False,
            obj=state,
        )
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except _NoArgsIsHelp as exc:
        # A group run without a subcommand: its help is the most useful answer.
        click.echo(exc.format_message(), err=True)
        return EXIT_USAGE
    except click.UsageError as exc:
        command = exc.ctx.command_path if exc.ctx is not None else "jetpack"
        click.echo(f"jetpack: {_one_line(exc.format_message())} (see '{command} --help')", err=True)
        return EXIT_USAGE
    except click.ClickException as exc:
        click.echo(f"jetpack: {_one_line(exc.format_message())}", err=True)
        return exc.exit_code
    except click.Abort as exc:
        if isinstance(exc.__cause__ or exc.__context__, KeyboardInterrupt):
            click.echo("jetpack: interrupted", err=True)  # click made it an Abort
            return EXIT_INTERRUPTED
        click.echo("jetpack: aborted", err=True)
        return 1
    except JetpackError as exc:
        if state.debug:
            _print_traceback()
        click.echo(f"jetpack: {_one_line(str(exc))}", err=True)
        return exc.exit_code
    except KeyboardInterrupt:
        click.echo("jetpack: interrupted", err=True)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`jetpack ... | head`): not an error worth a message.
        return 1
    except Exception as exc:
        if state.debug:
            _print_traceback()
        click.echo(
            f"jetpack: internal error: {type(exc).__name__}: {_one_line(str(exc))} "
            "(run again with --debug for the traceback, and report it)",
            err=True,
        )
        return EXIT_INTERNAL
    return rv if isinstance(rv, int) else 0


def main() -> None:
    """The console-script entry point."""
    code = run()
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        # Point stdout at /dev/null so the interpreter's own flush at exit stays quiet.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(code)
