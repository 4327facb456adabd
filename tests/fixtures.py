"""Fixtures and hooks shared by tests/ and conformance/ (loaded by the root conftest.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent

MINIMAL_MANIFEST: dict[str, Any] = {
    "acKind": "ImageManifest",
    "acVersion": "0.8.11",
    "name": "example.com/minimal",
    "labels": [
        {"name": "version", "value": "1.0.0"},
        {"name": "os", "value": "linux"},
        {"name": "arch", "value": "amd64"},
    ],
    "app": {"exec": ["/bin/true"], "user": "0", "group": "0"},
}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, None]:
    """On CI every prerequisite is installed by scripts/bootstrap: a skip there is a failure."""
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") == "true" and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped on CI, where nothing may be: {reason}"


def xattrs_supported(directory: Path) -> bool:
    """Whether the file system of ``directory`` takes user.* extended attributes."""
    probe = directory / ".xattr-probe"
    probe.touch()
    try:
        os.setxattr(probe, "user.probe", b"1")
        return True
    except OSError:
        return False
    finally:
        probe.unlink()


def processes_mentioning(text: str) -> list[int]:
    """PIDs (not this one) whose command line holds ``text`` or whose working directory
    is at or under it: what is still running from a scratch directory."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            cwd = str((entry / "cwd").readlink())
        except OSError:
            continue  # gone meanwhile, or a kernel thread
        if text.encode() in cmdline or cwd == text or cwd.startswith(text.rstrip("/") + "/"):
            pids.append(int(entry.name))
    return pids


def require_tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (apt-get install {package}; scripts/test does it)")
    return path


@pytest.fixture
def actool() -> str:
    return require_tool("actool", "appc-spec")


@pytest.fixture
def make_layout(tmp_path: Path) -> Callable[..., Path]:
    """Factory: an image layout with the given manifest and rootfs files (path -> bytes)."""
    counter = 0

    def make(manifest: dict[str, Any] | None = None, files: dict[str, bytes] | None = None) -> Path:
        nonlocal counter
        counter += 1
        layout = tmp_path / f"layout{counter}"
        (layout / "rootfs").mkdir(parents=True)
        (layout / "manifest").write_text(json.dumps(manifest or MINIMAL_MANIFEST))
        for name, data in (files or {"bin/true": b"#!/bin/sh\n"}).items():
            target = layout / "rootfs" / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            target.chmod(0o755)
        return layout

    return make


@pytest.fixture(scope="session")
def hello_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example image images/hello as a full layout, with a static busybox."""
    if not Path("/bin/busybox").exists():
        pytest.skip("busybox-static is not installed (apt-get install busybox-static)")
    out = tmp_path_factory.mktemp("hello") / "layout"
    subprocess.run(
        [str(REPO / "images" / "build-layout"), str(REPO / "images" / "hello"), str(out)],
        check=True,
    )
    return out


@pytest.fixture
def jetpack_cmd() -> list[str]:
    """argv prefix running the installed command the way a user would."""
    script = Path(sys.executable).parent / "jetpack"
    return [str(script)] if script.exists() else [sys.executable, "-m", "jetpack"]


def image_manifest(name: str, *, version: str = "1.0.0", **fields: Any) -> dict[str, Any]:
    """An image manifest for ``name`` with version and this host's os/arch labels."""
    from jetpack.discovery import host_labels

    return {
        "acKind": "ImageManifest",
        "acVersion": "0.8.11",
        "name": name,
        "labels": [
            {"name": "version", "value": version},
            {"name": "os", "value": host_labels()["os"]},
            {"name": "arch", "value": host_labels()["arch"]},
        ],
        **fields,
    }


@pytest.fixture
def make_aci(make_layout: Callable[..., Path], tmp_path: Path) -> Callable[..., Path]:
    """Factory: an ACI built with ``jetpack.aci.build_aci`` from a manifest and rootfs files."""
    from jetpack.aci import build_aci

    counter = 0

    def make(manifest: dict[str, Any] | None = None, files: dict[str, bytes] | None = None) -> Path:
        nonlocal counter
        counter += 1
        out = tmp_path / "acis" / f"image{counter}.aci"
        out.parent.mkdir(exist_ok=True)
        build_aci(make_layout(manifest, files), out)
        return out

    return make
