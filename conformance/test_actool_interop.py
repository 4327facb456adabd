"""Interop with the reference appc tool, actool (Debian package appc-spec)."""

from __future__ import annotations

import subprocess
import tarfile
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

from conformance.interop import actool_verdict
from jetpack.cli.main import run

pytestmark = pytest.mark.actool

CORPUS = Path(__file__).parent / "corpus"
VALID = sorted((CORPUS / "agree-valid").glob("*.json"))
INVALID = sorted((CORPUS / "agree-invalid").glob("*.json"))
DIFFER = tomllib.loads((CORPUS / "differ" / "index.toml").read_text())["case"]


def actool_accepts(actool: str, path: Path) -> bool:
    return actool_verdict(actool, path) == "valid"


def jetpack_accepts(path: Path, kind: str = "auto") -> bool:
    return run(["aci", "validate", f"--type={kind}", str(path)]) == 0


def test_corpus_is_complete() -> None:
    listed = {case["file"] for case in DIFFER}
    on_disk = {p.name for p in (CORPUS / "differ").glob("*.json")}
    assert listed == on_disk
    assert len(VALID) >= 10 and len(INVALID) >= 20


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.stem)
def test_both_accept(actool: str, path: Path) -> None:
    assert actool_accepts(actool, path)
    assert jetpack_accepts(path)


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_both_reject(actool: str, path: Path) -> None:
    assert actool_verdict(actool, path) == "invalid"  # a rejection, not a panic
    assert not jetpack_accepts(path)


@pytest.mark.parametrize("case", DIFFER, ids=lambda c: c["file"].removesuffix(".json"))
def test_documented_differences(actool: str, case: dict[str, str]) -> None:
    path = CORPUS / "differ" / case["file"]
    ours = case["jetpack"] == "valid"
    assert jetpack_accepts(path) is ours, case["why"]
    theirs = case.get("actool", "invalid" if ours else "valid")
    assert actool_verdict(actool, path) == theirs, f"actool no longer differs: {case['why']}"


@pytest.mark.parametrize("compression", ["gzip", "bzip2", "xz", "none"])
def test_actool_validates_what_we_build(
    actool: str, hello_layout: Path, tmp_path: Path, compression: str
) -> None:
    out = tmp_path / f"hello-{compression}.aci"
    assert run(["aci", "build", f"--compression={compression}", str(hello_layout), str(out)]) == 0
    proc = subprocess.run([actool, "--debug", "validate", str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "valid" in proc.stderr + proc.stdout


def test_actool_validates_owner_root_build(actool: str, hello_layout: Path, tmp_path: Path) -> None:
    out = tmp_path / "hello.aci"
    assert run(["aci", "build", "--owner-root", str(hello_layout), str(out)]) == 0
    assert actool_accepts(actool, out)


@pytest.mark.parametrize("owner_root", [False, True])
def test_id_of_actool_builds(
    actool: str,
    hello_layout: Path,
    tmp_path: Path,
    owner_root: bool,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "by-actool.aci"
    argv = [actool, "build", *(["--owner-root"] if owner_root else []), str(hello_layout), str(out)]
    subprocess.run(argv, check=True, capture_output=True)
    floor = subprocess.run(
        f"gunzip -c {out} | sha512sum", shell=True, check=True, capture_output=True, text=True
    ).stdout.split()[0]
    assert run(["aci", "id", str(out)]) == 0
    assert capsys.readouterr().out.strip() == f"sha512-{floor}"
    # and reading it in full (layout, manifest) gives the same ID
    assert run(["aci", "validate", str(out)]) == 0
    assert f"sha512-{floor[:12]}" in capsys.readouterr().out


def test_patched_images_pass_actool(actool: str, hello_layout: Path, tmp_path: Path) -> None:
    src, dst = tmp_path / "in.aci", tmp_path / "out.aci"
    subprocess.run([actool, "build", str(hello_layout), str(src)], check=True)
    assert (
        run(
            [
                "aci",
                "patch-manifest",
                "--name",
                "example.com/patched",
                "--user",
                "0",
                "--group",
                "0",
                "--ports",
                "www,protocol=tcp,port=80",
                str(src),
                str(dst),
            ]
        )
        == 0
    )
    assert actool_accepts(actool, dst)
    cat = subprocess.run(
        [actool, "cat-manifest", str(dst)], check=True, capture_output=True, text=True
    )
    assert '"example.com/patched"' in cat.stdout

    # every entry but the manifest is carried over unchanged
    def entries(path: Path) -> dict[str, tuple[int, int, str, bytes]]:
        with tarfile.open(path) as tar:
            return {
                m.name: (
                    m.mode,
                    m.size,
                    m.linkname,
                    tar.extractfile(m).read() if m.isfile() else b"",
                )  # type: ignore[union-attr]
                for m in tar.getmembers()
                if m.name != "manifest"
            }

    assert entries(dst) == entries(src)


def test_actool_built_layout_round_trips(
    actool: str, make_layout: Callable[..., Path], tmp_path: Path
) -> None:
    layout = make_layout()
    ours, theirs = tmp_path / "ours.aci", tmp_path / "theirs.aci"
    subprocess.run([actool, "build", "--owner-root", str(layout), str(theirs)], check=True)
    assert run(["aci", "build", "--owner-root", str(layout), str(ours)]) == 0
    assert actool_accepts(actool, ours)
    assert jetpack_accepts(theirs)
