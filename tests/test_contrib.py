"""Files in contrib/ work as shipped: the systemd unit passes systemd's own check, and the
command it starts serves, then stops cleanly on systemd's stop signal."""

from __future__ import annotations

import json
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

UNIT = Path(__file__).parent.parent / "contrib" / "systemd" / "jetpack-metadata-service.service"
JETPACK = Path(sys.executable).parent / "jetpack"


def _unit_for_this_checkout(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this virtualenv's jetpack (as its comment says)."""
    text = UNIT.read_text()
    assert "ExecStart=/usr/local/bin/jetpack metadata-service" in text
    unit = tmp_path / UNIT.name
    unit.write_text(text.replace("/usr/local/bin/jetpack", str(JETPACK)))
    return unit


def _exec_start(unit: Path) -> list[str]:
    lines = [line for line in unit.read_text().splitlines() if line.startswith("ExecStart=")]
    assert len(lines) == 1
    return shlex.split(lines[0].removeprefix("ExecStart="))


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd is not installed")
def test_systemd_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    unit = _unit_for_this_checkout(tmp_path)
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr  # warnings too: "ignoring ..." lines
    # The check is real: a mistake in the unit is reported.
    broken = tmp_path / "broken.service"
    broken.write_text(unit.read_text().replace("KillSignal=SIGTERM", "KillSignal=SIGBOGUS"))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(broken)], capture_output=True, text=True, timeout=60
    )
    assert "SIGBOGUS" in result.stderr


def test_the_units_command_serves_and_stops_on_its_kill_signal(tmp_path: Path) -> None:
    unit = _unit_for_this_checkout(tmp_path)
    data, config = tmp_path / "data", tmp_path / "jetpack.toml"
    config.write_text('[metadata]\nlisten = "127.0.0.1:0"\n')
    argv = _exec_start(unit)
    argv[1:1] = ["--dir", str(data), "--config", str(config)]  # as the comment says
    log = tmp_path / "service.log"
    with log.open("w") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        status = None
        while time.monotonic() < deadline:
            result = subprocess.run(
                [str(JETPACK), "--dir", str(data), "metadata-service", "--status", "--format=json"],
                capture_output=True,
                text=True,
                timeout=20,
            )
            status = json.loads(result.stdout)
            if status["running"]:
                break
            assert proc.poll() is None, log.read_text()
            time.sleep(0.05)
        assert status is not None and status["running"] and status["pid"] == proc.pid
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0, log.read_text()
        assert "Traceback" not in log.read_text()
        assert not (data / "mds" / "run" / "control.sock").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
