"""The command line's contract: exit codes, one-line errors, tracebacks only with --debug."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from jetpack import __version__
from jetpack.cli.main import run


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["version"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"jetpack {__version__}"
    assert out[1] == "appc spec 0.8.11"
    assert run(["--version"]) == 0
    assert capsys.readouterr().out == f"jetpack {__version__}\n"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["bogus"], "No such command 'bogus'. (see 'jetpack --help')"),
        (["aci", "build"], "Missing argument 'LAYOUT'. (see 'jetpack aci build --help')"),
        (["aci", "build", "--compression=zip", "a", "b"], "'zip' is not one of"),
        (["--no-such-flag", "version"], "No such option"),
    ],
)
def test_usage_errors_exit_2_with_one_line(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert run(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("jetpack: ")
    assert message in err
    assert err.count("\n") == 1


def test_group_without_subcommand_shows_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["aci"]) == 2
    assert "patch-manifest" in capsys.readouterr().err


def test_failed_operation_exits_1_without_traceback(tmp_path: Path, jetpack_cmd: list[str]) -> None:
    missing = tmp_path / "missing.aci"
    proc = subprocess.run([*jetpack_cmd, "aci", "id", str(missing)], capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr == f"jetpack: cannot read {missing}: No such file or directory\n"
    assert proc.stdout == ""


def test_debug_shows_the_traceback(tmp_path: Path, jetpack_cmd: list[str]) -> None:
    missing = tmp_path / "missing.aci"
    proc = subprocess.run(
        [*jetpack_cmd, "--debug", "aci", "id", str(missing)], capture_output=True, text=True
    )
    assert proc.returncode == 1
    assert "Traceback (most recent call last)" in proc.stderr
    assert proc.stderr.rstrip().endswith(
        f"jetpack: cannot read {missing}: No such file or directory"
    )


def test_bad_config_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = tmp_path / "jetpack.toml"
    conf.write_text("[aci]\nmax-ratio = 'x'\n")
    aci = tmp_path / "x.aci"
    aci.write_bytes(b"\x1f\x8b")
    assert run(["--config", str(conf), "aci", "validate", str(aci)]) == 1
    err = capsys.readouterr().err
    assert "aci.max-ratio: 'x' is not a number" in err
    assert err.count("\n") == 1


def test_a_broken_config_fails_every_command_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.toml"
    for argv in (["version"], ["aci", "id", "x.aci"], ["aci", "validate", "a.aci", "b.aci"]):
        assert run(["--config", str(missing), *argv]) == 1
        err = capsys.readouterr().err
        why = "no such file (create it or drop --config)"
        assert err == f"jetpack: cannot read configuration {missing}: {why}\n"


def test_cheap_startup_imports_nothing_heavy() -> None:
    # `jetpack run`/`list` must start fast: the CLI module may not pull in the archive or
    # schema code, nor any network or crypto library, until a command needs them.
    code = (
        "import sys, jetpack.cli.main as m; "
        "heavy = [n for n in ('jetpack.aci', 'jetpack.schema', 'aiohttp', 'lxml', 'gnupg', 'isal')"
        " if n in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_pod_start_path_imports_nothing_it_does_not_use(tmp_path: Path) -> None:
    # `jetpack run IMAGE` (image stored, tree rendered) must start in well under 100 ms: the
    # modules it imports, and opening the store, may not pull in the archive code (tar
    # codec, builder, extractor, compressors), tree rendering, the other storage backends,
    # subprocess, sockets, logging or the thread pool, nor (resolving a name) meta
    # discovery. Those load where a command needs them.
    modules = (
        "jetpack.cli.pod",
        "jetpack.runtime.handoff",
        "jetpack.runtime.plan",
        "jetpack.runtime.stage0",
        "jetpack.store",
        "jetpack.store.backends",
        "jetpack.store.backends.overlay",
        "jetpack.discovery.appstring",
    )
    unused = (
        "jetpack.aci.options",
        "jetpack.aci.tarformat",
        "jetpack.aci.build",
        "jetpack.aci.extract",
        "jetpack.aci.compression",
        "jetpack.store.render",
        "jetpack.store.zfs",
        "jetpack.mountinfo",
        "jetpack.discovery.meta",
        "concurrent.futures",
        "subprocess",
        "socket",
        "shutil",
        "logging",
        "fractions",
        "base64",
        "tomllib",
        "aiohttp",
        "lxml",
        "gnupg",
        "isal",
    )
    code = (
        f"import sys, pathlib; import {', '.join(modules)}; "
        "from jetpack.config import Config, StorageConfig; "
        f"config = Config(data_dir=pathlib.Path({str(tmp_path / 'data')!r}), "
        "storage=StorageConfig(backend='copy')); "
        "jetpack.store.open_store(config).close(); "
        f"print([n for n in {unused!r} if n in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
