"""The official appc ACE validator (github.com/appc/spec/ace, Debian's
golang-github-appc-spec-dev), built offline, packed into the two images the spec's ACE
section describes, signed, served by ``jetpack serve`` and run in one pod.

A run passes when its output holds ``prestart OK``, ``main OK``, ``sidekick OK`` and
``poststop OK`` and the pod exits 0; a ``FAIL`` is reported with the validator's own
``==>`` reasons.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from conformance.harness import Ran, Report, Workspace, run
from jetpack.discovery.appstring import host_labels
from tests.fixtures import processes_mentioning

HERE = Path(__file__).resolve().parent
VERSION = "0.8.11"
MAIN = f"coreos.com/ace-validator-main:{VERSION}"
SIDEKICK = f"coreos.com/ace-validator-sidekick:{VERSION}"
MODES = ("prestart", "main", "sidekick", "poststop")  # each prints "<mode> OK" or "<mode> FAIL"
GO_PACKAGE = "github.com/appc/spec/ace"
GOPATH = "/usr/share/gocode"
BACKENDS = ("overlay", "copy", "zfs")
NETS = ("host", "none")
POD_TIMEOUT = 120.0


# -- the validator binary -------------------------------------------------------------------


def _package_version(package: str) -> str | None:
    ran = run(["dpkg-query", "-W", "-f=${Version}", package])
    return ran.stdout.strip() if ran.returncode == 0 and ran.stdout.strip() else None


def cache_dir() -> Path:
    explicit = os.environ.get("JETPACK_CONFORMANCE_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "jetpack-conformance"


def build_validator(report: Report) -> Path | None:
    """The static ace-validator binary, built with Debian's Go from Debian's source of the
    spec (cached per version of both, so a second run does not build it again)."""
    check = "build ace-validator"
    go = shutil.which("go") or ("/usr/bin/go" if Path("/usr/bin/go").exists() else None)
    source = _package_version("golang-github-appc-spec-dev")
    if go is None or source is None or not (Path(GOPATH) / "src" / GO_PACKAGE).is_dir():
        report.add(
            check,
            False,
            "needs Debian's golang-go and golang-github-appc-spec-dev "
            "(apt-get install golang-go golang-github-appc-spec-dev; scripts/bootstrap does it)",
        )
        return None
    go_version = run([go, "env", "GOVERSION"]).stdout.strip() or "go"
    cache = cache_dir()
    binary = cache / f"ace-validator-{source}-{go_version}"
    digest = binary.with_name(binary.name + ".sha256")
    if _cached(binary, digest):
        report.add(check, True, f"{go_version}, appc-spec {source}: cached ({binary})")
        return binary
    cache.mkdir(parents=True, exist_ok=True)
    partial = binary.with_name(binary.name + f".{os.getpid()}.tmp")
    env = {
        **os.environ,
        "GOPATH": GOPATH,
        "GO111MODULE": "off",
        "CGO_ENABLED": "0",
        "GOFLAGS": "",
        "GOCACHE": str(cache / "go-build"),
    }
    ran = run([go, "build", "-o", str(partial), GO_PACKAGE], env=env, timeout=600)
    if ran.returncode != 0:
        partial.unlink(missing_ok=True)
        report.add(check, False, f"go build failed: {ran.last_line()}")
        return None
    if _is_dynamic(partial):
        partial.unlink()
        report.add(check, False, "go build made a dynamic executable (CGO_ENABLED=0 ignored?)")
        return None
    digest.write_text(_sha256(partial) + "\n")
    partial.rename(binary)
    size = binary.stat().st_size / 1e6
    report.add(
        check,
        True,
        f"{go_version}, appc-spec {source}: built in {ran.seconds:.0f} s, {size:.1f} MB",
    )
    return binary


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _cached(binary: Path, digest: Path) -> bool:
    """Whether the cache holds the binary this suite built: the SHA-256 it recorded then,
    still static (anything else is built again)."""
    try:
        return (
            digest.read_text().strip() == _sha256(binary)
            and os.access(binary, os.X_OK)
            and not _is_dynamic(binary)
        )
    except OSError:
        return False


def _is_dynamic(path: Path) -> bool:
    """Whether the ELF file has an interpreter (PT_INTERP): a static binary has none."""
    import struct

    with path.open("rb") as f:
        header = f.read(64)
        if header[:4] != b"\x7fELF" or header[4] != 2:  # 64-bit only: what Go builds here
            return True
        (phoff,) = struct.unpack_from("<Q", header, 0x20)
        phentsize, phnum = struct.unpack_from("<HH", header, 0x36)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    return any(
        struct.unpack_from("<I", table, i * phentsize)[0] == 3 for i in range(phnum)
    )  # PT_INTERP


# -- the two images -------------------------------------------------------------------------


@dataclass(frozen=True)
class Images:
    main: Path  # signed ACIs (FILE.asc beside)
    sidekick: Path
    main_layout: Path
    sidekick_layout: Path


def _layout(directory: Path, manifest: Path, binary: Path) -> Path:
    """An image layout: the manifest, the validator at /ace-validator, an empty working
    directory /opt/acvalidator (the ACE creates the mount point /db)."""
    if directory.exists():
        shutil.rmtree(directory)
    rootfs = directory / "rootfs"
    (rootfs / "opt" / "acvalidator").mkdir(parents=True)
    shutil.copyfile(binary, rootfs / "ace-validator")
    (rootfs / "ace-validator").chmod(0o755)
    document = json.loads(manifest.read_text())
    host = host_labels()  # what the validator was built for (Go builds for this host)
    for label in document["labels"]:
        if label["name"] in host:
            label["value"] = host[label["name"]]
    (directory / "manifest").write_text(json.dumps(document, indent=4) + "\n")
    return directory


def build_images(ws: Workspace, report: Report, binary: Path) -> Images | None:
    """Both images built by ``jetpack aci build``, validated by ``jetpack aci validate``,
    signed with the run's key, and pushed to the server."""
    out = ws.root / "images"
    out.mkdir(exist_ok=True)
    built: dict[str, tuple[Path, Path]] = {}
    for which in ("main", "sidekick"):
        layout = _layout(out / f"{which}-layout", HERE / "ace" / f"{which}.json", binary)
        aci = out / f"ace-validator-{which}.aci"
        ran = ws.jetpack("aci", "build", "--overwrite", "--owner-root", str(layout), str(aci))
        if ran.returncode == 0:
            ran = ws.jetpack("aci", "validate", str(aci))
        said = _said(ran).replace(f"{aci}: ", "")  # "valid ACI sha512-… (name:version)"
        if not report.add(f"build image ace-validator-{which}", ran.returncode == 0, said):
            return None
        ws.sign(aci)
        pushed = ws.push(aci)
        if not report.add(
            f"push ace-validator-{which} to jetpack serve", pushed.returncode == 0, _said(pushed)
        ):
            return None
        built[which] = (aci, layout)
    return Images(built["main"][0], built["sidekick"][0], built["main"][1], built["sidekick"][1])


def _said(ran: Ran) -> str:
    """A command's first line of output when it worked, its last when it failed."""
    if ran.returncode != 0:
        return ran.last_line()
    lines = [line.strip() for line in ran.output.splitlines() if line.strip()]
    return lines[0] if lines else "ok"


# -- judging a run --------------------------------------------------------------------------

_MODE_LINE = re.compile(r"\b(prestart|main|sidekick|poststop) (OK|FAIL)\b", re.IGNORECASE)


def judge(ran: Ran) -> tuple[bool, str]:
    """Whether a pod run of the validator passed, and the detail for the table."""
    seen: dict[str, str] = {}
    for match in _MODE_LINE.finditer(ran.output):
        mode, verdict = match.group(1).lower(), match.group(2).upper()
        seen[mode] = "FAIL" if seen.get(mode) == "FAIL" else verdict
    reasons = [line.split("==>", 1)[1].strip() for line in ran.output.splitlines() if "==>" in line]
    missing = [m for m in MODES if m not in seen]
    failed = [m for m in MODES if seen.get(m) == "FAIL"]
    ok = ran.returncode == 0 and not missing and not failed and not reasons
    if ok:
        return True, f"{', '.join(f'{m} OK' for m in MODES)}; exit 0 in {ran.seconds:.1f} s"
    parts = [f"exit status {ran.returncode}"]
    if failed:
        parts.append(f"FAIL: {', '.join(failed)}")
    if missing:
        parts.append(f"no verdict from: {', '.join(missing)}")
    detail = "; ".join(parts)
    if reasons:
        detail += "\n" + "\n".join(f"==> {r}" for r in reasons)
    last = ran.last_line()  # the executor's own word, a timeout: unless the validator's
    if ran.returncode != 0 and "==>" not in last and not _MODE_LINE.search(last):
        detail += f"\n{last}"
    return False, detail


# -- Jetpack: each storage backend, each network mode, by name and by pod manifest ----------


def pod_manifest(main_id: str, sidekick_id: str) -> dict[str, object]:
    """The pod both images run in, as ``--pod-manifest`` takes it."""

    def app(name: str, image_name: str, image_id: str, **more: object) -> dict[str, object]:
        return {
            "name": name,
            "image": {
                "name": image_name,
                "id": image_id,
                "labels": [{"name": "version", "value": VERSION}],
            },
            "mounts": [{"volume": "database", "path": "/db"}],
            **more,
        }

    # Annotations of the pod, and of an app (one replacing the image's, one new): the
    # validator checks the pod's as given and the app's merged with the image's.
    return {
        "acVersion": VERSION,
        "acKind": "PodManifest",
        "apps": [
            app(
                "ace-validator-main",
                MAIN.split(":")[0],
                main_id,
                annotations=[
                    {"name": "authors", "value": "The Jetpack conformance suite"},
                    {"name": "example.com/run-by", "value": "pod-manifest"},
                ],
            ),
            app("ace-validator-sidekick", SIDEKICK.split(":")[0], sidekick_id),
        ],
        "volumes": [{"name": "database", "kind": "empty"}],
        "annotations": [{"name": "example.com/suite", "value": "jetpack-conformance"}],
    }


def _backend_config(ws: Workspace, backend: str, pool: str | None) -> Path:
    extra = f'[storage]\nbackend = "{backend}"\n'
    if backend == "zfs":
        assert pool is not None
        extra += f'[storage.zfs]\ndataset = "{pool}/conformance"\n'
    return ws.client_config(f"client-{backend}", extra)


def run_jetpack(
    ws: Workspace, report: Report, backend: str, pool: str | None, nets: Sequence[str] = NETS
) -> None:
    """Trust the key by discovery, fetch both images by name, run the pod by name and by
    pod manifest in each network mode, on ``backend``; leave nothing behind."""
    data = ws.root / f"data-{backend}"
    config = _backend_config(ws, backend, pool)
    try:
        _run_jetpack(ws, report, backend, data, config, nets)
    finally:
        if data.exists():
            ws.jetpack("gc", "--grace-period=0s", "--expire-prepared=0s", data=data, config=config)
            ws.jetpack("metadata-service", "--stop", data=data, config=config)


def _run_jetpack(
    ws: Workspace, report: Report, backend: str, data: Path, config: Path, nets: Sequence[str]
) -> None:
    head = ws.argv(data=data, config=config)
    trust = ws.in_names([*head, "trust", "--prefix", "coreos.com", "--skip-fingerprint-review"])
    trusted = trust.returncode == 0 and ws.fingerprint in trust.output.lower()
    if not report.add(
        f"{backend}: trust the key found by discovery",
        trusted,
        f"key {ws.fingerprint} for coreos.com" if trusted else trust.last_line(),
    ):
        return
    fetched = ws.in_names([*head, "fetch", MAIN, SIDEKICK])
    ids = [line.strip() for line in fetched.stdout.splitlines() if line.startswith("sha512-")]
    if not report.add(
        f"{backend}: fetch both images by name",
        fetched.returncode == 0 and len(ids) == 2,
        ", ".join(i[:19] for i in ids) if fetched.returncode == 0 else fetched.last_line(),
    ):
        return
    manifest = ws.root / f"pod-{backend}.json"
    manifest.write_text(json.dumps(pod_manifest(*ids), indent=2))
    for net in nets:
        by_name = run(
            [
                *head,
                "run",
                f"--net={net}",
                "--volume",
                "database,kind=empty",
                MAIN,
                "---",
                SIDEKICK,
            ],
            timeout=POD_TIMEOUT,
        )
        report.add(f"ACE {backend} --net={net}, by name", *judge(by_name))
        by_manifest = run(
            [*head, "run", f"--net={net}", "--pod-manifest", str(manifest)], timeout=POD_TIMEOUT
        )
        report.add(f"ACE {backend} --net={net}, --pod-manifest", *judge(by_manifest))


# -- another executor -----------------------------------------------------------------------


def runtime_env(ws: Workspace, images: Images) -> dict[str, str]:
    """What a ``--runtime`` command gets, besides coreos.com resolving to the server."""
    workdir = ws.root / "runtime"  # empty, its own: not the workspace with the keys
    workdir.mkdir(exist_ok=True)
    return {
        **os.environ,
        "ACE_MAIN": MAIN,
        "ACE_SIDEKICK": SIDEKICK,
        "ACE_MAIN_ACI": str(images.main),
        "ACE_SIDEKICK_ACI": str(images.sidekick),
        "ACE_PUBKEY": str(ws.public_key),
        "ACE_CA_FILE": str(ws.ca_file),
        "ACE_SERVER": ws.url,
        "ACE_WORKDIR": str(workdir),
        "SSL_CERT_FILE": str(ws.ca_file),
    }


def run_other(ws: Workspace, report: Report, images: Images, command: str) -> None:
    """The validator's pod run by ``command`` (sh -c) instead of Jetpack; then whatever it
    left running in its scratch directory is killed, by PID, and reported."""
    env = runtime_env(ws, images)
    ran = ws.shell_in_names(command, env)
    report.add(f"ACE --runtime {_short(command)}", *judge(ran))
    left = processes_mentioning(env["ACE_WORKDIR"])
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    report.add(
        "ACE after --runtime: nothing left running",
        not left,
        "nothing left running in $ACE_WORKDIR"
        if not left
        else f"left running (killed): PIDs {', '.join(map(str, left))}",
    )


def _short(command: str, width: int = 40) -> str:
    return command if len(command) <= width else command[: width - 1] + "…"
