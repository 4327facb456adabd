"""``conformance/run`` itself: how ``ace.judge`` reads the ACE validator's output, the
report's table and JSON, the command line's argument errors, and whole runs through the
real runner with another executor (Jetpack itself, given as ``--runtime``).

The validator prints ``<mode> OK`` or ``<mode> FAIL`` on stdout and its reasons as
``==> <reason>`` on stderr; Jetpack prefixes each line with ``[<app name>]``. The outputs
below are what ``jetpack run`` prints for the two images (seen in real runs).
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conformance.ace import judge
from conformance.harness import REPO, Ran, Report, Result
from tests.fixtures import processes_mentioning

RUN = REPO / "conformance" / "run"
RUN_TIMEOUT = 900.0  # the first run builds the validator with Go (cached afterwards)

WARNINGS = (
    "jetpack: warning: signatures are not checked (--insecure-options=image)\n"
    "jetpack: warning: isolators not enforced: app ace-validator-main: resource/memory\n"
)
ALL_OK = (
    "[ace-validator-main] prestart OK\n"
    "[ace-validator-sidekick] sidekick OK\n"
    "[ace-validator-main] main OK\n"
    "[ace-validator-main] poststop OK\n"
)


def ran(stdout: str, stderr: str = WARNINGS, returncode: int = 0, seconds: float = 2.5) -> Ran:
    """A finished ``--runtime`` command with this output."""
    return Ran(["sh", "-c", "executor"], returncode, stdout, stderr, seconds)


# -- judge: the verdict on one run of the validator's pod -----------------------------------


def test_judge_passes_four_oks_and_exit_0() -> None:
    """All four modes said OK and the pod exited 0: a pass, whose detail lists the modes
    and the time taken."""
    ok, detail = judge(ran(ALL_OK))
    assert ok, detail
    assert detail == "prestart OK, main OK, sidekick OK, poststop OK; exit 0 in 2.5 s"


def test_judge_reads_the_modes_as_the_validator_spells_them() -> None:
    """The validator echoes its argument, and its usage spells two modes ``preStart`` and
    ``postStop``: an executor whose handlers pass those still passes."""
    stdout = ALL_OK.replace("prestart OK", "preStart OK").replace("poststop OK", "postStop OK")
    ok, detail = judge(ran(stdout))
    assert ok, detail


def test_judge_main_without_its_sidekick() -> None:
    """What ``jetpack run`` of the main app alone prints: main times out waiting for the
    sidekick's file. The detail names the failed mode, the silent one, and the reason."""
    stdout = (
        "[ace-validator-main] prestart OK\n"
        "[ace-validator-main] main FAIL\n"
        "[ace-validator-main] poststop OK\n"
    )
    stderr = WARNINGS + "[ace-validator-main] ==> timed out waiting for /db/sidekick\n"
    ok, detail = judge(ran(stdout, stderr, returncode=1))
    assert not ok
    assert detail.splitlines() == [
        "exit status 1; FAIL: main; no verdict from: sidekick",
        "==> timed out waiting for /db/sidekick",
    ]


def test_judge_fails_missing_modes_even_on_exit_0() -> None:
    """An executor that never ran the sidekick nor the post-stop handler fails, though it
    exited 0 and nothing said FAIL."""
    stdout = "[ace-validator-main] prestart OK\n[ace-validator-main] main OK\n"
    ok, detail = judge(ran(stdout))
    assert not ok
    first = detail.splitlines()[0]
    assert first == "exit status 0; no verdict from: sidekick, poststop"
    assert "FAIL:" not in detail


def test_judge_fails_a_non_zero_exit_with_all_ok() -> None:
    """Every mode said OK but the pod's status is not 0: a failure, and the executor's last
    line of stderr says why."""
    stderr = WARNINGS + "jetpack: pod 0e5c1a2b: killed by SIGKILL\n"
    ok, detail = judge(ran(ALL_OK, stderr, returncode=137))
    assert not ok
    lines = detail.splitlines()
    assert lines[0] == "exit status 137"
    assert lines[1:] == ["jetpack: pod 0e5c1a2b: killed by SIGKILL"]


def test_judge_fails_exit_0_with_a_fail_line() -> None:
    """An executor that loses the apps' statuses (exits 0) still fails on the validator's
    own FAIL, with its reason."""
    stdout = ALL_OK.replace("sidekick OK", "sidekick FAIL")
    stderr = WARNINGS + "[ace-validator-sidekick] ==> timed out waiting for /db/main\n"
    ok, detail = judge(ran(stdout, stderr, returncode=0))
    assert not ok
    assert detail.splitlines() == [
        "exit status 0; FAIL: sidekick",
        "==> timed out waiting for /db/main",
    ]


@pytest.mark.parametrize("order", ["ok-then-fail", "fail-then-ok"])
def test_judge_a_fail_is_not_undone_by_an_ok(order: str) -> None:
    """A mode run twice (an executor that restarts an app) fails if either run failed."""
    verdicts = ["main OK", "main FAIL"] if order == "ok-then-fail" else ["main FAIL", "main OK"]
    stdout = ALL_OK.replace("main OK", "\n[ace-validator-main] ".join(verdicts))
    ok, detail = judge(ran(stdout))
    assert not ok
    assert "FAIL: main" in detail


def test_judge_fails_on_a_reason_alone() -> None:
    """A ``==>`` reason on stderr fails the run even when every mode said OK and the pod
    exited 0; each reason is on a line of its own, in order."""
    stderr = (
        WARNINGS
        + "[ace-validator-main] ==> path is not as expected: /bin\n"
        + "[ace-validator-main] ==> environment variable IN_ACE_VALIDATOR not set\n"
    )
    ok, detail = judge(ran(ALL_OK, stderr))
    assert not ok
    assert detail.splitlines()[1:] == [
        "==> path is not as expected: /bin",
        "==> environment variable IN_ACE_VALIDATOR not set",
    ]


def test_judge_no_output_at_all() -> None:
    """An executor that ran nothing: its status, every mode missing, and "no output"."""
    ok, detail = judge(ran("", "", returncode=3))
    assert not ok
    assert detail.splitlines() == [
        "exit status 3; no verdict from: prestart, main, sidekick, poststop",
        "exit status 3, no output",
    ]


@pytest.mark.parametrize(
    "line",
    ["[ace-validator-main] domain OK", "[ace-validator-main] main OKAY", "remain OK"],
)
def test_judge_a_mode_inside_a_word_is_no_verdict(line: str) -> None:
    """Only a whole ``main OK`` is main's verdict, not one inside another word."""
    stdout = ALL_OK.replace("[ace-validator-main] main OK", line)
    ok, detail = judge(ran(stdout))
    assert not ok
    assert "no verdict from: main" in detail


# -- the report -----------------------------------------------------------------------------


def parse_table(table: str) -> list[tuple[str, str, list[str]]]:
    """(check, result, detail lines) per row of ``Report.table()``, read by the columns of
    its header; continuation lines must be blank up to the detail column."""
    lines = table.splitlines()
    result_at, detail_at = lines[0].index("result"), lines[0].index("detail")
    rows: list[tuple[str, str, list[str]]] = []
    for line in lines[2:]:
        if not line:
            break  # the blank line before the summary
        check = line[:result_at].rstrip()
        if check:
            rows.append((check, line[result_at:detail_at].strip(), [line[detail_at:]]))
        else:
            assert line[:detail_at].strip() == "", f"not under the detail column: {line!r}"
            rows[-1][2].append(line[detail_at:])
    return rows


def sample_report() -> Report:
    report = Report()
    assert report.add("jetpack serve trusts the run's key", True, "Added key 593d9bde")
    assert not report.add(
        "ACE overlay --net=host, by name",
        False,
        "exit status 1; FAIL: main\n==> timed out waiting for /db/sidekick\n==> second reason",
    )
    report.skip("zfs: a pool on zfs-fuse", "zfs-fuse needs /dev/fuse")
    report.add("ACE --runtime rkt run …", True, "")
    return report


def test_table_columns_and_indented_details() -> None:
    """One row per check, the result and detail columns aligned under the header, a
    multi-line detail's other lines indented to the detail column, an empty detail an
    empty cell."""
    report = sample_report()
    table = report.table()
    lines = table.splitlines()
    width = max(len(r.check) for r in report.results)
    assert lines[0].split() == ["check", "result", "detail"]
    assert lines[0].index("result") == width + 2
    assert lines[1] == f"{'-' * width}  ------  ------"
    assert parse_table(table) == [
        ("jetpack serve trusts the run's key", "PASS", ["Added key 593d9bde"]),
        (
            "ACE overlay --net=host, by name",
            "FAIL",
            [
                "exit status 1; FAIL: main",
                "==> timed out waiting for /db/sidekick",
                "==> second reason",
            ],
        ),
        ("zfs: a pool on zfs-fuse", "SKIP", ["zfs-fuse needs /dev/fuse"]),
        ("ACE --runtime rkt run …", "PASS", [""]),
    ]
    assert len(lines) == 2 + 4 + 2 + 2  # header, rows, continuations, blank + summary


def test_table_summary_line() -> None:
    """The table ends with a blank line and the counts of each result."""
    lines = sample_report().table().splitlines()
    assert lines[-2:] == ["", "2 passed, 1 failed, 1 skipped of 4 checks"]
    empty = Report().table().splitlines()
    assert empty[-1] == "0 passed, 0 failed, 0 skipped of 0 checks"
    assert empty[0].split() == ["check", "result", "detail"]


def test_failed_and_skipped() -> None:
    """``failed`` and ``skipped`` hold exactly those results, in order."""
    report = sample_report()
    assert [r.check for r in report.failed] == ["ACE overlay --net=host, by name"]
    assert report.skipped == [Result("zfs: a pool on zfs-fuse", "SKIP", "zfs-fuse needs /dev/fuse")]


def test_as_json_shape() -> None:
    """A JSON list of {check, result, detail}, in the order added, details kept whole
    (newlines, non-ASCII)."""
    report = sample_report()
    parsed = json.loads(report.as_json())
    assert [list(entry) for entry in parsed] == [["check", "result", "detail"]] * 4
    assert parsed[1] == {
        "check": "ACE overlay --net=host, by name",
        "result": "FAIL",
        "detail": "exit status 1; FAIL: main\n==> timed out waiting for /db/sidekick"
        "\n==> second reason",
    }
    assert [entry["result"] for entry in parsed] == ["PASS", "FAIL", "SKIP", "PASS"]
    assert parsed[3]["check"] == "ACE --runtime rkt run …"


def test_details_shortened_for_the_table() -> None:
    """A detail's whole image IDs are cut to the usual 12 hex digits and the scratch
    directory is written ``$WORK``, in the table, the JSON and ``failed``."""
    report = Report(scratch="/tmp/jetpack-conformance-x1y2")
    image_id = "sha512-" + "0123456789abcdef" * 8
    report.add("push", False, f"{image_id} at /tmp/jetpack-conformance-x1y2/images/main.aci")
    expected = "sha512-0123456789ab… at $WORK/images/main.aci"
    assert report.failed[0].detail == expected
    assert parse_table(report.table())[0][2] == [expected]
    assert json.loads(report.as_json())[0]["detail"] == expected


def test_verbose_report_shows_progress_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    """With ``verbose`` each result is one line on stderr as it is recorded (nothing on
    stdout, which is the table's or the JSON's)."""
    report = Report(verbose=True)
    report.add("build ace-validator", True, "cached")
    report.skip("zfs: a pool on zfs-fuse", "no /dev/fuse")
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        "PASS  build ace-validator: cached",
        "SKIP  zfs: a pool on zfs-fuse: no /dev/fuse",
    ]


# -- the command line -----------------------------------------------------------------------


def conformance_run(
    *argv: str, env: dict[str, str] | None = None, timeout: float = RUN_TIMEOUT
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(RUN), *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--runtime", ""], "--runtime needs a command"),
        (["--runtime", "   "], "--runtime needs a command"),
        (["--runtime", "X", "--backend", "copy"], "--runtime runs only the ACE part"),
        (["--runtime", "X", "--net", "none"], "--runtime runs only the ACE part"),
        (["--runtime", "X", "--only", "actool"], "--runtime runs only the ACE part"),
        (["--only", "bogus"], "argument --only: invalid choice: 'bogus'"),
        (["--backend", "nfs"], "argument --backend: invalid choice: 'nfs'"),
    ],
    ids=["empty", "blank", "backend", "net", "only-actool", "only-bogus", "backend-bogus"],
)
def test_argument_errors_exit_2(tmp_path: Path, argv: list[str], message: str) -> None:
    """A bad command line exits 2 before anything is set up: argparse's usage and one
    ``error:`` line naming the problem, no traceback, no scratch directory made."""
    proc = conformance_run(*argv, env={**os.environ, "TMPDIR": str(tmp_path)}, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("usage: conformance/run ")
    errors = [line for line in proc.stderr.splitlines() if "error" in line]
    assert errors == [proc.stderr.splitlines()[-1]]
    assert errors[0].startswith("conformance/run: error: ")
    assert message in errors[0]
    assert list(tmp_path.iterdir()) == []


# -- whole runs: Jetpack as "another executor" ---------------------------------------------


@dataclass(frozen=True)
class OtherExecutor:
    """``jetpack run`` on the signed files, with a data directory and configuration of its
    own (trust stores here, a metadata service on a free port)."""

    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def config(self) -> Path:
        return self.root / "jetpack.toml"

    def write_config(self) -> None:
        (self.root / "vendor").mkdir(parents=True)
        self.config.write_text(
            f"""[metadata]
listen = "127.0.0.1:0"
[trust]
local = "{self.root / "trust"}"
vendor = "{self.root / "vendor"}"
"""
        )

    def head(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "jetpack",
            "--dir",
            str(self.data),
            "--config",
            str(self.config),
        ]

    def command(self, *, sidekick: bool = True) -> str:
        """The ``--runtime`` command: both apps in one pod, or main alone."""
        run = [*self.head(), "run", "--insecure-options=image", "--volume", "database,kind=empty"]
        command = f'{shlex.join(run)} "$ACE_MAIN_ACI"'
        return command + ' --- "$ACE_SIDEKICK_ACI"' if sidekick else command

    def jetpack(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.head(), *argv], capture_output=True, text=True, timeout=120, check=False
        )


@pytest.fixture
def other_executor(tmp_path: Path) -> Iterator[OtherExecutor]:
    """An :class:`OtherExecutor`; afterwards its pods collected and its metadata service
    stopped (anything still running from its data directory is killed by PID, and is an
    error)."""
    executor = OtherExecutor(tmp_path / "other")
    executor.write_config()
    try:
        yield executor
    finally:
        executor.jetpack("gc", "--grace-period=0s", "--expire-prepared=0s")
        executor.jetpack("metadata-service", "--stop")
        left = processes_mentioning(str(executor.data))
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        assert not left, f"still running from {executor.data}: {left}"


def runtime_row(rows: list[tuple[str, str, list[str]]]) -> tuple[str, list[str]]:
    """The result and detail of the one ``ACE --runtime`` row."""
    found = [
        (result, detail) for check, result, detail in rows if check.startswith("ACE --runtime ")
    ]
    assert len(found) == 1, rows
    return found[0]


def json_rows(stdout: str) -> list[tuple[str, str, list[str]]]:
    return [(r["check"], r["result"], r["detail"].splitlines()) for r in json.loads(stdout)]


def set_up_passed(rows: list[tuple[str, str, list[str]]]) -> None:
    """Every check before the ACE's (server, validator, images) passed: a failure of the
    run is the executor's."""
    others = [(check, result) for check, result, _ in rows if not check.startswith("ACE ")]
    assert [check for check, _ in others] == [
        "jetpack serve trusts the run's key",
        "build ace-validator",
        "build image ace-validator-main",
        "push ace-validator-main to jetpack serve",
        "build image ace-validator-sidekick",
        "push ace-validator-sidekick to jetpack serve",
    ]
    assert {result for _, result in others} == {"PASS"}, rows


@pytest.fixture
def tmpdir_env() -> Iterator[tuple[Path, dict[str, str]]]:
    """A TMPDIR of its own for the runner (short: its workspace holds gpg-agent's socket,
    whose path must fit a sockaddr_un) and the environment that sets it; afterwards no
    process may still use it (any is killed by PID, and is an error)."""
    path = Path(tempfile.mkdtemp(prefix="jc-"))
    try:
        yield path, {**os.environ, "TMPDIR": str(path)}
    finally:
        left = processes_mentioning(str(path))
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(path, ignore_errors=True)
        assert not left, f"still running from {path}: {left}"


@pytest.mark.root
def test_runtime_jetpack_passes(
    other_executor: OtherExecutor, tmpdir_env: tuple[Path, dict[str, str]]
) -> None:
    """Jetpack given as ``--runtime`` on the signed files passes the ACE: exit 0, a PASS
    row with every mode OK, the pod really run in the executor's own data directory, and
    the run's scratch directory removed afterwards."""
    tmpdir, env = tmpdir_env
    proc = conformance_run("--runtime", other_executor.command(), "-q", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = parse_table(proc.stdout)
    set_up_passed(rows)
    result, detail = runtime_row(rows)
    assert result == "PASS", detail
    assert detail[0].startswith("prestart OK, main OK, sidekick OK, poststop OK; exit 0 in ")
    assert proc.stdout.splitlines()[-1] == "8 passed, 0 failed, 0 skipped of 8 checks"

    pods = json.loads(other_executor.jetpack("list", "--format", "json").stdout)
    assert len(pods) == 1, pods
    assert pods[0]["state"] == "exited"
    assert list(tmpdir.iterdir()) == []


@pytest.mark.root
def test_runtime_without_the_sidekick_fails(
    other_executor: OtherExecutor, tmpdir_env: tuple[Path, dict[str, str]]
) -> None:
    """A runtime that runs only the main app: exit 1, a FAIL row whose detail carries the
    validator's reason (main waited 5 s for the sidekick's file); nothing left behind."""
    tmpdir, env = tmpdir_env
    command = other_executor.command(sidekick=False)
    proc = conformance_run("--runtime", command, "-q", "--json", env=env)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    rows = json_rows(proc.stdout)
    set_up_passed(rows)
    result, detail = runtime_row(rows)
    assert result == "FAIL"
    assert detail[0] == "exit status 1; FAIL: main; no verdict from: sidekick"
    assert "==> timed out waiting for /db/sidekick" in detail
    assert list(tmpdir.iterdir()) == []


@pytest.mark.root
def test_runtime_that_runs_nothing_fails(tmpdir_env: tuple[Path, dict[str, str]]) -> None:
    """``--runtime 'exit 3'``: exit 1, a FAIL row with the status and no verdict from any
    mode; nothing left behind."""
    tmpdir, env = tmpdir_env
    proc = conformance_run("--runtime", "exit 3", "-q", "--json", env=env)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    rows = json_rows(proc.stdout)
    set_up_passed(rows)
    assert [check for check, _, _ in rows if check.startswith("ACE ")] == [
        "ACE --runtime exit 3",
        "ACE after --runtime: nothing left running",
    ]
    result, detail = runtime_row(rows)
    assert result == "FAIL"
    assert detail == [
        "exit status 3; no verdict from: prestart, main, sidekick, poststop",
        "exit status 3, no output",
    ]
    assert list(tmpdir.iterdir()) == []


@pytest.mark.root
def test_runtime_that_leaves_a_daemon_fails_and_it_is_killed(
    tmpdir_env: tuple[Path, dict[str, str]],
) -> None:
    """An executor that leaves a process in its scratch directory fails the "nothing left
    running" row, which names the PID, and the suite kills it."""
    tmpdir, env = tmpdir_env
    daemon = 'cd "$ACE_WORKDIR" && setsid sleep 300 </dev/null >/dev/null 2>&1 & exit 3'
    proc = conformance_run("--runtime", daemon, "-q", "--json", env=env)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    rows = {check: (result, detail) for check, result, detail in json_rows(proc.stdout)}
    result, detail = rows["ACE after --runtime: nothing left running"]
    assert result == "FAIL"
    (line,) = detail
    assert line.startswith("left running (killed): PIDs ")
    for pid in line.removeprefix("left running (killed): PIDs ").split(", "):
        assert not Path(f"/proc/{pid}").exists() or "sleep" not in Path(
            f"/proc/{pid}/cmdline"
        ).read_text(errors="replace")
    assert list(tmpdir.iterdir()) == []


@pytest.mark.root
def test_the_example_executor_passes(tmpdir_env: tuple[Path, dict[str, str]]) -> None:
    """conformance/runtimes/jetpack, the example the README gives, passes and leaves
    nothing running."""
    _tmpdir, env = tmpdir_env
    script = str(REPO / "conformance" / "runtimes" / "jetpack")
    proc = conformance_run("--runtime", script, "-q", "--json", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = json_rows(proc.stdout)
    result, detail = runtime_row(rows)
    assert result == "PASS", detail
    left = [r for c, r, _ in rows if c == "ACE after --runtime: nothing left running"]
    assert left == ["PASS"]
