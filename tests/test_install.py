"""systemd/install.sh staged into a folder (DESTDIR): files, modes, unit, a working CLI."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_install_script_stages_a_gateway(tmp_path: Path) -> None:
    root = tmp_path / "root"
    result = subprocess.run(["bash", str(ROOT / "systemd" / "install.sh"), "--no-start"],
                            env={**os.environ, "DESTDIR": str(root)}, capture_output=True,
                            text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    key = root / "etc/edge/keys/gateway.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE((root / "var/lib/edge").stat().st_mode) == 0o700
    assert (root / "etc/systemd/system/edge.service").read_text() == \
        (ROOT / "systemd/edge.service").read_text()
    assert (root / "etc/edge/devices.yaml").exists()
    assert "register with the platform" in result.stdout
    version = subprocess.run([str(root / "opt/edge/venv/bin/edge"), "--version"],
                             capture_output=True, text=True, check=True)
    assert version.stdout.startswith("edge ")
    # a second run keeps the provisioned key and config
    before = key.read_bytes()
    again = subprocess.run(["bash", str(ROOT / "systemd" / "install.sh"), "--no-start"],
                           env={**os.environ, "DESTDIR": str(root)}, capture_output=True,
                           text=True, timeout=600, check=False)
    assert again.returncode == 0
    assert key.read_bytes() == before
