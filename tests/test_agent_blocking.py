"""Issue 14 finding 7: a light.schedule command's write and fsync do not stall the event loop
(an SD card's fsync takes 10-300 ms; every device, the uplink and the watchdog wait)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from edge.agent import Agent
from edge.drivers.factory import Transports, build_driver
from edge.drivers.streetlight import LightSchedule, StreetlightDriver
from edge.running_devices import RunningDevices
from edge.shape_check import check
from tests.cfg import lamp_device, write_config

SLOW_FSYNC_S = 0.3


async def test_storing_a_schedule_leaves_the_loop_free(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = write_config(tmp_path, broker_port=1, pki=None, devices=[lamp_device("lamp-1",
                          "lamps", 7)], buses=[{"name": "lamps", "type": "modbus_tcp",
                                                "host": "127.0.0.1", "port": 1}])
    agent = Agent(loaded, boot_delay_s=0)
    transports = Transports(loaded.config, base_dir=loaded.base_dir, state=agent._state_store)
    driver = build_driver(loaded.config.devices[0], loaded.config, transports)
    assert isinstance(driver, StreetlightDriver)
    agent.devices = RunningDevices(transports)
    agent.devices.drivers["lamp-1"] = driver
    real_fsync = os.fsync

    def slow_fsync(fd: int) -> None:  # an SD card under write load
        time.sleep(SLOW_FSYNC_S)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", slow_fsync)
    gaps: list[float] = []

    async def ticker() -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    tick = asyncio.create_task(ticker())
    try:
        await asyncio.sleep(0.05)
        params = check(LightSchedule, {"steps": [{"at": "18:00", "on": True}]})
        result = await agent._execute("lamp-1", "light.schedule", params)
        await asyncio.sleep(0.05)
    finally:
        tick.cancel()
        await transports.close()
    assert result == {"steps": 1, "stored": True}
    assert driver.schedule[0].at == "18:00"
    assert (loaded.state_dir / "schedules" / "lamp-1.json").exists()
    assert max(gaps) < SLOW_FSYNC_S / 2, f"the loop stalled {max(gaps):.2f} s"
