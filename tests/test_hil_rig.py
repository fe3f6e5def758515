"""Hardware in the loop: every enabled device of a rig answers and decodes plausibly.

Run with ``pytest tests/test_hil_rig.py --hil-rig rig.yaml``; skipped without it (CI has
no street furniture). The rig's devices.yaml is an ordinary one pointing at real ports. The
test prints every device it probed with the values read (and the wire), on the terminal even
without ``-s``; a failure leads with
the device and what was wrong. GPS receivers and loudspeakers are probed too; a device that
cannot be probed from here (an MQTT device reports when it wakes) is listed as skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from edge.config_loader import load_config
from edge.drivers.factory import Transports, build_driver
from edge.drivers.probe_trace import ProbeTrace, labelled, tracing
from edge.errors import EdgeError
from hil.broker import free_port
from hil.sims.modbus_sim import ModbusTcpSim, tilt_unit
from hil.sims.serial_sims import TtsSim
from tests.cfg import tilt_device, write_config

PROBE_TIMEOUT_S = 15.0


@dataclass
class RigReport:
    """What a rig run saw: one line per device, failures first by device."""

    probed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def text(self) -> str:
        """Return the failures, then every device probed and skipped."""
        return "\n".join([*self.failures, "", "probed:", *self.probed, "skipped:",
                          *(self.skipped or ["  (none)"])])


def _wire(trace: ProbeTrace) -> list[str]:
    return [f"      {r.link}{f' unit {r.unit}' if r.unit is not None else ''}: {r.request} "
            f"{'✘ ' + r.error if r.error else '<- ' + r.raw}" for r in trace.records[:6]]


def _implausible(kind: str, values: Mapping[str, object]) -> str:
    numbers = [v for v in values.values() if isinstance(v, float)]
    if not all(math.isfinite(v) for v in numbers):
        return f"non-finite values {values}"
    if kind == "manhole_tilt":
        tilt = values.get("tilt_deg")
        if not isinstance(tilt, int | float) or not 0 <= tilt <= 180:
            return f"tilt_deg {tilt!r} out of 0..180"
    if kind == "gps" and values.get("sentences") == 0:
        return "no valid NMEA sentence"
    if kind not in ("gps", "loudspeaker") and not numbers:
        return f"no numeric value in {values}"
    return ""


async def probe_rig(path: Path) -> RigReport:
    """Probe every enabled device of the rig's devices.yaml once."""
    loaded = load_config(path)
    cfg = loaded.config
    transports = Transports(cfg, base_dir=loaded.base_dir)
    report = RigReport()
    try:
        for device in cfg.devices:
            where = ", ".join(x for x in (device.kind, device.model,
                                          f"bus {device.bus}" if device.bus else "",
                                          f"unit {device.unit_id}" if device.unit_id else "",
                                          device.port or "") if x)
            if not device.enabled:
                report.skipped.append(f"  {device.name} ({where}): disabled")
                continue
            if device.transport == "mqtt":
                report.skipped.append(f"  {device.name} ({where}): MQTT devices report when "
                                      "they wake; not probed")
                continue
            driver = build_driver(device, cfg, transports)
            trace = ProbeTrace()
            try:
                with tracing() as trace:
                    async with asyncio.timeout(PROBE_TIMEOUT_S):
                        values = await driver.probe()
            except (EdgeError, TimeoutError) as exc:
                detail = getattr(exc, "detail", "") or str(exc) or \
                    f"no answer in {PROBE_TIMEOUT_S:g} s"
                report.failures.append("\n".join([f"{device.name} ({where}): {detail}",
                                                  *_wire(trace)]))
                continue
            finally:
                with contextlib.suppress(Exception):
                    await driver.close()
            shown = ", ".join(f"{k} {labelled(k, v)}" for k, v in values.items())
            report.probed.append(f"  {device.name} ({where}): {shown}")
            wrong = _implausible(device.kind, values)
            if wrong:
                report.failures.append(f"{device.name} ({where}): implausible: {wrong}")
    finally:
        await transports.close()
    return report


async def test_every_device_of_the_rig_answers(hil_rig: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    report = await probe_rig(hil_rig)
    # on the terminal without -s: the technician wants the list on a pass too (issue 21 f10)
    with capsys.disabled():
        print(f"\n---- rig {hil_rig} ----\n{report.text()}")
    assert report.probed or report.failures, "the rig config has no enabled device"
    assert not report.failures, report.text()


async def test_the_rig_run_lists_its_devices_without_dash_s(tmp_path: Path) -> None:
    """A passing rig run shows what it probed on the terminal, not only with -s or -rA."""
    modbus_port = free_port()
    sim = ModbusTcpSim({80: tilt_unit(tilt_x_deg=4.5)}, modbus_port)
    await sim.start()
    try:
        loaded = write_config(tmp_path, broker_port=1, pki=None, buses=[
            {"name": "covers", "type": "modbus_tcp", "host": "127.0.0.1",
             "port": modbus_port, "timeout_s": 0.5}], devices=[
            tilt_device("manhole-12", "covers", 80)])
        result = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly",
                             f"{Path(__file__)}::test_every_device_of_the_rig_answers",
                             "--hil-rig", str(loaded.path)],
            cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True,
            timeout=120, check=False)
    finally:
        await sim.stop()
    assert result.returncode == 0, result.stdout[-3000:]
    assert "manhole-12 (manhole_tilt, witmotion, bus covers, unit 80): tilt_x_deg 4.5 °" in \
        result.stdout, result.stdout[-3000:]


async def test_the_rig_report_on_a_simulated_rig(tmp_path: Path) -> None:
    """The rig test's own behaviour, on simulators: what it lists and how it fails."""
    modbus_port, tts_port = free_port(), free_port()
    dead = tilt_unit()
    dead.fault = "dead"
    sim = ModbusTcpSim({80: tilt_unit(tilt_x_deg=4.5), 81: dead}, modbus_port)
    tts = TtsSim(tts_port)
    await sim.start()
    await tts.start()
    try:
        loaded = write_config(tmp_path, broker_port=1, pki=None, buses=[
            {"name": "covers", "type": "modbus_tcp", "host": "127.0.0.1",
             "port": modbus_port, "timeout_s": 0.3, "retries": 0}], devices=[
            tilt_device("manhole-12", "covers", 80),
            tilt_device("manhole-13", "covers", 81),
            tilt_device("manhole-14", "covers", 82, enabled=False),
            {"name": "speaker-01", "kind": "loudspeaker", "transport": "serial",
             "model": "syn6288", "port": f"socket://127.0.0.1:{tts_port}", "timeout_s": 0.5,
             "asset": {"code": "3205082105000001", "class": "2105",
                       "grid": "320508001002003", "name": "广播"}}])
        report = await probe_rig(loaded.path)
    finally:
        await tts.stop()
        await sim.stop()
    assert report.failures[0].startswith(
        "manhole-13 (manhole_tilt, witmotion, bus covers, unit 81): unit 81: no answer in 0.3 s")
    assert "FC3 read holding registers 0x003D x4 ✘" in report.failures[0]
    assert len(report.failures) == 1
    probed = "\n".join(report.probed)
    assert "manhole-12 (manhole_tilt, witmotion, bus covers, unit 80): tilt_x_deg 4.5 °" in probed
    assert "speaker-01 (loudspeaker, syn6288, socket://127.0.0.1:" in probed
    assert "busy False" in probed
    assert report.skipped == ["  manhole-14 (manhole_tilt, witmotion, bus covers, unit 82): "
                              "disabled"]


def test_every_modbus_model_has_a_simulated_slave() -> None:
    """A Modbus model added to READ_PLANS without a simulator would leave the demo and the rig
    unable to run it."""
    from edge.drivers._codecs.plans import READ_PLANS
    from hil.sims.modbus_sim import SimUnit
    from hil.sims.runner import SIM_UNITS

    assert set(SIM_UNITS) == set(READ_PLANS)
    for model, make in SIM_UNITS.items():
        assert isinstance(make(), SimUnit), model
