"""``python -m hil fault``: only faults the simulator models, and ``dead`` reports success."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from hil.broker import free_port
from hil.sims.modbus_sim import FAULTS, ModbusTcpSim, tilt_unit
from hil.sims.runner import TCP_FAULTS, faults_for
from hil.sims.serial_sims import GpsSim, TtsSim
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
            assert result.stderr.strip() == (
                f"✘ manhole-12: a Modbus TCP simulator does not model '{mode}' (it models "
                "none, dead, slow, exception; crc, garbage and wrong_unit need the RTU line "
                "simulator)")
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


def _serial_devices(gps_port: int, tts_port: int) -> list[dict[str, object]]:
    asset = {"class": "2190", "grid": "320508001002003", "name": "x"}
    return [{"name": "truck-03", "kind": "gps", "transport": "serial",
             "port": f"socket://127.0.0.1:{gps_port}", "baud": 9600, "model": "nmea",
             "asset": {**asset, "code": "3205082190000003"}},
            {"name": "speaker-01", "kind": "loudspeaker", "transport": "serial",
             "port": f"socket://127.0.0.1:{tts_port}", "baud": 9600, "model": "syn6288",
             "asset": {**asset, "class": "2105", "code": "3205082105000001"}}]


async def test_fault_sets_what_each_serial_simulator_models_and_words_refusals(
        tmp_path: Path) -> None:
    # issue 21 f9: TtsSim models `dead` but `hil fault` could not set it, and the refusal said
    # "is on no Modbus simulator, which does not model 'none'"
    gps_port, tts_port = free_port(), free_port()
    gps, tts = GpsSim(gps_port, rate_hz=5.0), TtsSim(tts_port)
    await gps.start()
    await tts.start()
    loaded = write_config(tmp_path, broker_port=1, pki=None, buses=[],
                          devices=_serial_devices(gps_port, tts_port))
    try:
        assert faults_for(loaded.config, "truck-03") == GpsSim.FAULTS
        assert faults_for(loaded.config, "speaker-01") == TtsSim.FAULTS
        result = await asyncio.to_thread(_hil, loaded.path, "fault", "speaker-01", "dead")
        assert (result.returncode, result.stdout.strip()) == (0, "speaker-01: fault mode dead"), \
            result.stderr
        assert tts.dead
        result = await asyncio.to_thread(_hil, loaded.path, "fault", "speaker-01", "none")
        assert result.returncode == 0, result.stderr
        assert not tts.dead
        result = await asyncio.to_thread(_hil, loaded.path, "fault", "truck-03", "no_fix")
        assert result.returncode == 0, result.stderr
        assert not gps.fix
        result = await asyncio.to_thread(_hil, loaded.path, "fault", "truck-03", "dead")
        assert result.returncode == 0, result.stderr
        assert gps.silent
        result = await asyncio.to_thread(_hil, loaded.path, "fault", "truck-03", "none")
        assert result.returncode == 0, result.stderr
        assert gps.fix
        assert not gps.silent
        result = await asyncio.to_thread(_hil, loaded.path, "fault", "speaker-01", "crc")
        assert result.returncode == 2
        assert result.stderr.strip() == ("✘ speaker-01: the loudspeaker simulator does not "
                                         "model 'crc' (it models none, dead)")
        result = await asyncio.to_thread(_hil, loaded.path, "fault", "truck-03", "slow")
        assert result.stderr.strip() == ("✘ truck-03: the GPS simulator does not model 'slow' "
                                         "(it models none, dead, no_fix)")
    finally:
        await gps.stop()
        await tts.stop()


def test_fault_on_a_device_no_simulator_serves_says_so(tmp_path: Path) -> None:
    devices = _serial_devices(1, 2)
    devices[1]["port"] = "/dev/ttyUSB1"  # a real unit: no simulator behind it
    loaded = write_config(tmp_path, broker_port=1, pki=None, buses=[], devices=devices)
    result = _hil(loaded.path, "fault", "speaker-01", "none")
    assert result.returncode == 2
    assert result.stderr.strip() == ("✘ speaker-01: no simulator serves it (its port "
                                     "/dev/ttyUSB1 is not a loopback socket://): nothing to "
                                     "fault")
