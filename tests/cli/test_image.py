"""`jetpack fetch` (local files), `jetpack image ...`, `jetpack init` and `jetpack info`."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from jetpack.cli.main import run
from tests.fixtures import image_manifest

Capsys = pytest.CaptureFixture[str]
MakeACI = Callable[..., Path]


@pytest.fixture
def jp(tmp_path: Path) -> Callable[..., int]:
    """``run`` with a private data directory and the copy backend."""
    conf = tmp_path / "jetpack.toml"
    conf.write_text('[storage]\nbackend = "copy"\n')

    def call(*argv: str) -> int:
        return run(["--dir", str(tmp_path / "data"), "--config", str(conf), *argv])

    return call


def _fetch(jp: Callable[..., int], capsys: Capsys, aci: Path) -> str:
    assert jp("fetch", "--insecure-options=image", str(aci)) == 0
    return capsys.readouterr().out.strip()


def test_fetch_of_an_unsigned_file_needs_insecure_image(
    jp: Callable[..., int], make_aci: MakeACI, capsys: Capsys
) -> None:
    aci = make_aci(image_manifest("example.com/a"))
    assert jp("fetch", str(aci)) == 1
    err = capsys.readouterr().err
    assert err == (
        f"jetpack: cannot fetch {aci}: no signature: {aci}.asc does not exist "
        "(give one with --signature, or --insecure-options=image to skip the check)\n"
    )
    assert jp("image", "list", "--no-legend") == 0
    assert capsys.readouterr().out == ""


def test_fetch_file_url_and_bad_refs(
    jp: Callable[..., int], make_aci: MakeACI, capsys: Capsys, tmp_path: Path
) -> None:
    aci = make_aci(image_manifest("example.com/a"))
    assert jp("fetch", "--insecure-options=image", aci.as_uri()) == 0
    captured = capsys.readouterr()
    assert captured.out.strip().startswith("sha512-")
    assert "warning: signatures are not checked" in captured.err
    assert jp("fetch", "--insecure-options=image", str(tmp_path / "missing.aci")) == 1
    assert "No such file or directory" in capsys.readouterr().err
    # a name: discovery on a port where nothing listens fails fast, in one line
    assert jp("fetch", "--discovery-port=1", "localhost/a:1.0") == 1
    err = capsys.readouterr().err
    assert err.startswith("jetpack: cannot discover localhost/a:1.0") and err.count("\n") == 1
    assert jp("fetch", "--insecure-options=bogus", str(aci)) == 2
    assert "unknown bogus" in capsys.readouterr().err
    junk = tmp_path / "junk.aci"
    junk.write_bytes(b"junk" * 200)
    assert jp("fetch", "--insecure-options=image", str(junk)) == 1
    warning, error = capsys.readouterr().err.splitlines()
    assert warning.startswith("jetpack: warning: ")
    assert error.startswith(f"jetpack: {junk}: not an image archive")


def test_image_list_show_export_rm(
    jp: Callable[..., int], make_aci: MakeACI, capsys: Capsys, tmp_path: Path, actool: str
) -> None:
    aci = make_aci(image_manifest("example.com/app", version="2.1.0"), {"bin/app": b"x"})
    ident = _fetch(jp, capsys, aci)

    assert jp("image", "list") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "ID",
        "NAME",
        "VERSION",
        "OS/ARCH",
        "SIZE",
        "IMPORTED",
        "LAST",
        "USED",
    ]
    assert lines[1].startswith(f"{ident[:19]}  example.com/app  2.1.0")
    assert "just now" in lines[1]

    assert jp("image", "list", "--full", "--no-legend") == 0
    assert capsys.readouterr().out.startswith(ident + "  ")

    assert jp("image", "list", "--format=json") == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert (row["id"], row["name"], row["version"]) == (ident, "example.com/app", "2.1.0")

    for ref in (ident, ident[:12], "example.com/app", "example.com/app:2.1.0"):
        assert jp("image", "show", ref) == 0
        assert json.loads(capsys.readouterr().out)["name"] == "example.com/app"
    assert jp("image", "cat-manifest", "--pretty-print", "example.com/app") == 0
    assert '\n    "name": "example.com/app"' in capsys.readouterr().out

    out = tmp_path / "exported.aci"
    assert jp("image", "export", "example.com/app", str(out)) == 0
    assert capsys.readouterr().out.strip() == ident
    assert out.read_bytes() == aci.read_bytes()
    subprocess.run([actool, "validate", str(out)], check=True)
    assert jp("aci", "id", str(out)) == 0
    assert capsys.readouterr().out.strip() == ident
    assert jp("image", "export", "example.com/app", str(out)) == 1
    assert "add --overwrite" in capsys.readouterr().err

    assert jp("image", "rm", ident, "example.com/nope") == 1
    captured = capsys.readouterr()
    assert captured.out == f"removed {ident}\n"
    assert "no image example.com/nope in the store" in captured.err
    assert jp("image", "show", ident) == 1
    assert "no stored image has this ID" in capsys.readouterr().err


def test_image_extract_and_render(
    jp: Callable[..., int], make_aci: MakeACI, capsys: Capsys, tmp_path: Path
) -> None:
    _fetch(jp, capsys, make_aci(image_manifest("example.com/base"), {"etc/base": b"b"}))
    top = image_manifest("example.com/top", dependencies=[{"imageName": "example.com/base"}])
    _fetch(jp, capsys, make_aci(top, {"etc/top": b"t"}))

    out = tmp_path / "extracted"
    assert jp("image", "extract", "example.com/top", str(out)) == 0
    capsys.readouterr()
    assert sorted(p.name for p in (out / "rootfs" / "etc").iterdir()) == ["top"]
    assert json.loads((out / "manifest").read_text())["name"] == "example.com/top"

    assert jp("image", "render", "example.com/top", str(out)) == 1
    assert "add --overwrite" in capsys.readouterr().err
    assert jp("image", "render", "--overwrite", "--rootfs-only", "example.com/top", str(out)) == 0
    assert sorted(p.name for p in (out / "etc").iterdir()) == ["base", "top"]


def test_image_verify_and_gc(
    jp: Callable[..., int], make_aci: MakeACI, capsys: Capsys, tmp_path: Path
) -> None:
    ident = _fetch(jp, capsys, make_aci(image_manifest("example.com/a"), {"f": b"f"}))
    assert jp("image", "render", "example.com/a", str(tmp_path / "r")) == 0
    assert jp("image", "verify") == 0
    assert capsys.readouterr().out.endswith("verified 1 image: no damage found\n")
    blob = next((tmp_path / "data" / "blobs" / "sha512").glob("*/*"))
    blob.write_bytes(blob.read_bytes()[:-20])
    assert jp("image", "verify", "example.com/a") == 1
    assert f"jetpack: {ident[:19]}: blob" in capsys.readouterr().err

    assert jp("image", "gc", "--grace-period=24h") == 0
    out = capsys.readouterr().out
    assert "removed tree deps-" in out and "0 images and 1 trees removed" in out
    assert jp("image", "gc", "--grace-period=0s") == 0
    assert f"removed image {ident}" in capsys.readouterr().out
    assert jp("image", "gc", "--grace-period=soon") == 2
    assert "'soon' is not a duration" in capsys.readouterr().err


def test_init_and_info(jp: Callable[..., int], capsys: Capsys, tmp_path: Path) -> None:
    assert jp("init") == 0
    assert jp("init") == 0
    assert capsys.readouterr().out.count("(backend copy)") == 2
    assert (tmp_path / "data" / "store.db").exists()
    assert jp("info", "--format=json") == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["backend"] == "copy" and facts["images"] == 0
    assert facts["data-dir"] == str(tmp_path / "data")
    assert facts["metadata"] is None  # nothing started the metadata service
    assert jp("info") == 0
    out = capsys.readouterr().out
    assert "backend:      copy" in out
    assert "metadata:     not running" in out


def test_rm_of_two_names_of_one_image_removes_it_once(
    jp: Callable[..., int], make_aci: MakeACI, capsys: Capsys
) -> None:
    ident = _fetch(jp, capsys, make_aci(image_manifest("example.com/a")))
    assert jp("image", "rm", "example.com/a", ident[:19], "example.com/a:1.0.0") == 0
    assert capsys.readouterr().out == f"removed {ident}\n"


def test_extract_into_a_missing_directory_is_one_line(
    jp: Callable[..., int], make_aci: MakeACI, capsys: Capsys, tmp_path: Path
) -> None:
    _fetch(jp, capsys, make_aci(image_manifest("example.com/a")))
    for verb in ("extract", "render"):
        assert jp("image", verb, "example.com/a", str(tmp_path / "no" / "dir")) == 1
        assert capsys.readouterr().err == (
            f"jetpack: cannot write {tmp_path / 'no' / 'dir'}: its parent directory does not"
            " exist\n"
        )
    assert not (tmp_path / "no").exists()


def test_image_commands_do_not_create_a_store(
    jp: Callable[..., int], capsys: Capsys, tmp_path: Path
) -> None:
    for argv in (("image", "list"), ("image", "verify"), ("image", "gc")):
        assert jp(*argv) == 1
        assert capsys.readouterr().err == (
            f"jetpack: no store at {tmp_path / 'data'} (run jetpack init, or fetch an image)\n"
        )
    assert not (tmp_path / "data").exists()
