"""The edge CLI: exit codes, key files, outbox inspection."""

from __future__ import annotations

import asyncio
import contextlib
import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from edge.cli import EX_CONFIG, EX_FAIL, EX_INVALID, main
from edge.config import ModbusTcpBus
from edge.config_loader import validate
from edge.drivers._codecs import nmea
from edge.drivers.gps import GpsSerialDriver
from edge.drivers.probe_trace import tracing
from edge.errors import DeviceUnavailableError
from edge.kinds.gps import GpsDevice
from edge.transports.modbus import ModbusBus
from edge.transports.serial import SerialPort
from hil.broker import free_port
from hil.sims.modbus_sim import ModbusTcpSim, SimUnit, tilt_unit
from hil.sims.serial_sims import TtsSim
from tests.cfg import tilt_device, write_config
from tests.helpers import wait_until
from tests.outbox_util import ev, open_store
from tests.recording_sink import RecordingSink

ROOT = Path(__file__).resolve().parents[1]


def test_check_exits_2_on_an_invalid_config_with_line_numbers(capsys: object) -> None:
    case = ROOT / "tests" / "config_cases" / "01-unit-id-range" / "devices.yaml"
    assert main(["check", "--config", str(case)]) == EX_INVALID
    err = capsys.readouterr().err  # type: ignore[attr-defined]
    assert "devices.yaml:54: devices[manhole-12].unit_id: must be <= 247 (got 300)" in err


def test_check_json_on_invalid_config(capsys: object) -> None:
    case = ROOT / "tests" / "config_cases" / "19-several-errors-at-once" / "devices.yaml"
    assert main(["check", "--json", "--config", str(case)]) == EX_INVALID
    doc = json.loads(capsys.readouterr().out)  # type: ignore[attr-defined]
    assert doc["config"] == "invalid"
    assert len(doc["problems"]) == 3


def test_run_exits_78_on_an_invalid_config() -> None:
    case = ROOT / "tests" / "config_cases" / "03-unknown-kind" / "devices.yaml"
    result = subprocess.run([sys.executable, "-m", "edge.cli", "run", "--config", str(case)],
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == EX_CONFIG
    assert "devices.yaml:68: devices[lamp-07].kind" in result.stderr


def test_check_fails_when_nothing_answers(tmp_path: Path, capsys: object) -> None:
    loaded = write_config(tmp_path, broker_port=1, pki=None, devices=[
        tilt_device("manhole-1", "covers", 80)], buses=[
        {"name": "covers", "type": "modbus_tcp", "host": "127.0.0.1", "port": 1}])
    assert main(["check", "--config", str(loaded.path)]) == EX_FAIL
    out = capsys.readouterr().out  # type: ignore[attr-defined]
    assert "✘ uplink" in out
    assert "⚠ tls: tls: false" in out
    assert "✔ gateway key" in out


def test_keys_init_creates_a_private_key_and_refuses_to_overwrite(tmp_path: Path,
                                                                  capsys: object) -> None:
    loaded = write_config(tmp_path, broker_port=1883, pki=None, devices=[], buses=[])
    key = loaded.resolve("keys/gateway.key")
    key.unlink()
    assert main(["keys", "init", "--config", str(loaded.path)]) == 0
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert main(["keys", "init", "--config", str(loaded.path)]) == EX_FAIL
    assert main(["keys", "show", "--json", "--config", str(loaded.path)]) == 0
    shown = json.loads(capsys.readouterr().out.strip().splitlines()[-1])  # type: ignore[attr-defined]
    assert len(shown["kid"]) == 16
    assert len(shown["public_key_hex"]) == 64


def test_a_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    loaded = write_config(tmp_path, broker_port=1883, pki=None, devices=[], buses=[])
    key = loaded.resolve("keys/gateway.key")
    key.chmod(0o644)
    assert main(["keys", "show", "--config", str(loaded.path)]) == EX_FAIL


def test_outbox_stats_export_and_requeue(tmp_path: Path, capsys: object) -> None:
    loaded = write_config(tmp_path, broker_port=1883, pki=None, devices=[], buses=[])
    store = open_store(loaded.state_dir / "outbox.db", max_attempts=1)
    seqs = store.append([ev(3, n=i) for i in range(5)]).seqs
    store.nack(seqs[:1], "test")
    store.close()
    assert main(["outbox", "stats", "--json", "--config", str(loaded.path)]) == 0
    stats = json.loads(capsys.readouterr().out)  # type: ignore[attr-defined]
    assert stats["depth"] == 4
    assert stats["dead_letters"] == 1
    assert main(["outbox", "export", "--config", str(loaded.path)]) == 0
    lines = capsys.readouterr().out.splitlines()  # type: ignore[attr-defined]
    assert [json.loads(x)["seq"] for x in lines] == seqs[1:]
    assert main(["outbox", "requeue-dead", "--config", str(loaded.path)]) == 0
    assert "requeued 1" in capsys.readouterr().out  # type: ignore[attr-defined]


def test_schema_prints_every_published_schema(capsys: object) -> None:
    from edge.contract import CONTRACT_VERSION, SCHEMA_FILES, schema_text

    assert main(["schema"]) == 0
    doc = json.loads(capsys.readouterr().out)  # type: ignore[attr-defined]
    assert doc["contract_version"] == CONTRACT_VERSION
    assert set(doc["schemas"]) >= {"envelope", "envelope_v2", "batch", "event", "state",
                                   "command", "command_result", "work_coverage"}
    assert all(s["$schema"] == "https://json-schema.org/draft/2020-12/schema"
               for s in doc["schemas"].values())
    assert main(["schema", "command"]) == 0  # one schema: the shipped file, byte for byte
    assert capsys.readouterr().out == schema_text(SCHEMA_FILES["command"])  # type: ignore[attr-defined]
    assert main(["schema", "nope"]) == 2


# --- edge probe: the wire, exception names, backoff, a quiet terminal ---------------------


def _probe_cli(config: Path, device: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge.cli", "probe", "--config", str(config),
                           device], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          check=False)


async def _probe_sim(tmp_path: Path, unit: SimUnit, *,
                     device: str = "manhole-12") -> subprocess.CompletedProcess[str]:
    port = free_port()
    sim = ModbusTcpSim({80: unit}, port)
    await sim.start()
    try:
        loaded = write_config(tmp_path, broker_port=1, pki=None, devices=[
            tilt_device("manhole-12", "covers", 80)], buses=[
            {"name": "covers", "type": "modbus_tcp", "host": "127.0.0.1", "port": port,
             "retries": 0}])
        return await asyncio.to_thread(_probe_cli, loaded.path, device)
    finally:
        await sim.stop()


async def test_probe_shows_bus_unit_request_raw_registers_and_units(tmp_path: Path) -> None:
    result = await _probe_sim(tmp_path, tilt_unit(tilt_x_deg=7.25))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "bus covers (modbus_tcp 127.0.0.1:" in out
    assert "unit 80: FC3 read holding registers 0x003D x4" in out
    assert "<- 0x0" in out  # the raw registers as read
    assert "tilt_x_deg: 7.25 °" in out
    assert "temperature_c: 20.0 °C" in out


async def test_probe_names_modbus_exceptions(tmp_path: Path) -> None:
    unit = tilt_unit()
    unit.holding.clear()  # nothing at the angle registers: ILLEGAL DATA ADDRESS
    result = await _probe_sim(tmp_path / "a", unit)
    assert result.returncode == EX_FAIL
    first = result.stderr.splitlines()[0]
    assert first.startswith("✘ manhole-12 (manhole_tilt, witmotion, unit 80)")
    assert "ILLEGAL DATA ADDRESS (exception 2)" in first
    assert "FC3 read holding registers 0x003D x4" in result.stderr
    unit = tilt_unit()
    unit.fault = "exception"
    result = await _probe_sim(tmp_path / "b", unit)
    assert "SERVER DEVICE FAILURE (exception 4)" in result.stderr


async def test_probe_goes_through_the_breaker_of_a_unit_in_backoff() -> None:
    port = free_port()
    unit = tilt_unit(tilt_x_deg=1.0)
    sim = ModbusTcpSim({80: unit}, port)
    await sim.start()
    bus = ModbusBus(ModbusTcpBus(name="covers", type="modbus_tcp", host="127.0.0.1",
                                 port=port, timeout_s=0.2, retries=0))
    try:
        unit.fault = "dead"
        with pytest.raises(DeviceUnavailableError):
            await bus.read("manhole-12", 80, 3, 0x3D, 4)
        unit.fault = "none"  # the technician fixed the wiring; the breaker is still open
        with pytest.raises(DeviceUnavailableError, match="next probe after backoff"):
            await bus.read("manhole-12", 80, 3, 0x3D, 4)
        with tracing() as trace:
            words = await bus.read("manhole-12", 80, 3, 0x3D, 4)
        assert len(words) == 4
        assert trace.records[0].raw.startswith("0x")
        await bus.read("manhole-12", 80, 3, 0x3D, 4)  # it answered: the breaker is closed
    finally:
        await bus.close()
        await sim.stop()


def test_pymodbus_never_prints_on_the_terminal() -> None:
    # with no logging configured (edge probe, hil), Python's last-resort handler would print
    # pymodbus' ERROR records: "Cancel send, because not connected!" and ">>>>> recv" dumps
    code = ("import edge.transports.modbus\n"
            "from pymodbus.logging import Log\n"
            "Log.error('Cancel send, because not connected!')\n"
            "Log.error('>>>>> recv: 0x1 0x3')\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=30, check=False)
    assert result.returncode == 0
    assert result.stderr == ""


GPS_ASSET = {"code": "3205082190000003", "class": "2190", "grid": "320508001002003",
             "name": "truck"}


def _nmea(body: str) -> bytes:
    return f"${body}*{nmea.checksum(body)}\r\n".encode()


async def _nmea_server() -> tuple[asyncio.Server, int]:
    async def talk(_r: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            writer.write(b"half a line from before we joined*00\r\n")
            while True:
                writer.write(_nmea("GNGGA,120000.00,3118.6300,N,12037.8120,E,1,09,0.9,12.0,M,"
                                   "0.0,M,,") +
                             _nmea("GNGSA,A,3,01,02,03,04,05,06,07,08,09,,,,1.6,0.9,1.3") +
                             _nmea("GNRMC,120000.00,A,3118.6300,N,12037.8120,E,0.0,0.0,011226,"
                                   ",,A"))
                await writer.drain()
                await asyncio.sleep(0.5)

    server = await asyncio.start_server(talk, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_probe_a_gps_listens_to_nmea_with_fix_quality_and_satellites(
        tmp_path: Path) -> None:
    server, port = await _nmea_server()
    try:
        loaded = write_config(tmp_path, broker_port=1, pki=None, buses=[], devices=[
            {"name": "truck-03", "kind": "gps", "transport": "serial", "model": "nmea",
             "port": f"socket://127.0.0.1:{port}", "asset": GPS_ASSET}])
        result = await asyncio.to_thread(_probe_cli, loaded.path, "truck-03")
    finally:
        server.close()
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"serial socket://127.0.0.1:{port}: NMEA" in out
    assert "<- $GNGGA,120000.00,*,*,*,*,1,09,0.9" in out  # the position is not shown
    assert "3118.6300" not in out
    assert "fix_quality: GPS" in out
    assert "satellites: 9" in out
    assert "fix_mode: 3D" in out
    assert "bad_lines: 1" in out  # the half line


async def test_probe_a_gps_while_its_driver_runs_listens_beside_it() -> None:
    server, port = await _nmea_server()
    driver = GpsSerialDriver(validate(GpsDevice, {
        "name": "truck-03", "kind": "gps", "transport": "serial", "model": "nmea",
        "port": f"socket://127.0.0.1:{port}", "asset": GPS_ASSET}),
        SerialPort(f"socket://127.0.0.1:{port}", 9600))
    run = asyncio.create_task(driver.run(RecordingSink()))
    try:
        # run() holds the port: only then does the probe listen beside it (not a second open)
        await wait_until(lambda: driver._reading, 10, "the driver reading its port")
        with tracing() as trace:
            values = await driver.probe()
        assert values["satellites"] == 9
        assert len(trace.records) >= 6
        assert not run.done()  # the run loop kept the port and kept reading
    finally:
        run.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await run
        server.close()


async def test_probe_a_loudspeaker_shows_its_status_frame(tmp_path: Path) -> None:
    port = free_port()
    sim = TtsSim(port)
    await sim.start()
    try:
        loaded = write_config(tmp_path, broker_port=1, pki=None, buses=[], devices=[
            {"name": "speaker-01", "kind": "loudspeaker", "transport": "serial",
             "model": "syn6288", "port": f"socket://127.0.0.1:{port}", "timeout_s": 0.5,
             "asset": {"code": "3205082105000001", "class": "2105",
                       "grid": "320508001002003", "name": "广播"}}])
        result = await asyncio.to_thread(_probe_cli, loaded.path, "speaker-01")
        sim.dead = True
        dead = await asyncio.to_thread(_probe_cli, loaded.path, "speaker-01")
    finally:
        await sim.stop()
    assert result.returncode == 0, result.stderr
    assert f"serial socket://127.0.0.1:{port}: status frame fd 00 02 21 de" in result.stdout
    assert "<- 41 4f" in result.stdout  # idle
    assert "busy: False" in result.stdout
    assert dead.returncode == EX_FAIL
    assert dead.stderr.startswith("✘ speaker-01 (loudspeaker, syn6288): no reply")
    assert "status frame fd 00 02 21 de" in dead.stderr


def test_run_exits_70_when_a_part_of_the_agent_dies(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   capfd: pytest.CaptureFixture[str]) -> None:
    """A dead outbox writer ends `edge run` with EX_SOFTWARE at once, said in one line."""
    from edge import agent as agent_module

    loaded = write_config(tmp_path, broker_port=1, pki=None, devices=[], buses=[])

    async def dies(self: object, stop: object) -> None:
        msg = "a bug in the store"
        raise ExceptionGroup("agent", [RuntimeError(msg)])

    monkeypatch.setattr(agent_module.Agent, "run", dies)
    assert main(["run", "--config", str(loaded.path)]) == 70
    err = capfd.readouterr().err
    assert "a part of it died" in err
    assert "a bug in the store" in err


async def test_a_probe_never_shows_a_position_bad_checksum_or_gns() -> None:
    """Review finding 5: a GGA with a bad checksum (firefly-II.log sends them) was echoed whole
    in the probe's error, and GNS positions were not blanked at all."""
    async def talk(_r: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while True:
                writer.write(b"$GPGGA,005947.00,3715.6616,N,12157.6709,W,,11,0.8,86.0,M,"
                             b"-30.1,M,,*00\r\n")  # a wrong checksum: firefly-II.log
                writer.write(_nmea("GNGNS,120000.00,3118.6300,N,12037.8120,E,AAN,09,0.9,12.0,"
                                   "0.0,,,V"))
                writer.write(b"garbled$GP,3118.63,N,12037.81*7\r\n")  # no address at all
                await writer.drain()
                await asyncio.sleep(0.5)

    server = await asyncio.start_server(talk, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    driver = GpsSerialDriver(validate(GpsDevice, {
        "name": "truck-03", "kind": "gps", "transport": "serial", "model": "nmea",
        "port": f"socket://127.0.0.1:{port}", "asset": GPS_ASSET}),
        SerialPort(f"socket://127.0.0.1:{port}", 9600))
    try:
        with tracing() as trace:
            values = await driver.probe()
    finally:
        await driver.close()
        server.close()
    shown = repr(trace.records)
    assert values["bad_lines"] >= 2
    assert "GPGGA" in shown  # the sentence type and the error stay visible
    assert "checksum" in shown
    assert "GNGNS,120000.00,*,*,*,*,AAN" in shown
    for digits in ("3715.66", "12157.67", "3118.6", "12037.8"):
        assert digits not in shown, shown
