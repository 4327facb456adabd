"""``conformance/run``: the appc conformance suite. Prints a table (check, result, detail)
and exits 1 if any check failed (or, with CI=true, was skipped), 2 on bad arguments, 128+N
when stopped by signal N (after cleaning up as on success)."""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from conformance import ace
from conformance.harness import DOMAIN, Report, Workspace, ci

USAGE_EPILOG = """\
--runtime CMD runs the ACE validator's pod with another appc executor: CMD is run with
sh -c, as root, where coreos.com resolves to the suite's image server (HTTPS, port 443,
a test CA), with these in its environment:
  ACE_MAIN, ACE_SIDEKICK          the two image names (coreos.com/ace-validator-*:0.8.11)
  ACE_MAIN_ACI, ACE_SIDEKICK_ACI  the same images as signed files (FILE.asc beside)
  ACE_PUBKEY                      the path of the armored public key that signed them
  ACE_CA_FILE, SSL_CERT_FILE      the CA of the server's certificate
  ACE_SERVER, ACE_WORKDIR         https://coreos.com, and an empty scratch directory
It must run both apps in one pod with an empty volume named "database", pass their
output through, exit with the pod's status, and stop any daemon it started (its
scratch directory is removed after it). For example:
  conformance/run --runtime 'rkt run --insecure-options=image --volume database,kind=empty \\
      "$ACE_MAIN_ACI" "$ACE_SIDEKICK_ACI"'
  conformance/run --runtime conformance/runtimes/jetpack     # Jetpack itself, on the files
"""


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="conformance/run",
        description="Run the appc conformance suite: the official ACE validator in Jetpack "
        "pods, and interop with the reference actool.",
        epilog=USAGE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--runtime",
        metavar="CMD",
        help="run only the ACE part, with another executor (see below)",
    )
    parser.add_argument(
        "--only",
        choices=("ace", "actool"),
        help="run only the ACE validator or only the actool interop checks",
    )
    parser.add_argument(
        "--backend",
        action="append",
        choices=ace.BACKENDS,
        help="storage backend to run the ACE on (repeatable; default: all)",
    )
    parser.add_argument(
        "--net",
        action="append",
        choices=ace.NETS,
        help="network mode to run the ACE in (repeatable; default: all)",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    args = parser.parse_args(argv)
    if args.runtime is not None and (args.only == "actool" or args.backend or args.net):
        parser.error("--runtime runs only the ACE part: no --only actool, --backend or --net")
    if args.runtime is not None and not args.runtime.strip():
        parser.error("--runtime needs a command")
    return args


def main(argv: list[str]) -> int:
    args = parse(argv)
    if os.geteuid() != 0:
        print(
            "conformance/run: runs pods and a server on port 443: run it as root", file=sys.stderr
        )
        return 2
    if isinstance(sys.stdout, io.TextIOWrapper):  # "…" on an ASCII terminal
        sys.stdout.reconfigure(errors="replace")
    report = Report(verbose=not args.quiet)
    root = Path(tempfile.mkdtemp(prefix="jetpack-conformance-"))
    report.scratch = str(root)
    ws: Workspace | None = None
    stopped = 0
    for signum in (signal.SIGTERM, signal.SIGHUP):  # unwind as ^C does: servers, pods, pools
        signal.signal(signum, _stop)
    try:
        ws = Workspace(root)
        ws.prepare()
        suite(ws, report, args)
    except (KeyboardInterrupt, _Stopped) as err:
        stopped = err.signum if isinstance(err, _Stopped) else signal.SIGINT
        report.add("interrupted", False, f"by {signal.Signals(stopped).name}")
    except Exception as err:  # the run cannot go on: say why in its row, not a traceback
        report.add("the suite itself", False, f"stopped by {type(err).__name__}: {err}")
    finally:
        for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(signum, signal.SIG_IGN)  # let the clean-up finish
        if ws is not None:
            ws.close()
        if args.keep:
            print(f"conformance/run: kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    print(report.as_json() if args.json else report.table())
    if stopped:
        return 128 + stopped
    if report.failed:
        return 1
    if report.skipped and ci():
        print("conformance/run: skipped checks fail on CI (CI=true)", file=sys.stderr)
        return 1
    return 0


class _Stopped(BaseException):
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _stop(signum: int, _frame: object) -> None:
    raise _Stopped(signum)


def suite(ws: Workspace, report: Report, args: argparse.Namespace) -> None:
    trusted = ws.trust_on_server()
    ok = trusted.returncode == 0 and ws.fingerprint in trusted.output.lower()
    detail = f"key {ws.fingerprint} for {DOMAIN}" if ok else trusted.last_line()
    if not report.add("jetpack serve trusts the run's key", ok, detail):
        return
    with ws.serving():
        images = None  # the ACE images are also what the actool checks validate
        binary = ace.build_validator(report)
        if binary is not None:
            images = ace.build_images(ws, report, binary)
        if args.runtime is not None:
            if images is not None:
                ace.run_other(ws, report, images, args.runtime)
            return
        if args.only != "actool" and images is not None:
            for backend in args.backend or ace.BACKENDS:
                with _pool_for(backend, ws, report) as pool:
                    if backend != "zfs" or pool is not None:
                        ace.run_jetpack(ws, report, backend, pool, args.net or ace.NETS)
        if args.only != "ace":
            from conformance import interop

            interop.run_all(ws, report, images)


@contextlib.contextmanager
def _pool_for(backend: str, ws: Workspace, report: Report) -> Iterator[str | None]:
    """A ZFS pool (zfs-fuse on a file) for the zfs backend; None for the others or when
    ZFS cannot be had here (a skip when it is not installable, a failure when it breaks)."""
    if backend != "zfs":
        yield None
        return
    from tests.store.zfs_fixture import zfs_pool_on_file, zfs_unavailable

    check = "zfs: a pool on zfs-fuse"
    reason = zfs_unavailable()
    if reason:
        report.skip(check, reason)
        yield None
        return
    (ws.root / "zfs").mkdir(exist_ok=True)
    with contextlib.ExitStack() as stack:
        try:
            pool = stack.enter_context(zfs_pool_on_file(ws.root / "zfs"))
        except Exception as err:  # zfs-fuse that does not start, zpool create failing
            report.add(check, False, str(err))
            yield None
            return
        report.add(check, True, f"pool {pool} on a sparse file")
        yield pool


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
