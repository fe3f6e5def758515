"""``python -m hil fault``: only faults the simulator models, and ``dead`` reports success."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from hil.broker import free_port
from hil.sims.modbus_sim import FAULTS, ModbusTcpSim, tilt_unit
from hil.sims.runner import TCP_FAULTS, faults_for
from tests.cfg import tilt_device, write_config

ROOT = Path(__file__).resolve().parents[1]


def _hil(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hil", "--config", str(config), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)


async def test_fault_dead_reports_success_and_tcp_refuses_what_it_cannot_model(
        tmp_path: Path) -> None:
    port = free_port()
    unit = tilt_unit()
    sim = ModbusTcpSim({80: unit}, port)
    await sim.start()
    loaded = write_config(tmp_path, broker_port=1, pki=None, devices=[
        tilt_device("manhole-12", "covers", 80)], buses=[
        {"name": "covers", "type": "modbus_tcp", "host": "127.0.0.1", "port": port}])
    try:
        result = await asyncio.to_thread(_hil, loaded.path, "fault", "manhole-12", "dead")
        assert (result.returncode, result.stdout.strip()) == (0, "manhole-12: fault mode dead"), \
            result.stderr
        assert unit.fault == "dead"
        result = await asyncio.to_thread(_hil, loaded.path, "fault", "manhole-12", "none")
        assert result.returncode == 0, result.stderr  # a dead unit can be brought back
        assert unit.fault == "none"
        for mode in ("crc", "garbage", "wrong_unit"):
            result = await asyncio.to_thread(_hil, loaded.path, "fault", "manhole-12", mode)
            assert result.returncode == 2
            assert f"manhole-12: is on a Modbus TCP simulator, which does not model '{mode}'" \
                in result.stderr
            assert unit.fault == "none"  # nothing was applied
    finally:
        await sim.stop()


def test_an_rtu_line_models_every_fault(tmp_path: Path) -> None:
    loaded = write_config(tmp_path, broker_port=1, pki=None, devices=[
        tilt_device("manhole-1", "line", 3, transport="modbus_rtu"),
        tilt_device("manhole-2", "tcp", 4)], buses=[
        {"name": "line", "type": "modbus_rtu", "port": "/dev/ttyUSB0", "baud": 9600},
        {"name": "tcp", "type": "modbus_tcp", "host": "127.0.0.1", "port": 1502}])
    assert faults_for(loaded.config, "manhole-1") == FAULTS
    assert faults_for(loaded.config, "manhole-2") == TCP_FAULTS
