"""`jetpack aci ...` end to end, in process (run) and through the installed script."""

from __future__ import annotations

import gzip
import hashlib
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from jetpack.cli.main import run
from tests.fixtures import MINIMAL_MANIFEST

Capsys = pytest.CaptureFixture[str]


def _id_of(aci: Path) -> str:
    return "sha512-" + hashlib.sha512(gzip.decompress(aci.read_bytes())).hexdigest()


def _build(layout: Path, out: Path, *extra: str) -> str:
    proc_code = run(["aci", "build", *extra, str(layout), str(out)])
    assert proc_code == 0
    return out.name


def test_build_validate_id_cat(
    make_layout: Callable[..., Path], tmp_path: Path, capsys: Capsys
) -> None:
    out = tmp_path / "min.aci"
    assert run(["aci", "build", str(make_layout()), str(out)]) == 0
    printed_id = capsys.readouterr().out.strip()
    assert printed_id == _id_of(out)

    assert run(["aci", "id", str(out)]) == 0
    assert capsys.readouterr().out == printed_id + "\n"

    assert run(["aci", "validate", str(out)]) == 0
    assert (
        capsys.readouterr().out
        == f"{out}: valid ACI {printed_id[:19]} (example.com/minimal:1.0.0)\n"
    )

    assert run(["aci", "cat-manifest", str(out)]) == 0
    assert json.loads(capsys.readouterr().out) == MINIMAL_MANIFEST

    assert run(["aci", "cat-manifest", "--pretty-print", str(out)]) == 0
    pretty = capsys.readouterr().out
    assert json.loads(pretty)["name"] == "example.com/minimal"
    assert '\n    "acVersion"' in pretty


def test_id_of_several_files(
    make_layout: Callable[..., Path], tmp_path: Path, capsys: Capsys
) -> None:
    a, b = tmp_path / "a.aci", tmp_path / "b.aci"
    run(["aci", "build", str(make_layout()), str(a)])
    run(["aci", "build", "--compression=none", str(make_layout()), str(b)])
    capsys.readouterr()
    assert run(["aci", "id", str(a), str(b)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        f"{_id_of(a)}  {a}",
        f"sha512-{hashlib.sha512(b.read_bytes()).hexdigest()}  {b}",
    ]


def test_build_refuses_to_overwrite(
    make_layout: Callable[..., Path], tmp_path: Path, capsys: Capsys
) -> None:
    out = tmp_path / "x.aci"
    out.write_bytes(b"precious")
    assert run(["aci", "build", str(make_layout()), str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("jetpack: ") and "--overwrite" in err
    assert out.read_bytes() == b"precious"
    assert run(["aci", "build", "--overwrite", str(make_layout()), str(out)]) == 0
    assert out.read_bytes()[:2] == b"\x1f\x8b"


def test_build_rejects_invalid_manifest(
    make_layout: Callable[..., Path], tmp_path: Path, capsys: Capsys
) -> None:
    bad: dict[str, Any] = {**MINIMAL_MANIFEST, "name": "Not/A/Name"}
    out = tmp_path / "bad.aci"
    assert run(["aci", "build", str(make_layout(bad)), str(out)]) == 1
    err = capsys.readouterr().err
    assert "name" in err and "Not/A/Name" in err
    assert not out.exists()
    assert list(tmp_path.glob("*.aci*")) == []


def test_validate_detects_each_kind(
    make_layout: Callable[..., Path], tmp_path: Path, capsys: Capsys
) -> None:
    layout = make_layout()
    aci = tmp_path / "ok.aci"
    run(["aci", "build", str(layout), str(aci)])
    pod = tmp_path / "pod.json"
    pod.write_text(json.dumps({"acKind": "PodManifest", "acVersion": "0.8.11", "apps": []}))
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(
            {
                **MINIMAL_MANIFEST,
                "app": {
                    **MINIMAL_MANIFEST["app"],
                    "environment": [{"name": "OK", "value": "1"}, {"name": "0DEBUG", "value": "1"}],
                },
            }
        )
    )
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"PK\x03\x04" + b"\0" * 600)
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    capsys.readouterr()

    files = [aci, layout, layout / "manifest", pod, bad, junk, empty, tmp_path / "absent"]
    assert run(["aci", "validate", *map(str, files)]) == 1
    captured = capsys.readouterr()
    out = captured.out.splitlines()
    assert out[0].startswith(f"{aci}: valid ACI sha512-")
    assert out[1] == f"{layout}: valid image layout (example.com/minimal:1.0.0)"
    assert out[2] == f"{layout / 'manifest'}: valid image manifest (example.com/minimal:1.0.0)"
    assert out[3] == f"{pod}: valid pod manifest (0 apps)"
    assert len(out) == 4
    err = captured.err.splitlines()
    assert len(err) == 4
    assert all(line.startswith("jetpack: ") for line in err)
    assert "app.environment[1].name" in err[0] and "0DEBUG" in err[0]
    assert str(junk) in err[1] and "zip" in err[1]
    assert str(empty) in err[2] and "empty" in err[2]
    assert str(tmp_path / "absent") in err[3] and "No such file" in err[3]


def test_validate_forced_type(make_layout: Callable[..., Path], capsys: Capsys) -> None:
    manifest = make_layout() / "manifest"
    assert run(["aci", "validate", "--type=aci", str(manifest)]) == 1
    assert "jetpack: " in capsys.readouterr().err
    assert run(["aci", "validate", "--type=manifest", str(manifest)]) == 0


def test_patch_manifest(make_layout: Callable[..., Path], tmp_path: Path, capsys: Capsys) -> None:
    src = tmp_path / "in.aci"
    dst = tmp_path / "out.aci"
    run(["aci", "build", str(make_layout()), str(src)])
    capsys.readouterr()
    assert (
        run(
            [
                "aci",
                "patch-manifest",
                "--name",
                "example.com/patched",
                "--exec",
                "/bin/true --flag 'two words'",
                "--user",
                "1000",
                "--group",
                "1000",
                "--supplementary-groups",
                "10,20",
                "--mounts",
                "data,path=/data,readOnly=true",
                "--ports",
                "www,protocol=tcp,port=8080",
                "--capability",
                "CAP_NET_BIND_SERVICE",
                str(src),
                str(dst),
            ]
        )
        == 0
    )
    new_id = capsys.readouterr().out.strip()
    assert new_id == _id_of(dst)
    assert run(["aci", "cat-manifest", str(dst)]) == 0
    manifest = json.loads(capsys.readouterr().out)
    app = manifest["app"]
    assert manifest["name"] == "example.com/patched"
    assert app["exec"] == ["/bin/true", "--flag", "two words"]
    assert (app["user"], app["group"], app["supplementaryGIDs"]) == ("1000", "1000", [10, 20])
    assert app["mountPoints"] == [{"name": "data", "path": "/data", "readOnly": True}]
    assert app["ports"][0]["port"] == 8080
    assert {
        "name": "os/linux/capabilities-retain-set",
        "value": {"set": ["CAP_NET_BIND_SERVICE"]},
    } in app["isolators"]


def test_patch_manifest_replace_and_whole_manifest(
    make_layout: Callable[..., Path], tmp_path: Path, capsys: Capsys
) -> None:
    src = tmp_path / "in.aci"
    run(["aci", "build", str(make_layout()), str(src)])
    replacement = tmp_path / "m.json"
    replacement.write_text(json.dumps({**MINIMAL_MANIFEST, "name": "example.com/replaced"}))
    capsys.readouterr()
    assert (
        run(["aci", "patch-manifest", "--replace", "--manifest", str(replacement), str(src)]) == 0
    )
    assert capsys.readouterr().out.strip() == _id_of(src)
    run(["aci", "cat-manifest", str(src)])
    assert json.loads(capsys.readouterr().out)["name"] == "example.com/replaced"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["IN", "OUT"], "nothing to patch"),
        (["--name", "example.com/x", "IN"], "give either OUTPUT or --replace"),
        (["--replace", "--name", "example.com/x", "IN", "OUT"], "give either OUTPUT or --replace"),
        (["--manifest", "M", "--name", "example.com/x", "IN", "OUT"], "give no other patch option"),
        (["--seccomp-mode", "retain", "IN", "OUT"], "go together"),
    ],
)
def test_patch_manifest_usage(
    make_layout: Callable[..., Path], tmp_path: Path, capsys: Capsys, args: list[str], message: str
) -> None:
    src = tmp_path / "in.aci"
    run(["aci", "build", str(make_layout()), str(src)])
    (tmp_path / "m.json").write_text(json.dumps(MINIMAL_MANIFEST))
    before = src.read_bytes()
    capsys.readouterr()
    subst = {"IN": str(src), "OUT": str(tmp_path / "out.aci"), "M": str(tmp_path / "m.json")}
    assert run(["aci", "patch-manifest", *(subst.get(a, a) for a in args)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("jetpack: ") and message in err
    assert src.read_bytes() == before
    assert not (tmp_path / "out.aci").exists()


def test_patch_manifest_invalid_value_is_exit_1(
    make_layout: Callable[..., Path], tmp_path: Path, capsys: Capsys
) -> None:
    src = tmp_path / "in.aci"
    run(["aci", "build", str(make_layout()), str(src)])
    capsys.readouterr()
    assert (
        run(["aci", "patch-manifest", "--name", "BAD NAME", str(src), str(tmp_path / "o.aci")]) == 1
    )
    assert "BAD NAME" in capsys.readouterr().err
    assert not (tmp_path / "o.aci").exists()


def test_the_installed_script_builds_the_example_image(
    hello_layout: Path, tmp_path: Path, jetpack_cmd: list[str]
) -> None:
    out = tmp_path / "hello.aci"
    proc = subprocess.run(
        [*jetpack_cmd, "aci", "build", str(hello_layout), str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert proc.stdout.strip() == _id_of(out)
    check = subprocess.run(
        [*jetpack_cmd, "aci", "validate", str(out)], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stderr
    assert "(example.com/hello:1.0.0)" in check.stdout
