"""`edge` on a closed pipe and on a damaged status file (issue 14 re-test f14 #6, #11)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cfg import tilt_device, write_config

ROOT = Path(__file__).resolve().parents[1]


def _config(tmp_path: Path) -> Path:
    loaded = write_config(tmp_path, broker_port=1, pki=None,
                          buses=[{"name": "b", "type": "modbus_tcp", "host": "127.0.0.1",
                                  "port": 1}],
                          devices=[tilt_device(f"mh-{i}", "b", i) for i in range(1, 40)])
    loaded.state_dir.mkdir(parents=True, exist_ok=True)
    devices = {f"mh-{i}": {"kind": "manhole_tilt", "state": "online", "polls_ok": 1,
                           "polls_failed": 0, "last_error": ""} for i in range(1, 40)}
    (loaded.state_dir / "status.json").write_text(json.dumps({
        "written_at": time.time(), "version": "0", "pid": 1, "time_quality": "synced",
        "config": {}, "outbox": {"depth": 0, "dead_letters": 0, "drops": 0},
        "devices": devices, "uplink": {"connected": True}}), encoding="utf-8")
    return loaded.path


@pytest.mark.parametrize("argv", [["status"], ["status", "--json"], ["schema"]])
def test_a_closed_pipe_ends_quietly(tmp_path: Path, argv: list[str]) -> None:
    """`edge status | head -3` printed a BrokenPipeError traceback."""
    config = _config(tmp_path)
    args = [*argv, "--config", str(config)] if argv[0] == "status" else argv
    proc = subprocess.Popen([sys.executable, "-m", "edge.cli", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before the first line (head -3 that exited)
    err = proc.stderr.read().decode()
    proc.wait(30)
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert proc.returncode in {0, 141}, (proc.returncode, err)


def test_status_on_a_damaged_file_says_so_and_where(tmp_path: Path) -> None:
    config = _config(tmp_path)
    status = tmp_path / "state" / "status.json"
    status.write_text('{"written_at": 1, "version"', encoding="utf-8")  # torn
    result = subprocess.run([sys.executable, "-m", "edge.cli", "status", "--config",
                             str(config)], cwd=ROOT, capture_output=True, text=True,
                            check=False, timeout=30)
    assert result.returncode == 1
    assert "damaged" in result.stderr and str(status) in result.stderr, result.stderr
    assert "has not run" not in result.stderr
    status.unlink()
    result = subprocess.run([sys.executable, "-m", "edge.cli", "status", "--config",
                             str(config)], cwd=ROOT, capture_output=True, text=True,
                            check=False, timeout=30)
    assert "has not run with this config" in result.stderr, result.stderr
