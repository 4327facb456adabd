"""Interop with the reference appc tool, ``actool`` (Debian's appc-spec package):

- every ACI Jetpack builds (``jetpack aci build``) or exports (``jetpack image export``)
  passes ``actool validate``;
- an ACI ``actool build`` wrote imports into the store with the ID the spec defines
  (``sha512-`` + the SHA-512 of the uncompressed tar), which ``jetpack aci id`` also gives;
- ``jetpack discover --json`` and ``actool discover --json`` find the same endpoints and
  keys for the names ``jetpack serve`` hosts (actool trusts the test CA by
  ``SSL_CERT_FILE``, so neither needs ``--insecure``; both use the default port 443);
- ``jetpack aci validate`` and ``actool validate`` agree on the manifest corpus of
  ``corpus/``, except the cases ``corpus/differ/index.toml`` lists, each with the rule of
  the spec text Jetpack follows there (and each checked to still differ).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import tomllib
from pathlib import Path
from typing import Any

from conformance.ace import MAIN, SIDEKICK, Images
from conformance.harness import Ran, Report, Workspace, run

CORPUS = Path(__file__).resolve().parent / "corpus"


def run_all(ws: Workspace, report: Report, images: Images | None) -> None:
    actool = shutil.which("actool")
    if actool is None:
        report.add(
            "actool",
            False,
            "actool is not installed (apt-get install appc-spec; scripts/bootstrap does it)",
        )
        return
    if images is None:
        report.add("actool: the images to check", False, "the ACE images were not built")
    else:
        store = (ws.root / "data-interop", ws.client_config("interop"))  # one store for both
        _validate_built(ws, report, actool, images, store)
        _import_actool_build(ws, report, actool, images, store)
        _discover_agrees(ws, report, actool)
    _corpus_agrees(report, actool)


def _validate(actool: str, path: Path) -> Ran:
    return run([actool, "validate", str(path)])


def _validate_built(
    ws: Workspace, report: Report, actool: str, images: Images, store: tuple[Path, Path]
) -> None:
    """actool validates what ``jetpack aci build`` wrote and what ``image export`` gives."""
    for aci in (images.main, images.sidekick):
        ran = _validate(actool, aci)
        report.add(
            f"actool validate: jetpack aci build's {aci.name}",
            ran.returncode == 0,
            "valid" if ran.returncode == 0 else ran.last_line(),
        )
    data, config = store
    trusted = ws.jetpack(
        "trust", "--prefix", "coreos.com", "--skip-fingerprint-review", str(ws.public_key),
        data=data, config=config,
    )  # fmt: skip
    fetched = ws.jetpack("fetch", str(images.main), data=data, config=config)
    exported = ws.root / "exported.aci"
    image_id = _last_line(fetched)
    ran = fetched if trusted.returncode == 0 else trusted
    if image_id:
        ran = ws.jetpack("image", "export", image_id, str(exported), data=data, config=config)
        if ran.returncode == 0:
            ran = _validate(actool, exported)
    same = ran.returncode == 0 and exported.read_bytes() == images.main.read_bytes()
    report.add(
        "actool validate: jetpack image export's ACI",
        same,
        "valid, byte for byte the ACI fetched"
        if same
        else (ran.last_line() if ran.returncode else "valid, but not the bytes fetched"),
    )


def _import_actool_build(
    ws: Workspace, report: Report, actool: str, images: Images, store: tuple[Path, Path]
) -> None:
    """An ACI actool built imports with the spec's ID, which ``jetpack aci id`` also gives."""
    data, config = store
    for layout in (images.main_layout, images.sidekick_layout):
        check = f"actool build {layout.name} → jetpack import, same ID"
        aci = ws.root / f"actool-{layout.name}.aci"
        aci.unlink(missing_ok=True)
        built = run([actool, "build", "--owner-root", str(layout), str(aci)])
        if built.returncode != 0:
            report.add(check, False, f"actool build: {built.last_line()}")
            continue
        with gzip.open(aci) as tar:
            spec_id = "sha512-" + hashlib.file_digest(tar, "sha512").hexdigest()
        fetched = ws.jetpack(
            "fetch", "--insecure-options=image", str(aci), data=data, config=config
        )
        stored = _last_line(fetched)
        computed = ws.jetpack("aci", "id", str(aci)).stdout.strip()
        ok = stored == spec_id == computed
        report.add(
            check,
            ok,
            f"{spec_id[:19]}… (gunzip | sha512)"
            if ok
            else f"store {stored[:19] or fetched.last_line()}, aci id {computed[:19]}, "
            f"spec {spec_id[:19]}",
        )


def _last_line(ran: Ran) -> str:
    """What a successful fetch printed last (the image ID); "" if it failed or said nothing."""
    lines = ran.stdout.split()
    return lines[-1] if ran.returncode == 0 and lines else ""


def _discover_agrees(ws: Workspace, report: Report, actool: str) -> None:
    """Both tools' discovery of each hosted name, through the real server."""
    config = ws.client_config("discover")
    env = {**os.environ, "SSL_CERT_FILE": str(ws.ca_file)}
    for name in (MAIN, SIDEKICK):
        check = f"discover --json agrees: {name}"
        ours = ws.in_names(ws.argv("discover", "--json", name, config=config))
        theirs = ws.in_names([actool, "discover", "--json", name], env=env)
        if ours.returncode != 0 or theirs.returncode != 0:
            failed = ours if ours.returncode != 0 else theirs
            which = "jetpack" if failed is ours else "actool"
            report.add(check, False, f"{which} discover: {failed.last_line()}")
            continue
        try:
            a, b = _ours(ours.stdout), _theirs(theirs.stdout)
        except (ValueError, KeyError, TypeError) as err:
            report.add(check, False, f"unexpected JSON: {type(err).__name__}: {err}")
            continue
        agree = a == b and bool(a[0]) and bool(a[1])
        detail = (
            f"{len(a[0])} endpoint(s), {len(a[1])} key(s): {a[0][0][0]}"
            if agree
            else f"jetpack {a}\nactool  {b}"
        )
        report.add(check, agree, detail)


Found = tuple[list[tuple[str, str]], list[str]]


def _ours(stdout: str) -> Found:
    documents: list[dict[str, Any]] = json.loads(stdout)
    (doc,) = documents
    return [(e["aci"], e["asc"]) for e in doc["endpoints"]], list(doc["keys"])


def _theirs(stdout: str) -> Found:
    """actool prints walk attempts before the JSON, if discovery had to walk up."""
    start = stdout.find("{")
    if start < 0:
        raise ValueError(f"no JSON in {stdout[:80]!r}")
    doc: dict[str, Any] = json.loads(stdout[start:])
    endpoints = [(e["ACI"], e["ASC"]) for e in doc.get("ACIEndpoints") or []]
    return endpoints, list(doc.get("PublicKeys") or [])


def actool_verdict(actool: str, path: Path) -> str:
    """valid, invalid, or crash (a Go panic is no verdict)."""
    ran = _validate(actool, path)
    if ran.returncode == 0:
        return "valid"
    return "crash" if "panic:" in ran.output or ran.returncode == 2 else "invalid"


def jetpack_verdict(path: Path) -> str:
    """valid, invalid (exit 1 with its one-line reason), or crash (anything else)."""
    ran = run(Workspace.argv("aci", "validate", str(path)))
    if ran.returncode == 0:
        return "valid"
    clean = ran.returncode == 1 and "Traceback" not in ran.output and ran.stderr.strip()
    return "invalid" if clean else "crash"


def _corpus_agrees(report: Report, actool: str) -> None:
    """``jetpack aci validate`` and ``actool validate`` on every manifest of the corpus: a
    rejection must be a rejection, not a crash of either tool."""

    def verdicts(path: Path) -> tuple[str, str]:
        return jetpack_verdict(path), actool_verdict(actool, path)

    for kind, expected in (("agree-valid", "valid"), ("agree-invalid", "invalid")):
        paths = sorted((CORPUS / kind).glob("*.json"))
        wrong = [
            f"{p.name} ({'/'.join(verdicts(p))})"
            for p in paths
            if verdicts(p) != (expected, expected)
        ]
        report.add(
            f"corpus {kind}: both {'accept' if expected == 'valid' else 'reject'}",
            bool(paths) and not wrong,
            f"{len(paths)} manifests" if not wrong else "jetpack/actool: " + ", ".join(wrong),
        )
    cases = tomllib.loads((CORPUS / "differ" / "index.toml").read_text())["case"]
    wrong = []
    for case in cases:
        ours = case["jetpack"]
        theirs = case.get("actool", "invalid" if ours == "valid" else "valid")
        got = verdicts(CORPUS / "differ" / case["file"])
        if got != (ours, theirs):
            wrong.append(f"{case['file']} ({'/'.join(got)})")
    report.add(
        "corpus differ: documented differences hold",
        bool(cases) and not wrong,
        f"{len(cases)} manifests, each with the spec rule in corpus/differ/index.toml"
        if not wrong
        else "no longer as documented (jetpack/actool): " + ", ".join(wrong),
    )
