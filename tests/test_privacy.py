"""Positions are personal data (reliability.md S12): never logged at INFO or above."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest

from edge.agent import Agent
from hil.broker import Mosquitto, free_port
from hil.sims.serial_sims import GpsSim
from tests.cfg import write_config


async def test_no_raw_positions_in_logs(tmp_path: Path, plain_broker: Mosquitto,
                                        caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()
    gps = GpsSim(port, lat=31.3105, lon=120.6302, rate_hz=10)
    await gps.start()
    loaded = write_config(tmp_path, broker_port=plain_broker.port, pki=None, buses=[], devices=[
        {"name": "truck-03", "kind": "gps", "transport": "serial",
         "port": f"socket://127.0.0.1:{port}", "min_distance_m": 1, "max_interval_s": 1,
         "asset": {"code": "3205082190000003", "class": "2190", "grid": "320508001002003",
                   "name": "环卫车"}}])
    agent = Agent(loaded, boot_delay_s=0)
    stop = asyncio.Event()
    caplog.set_level(logging.INFO)
    run = asyncio.create_task(agent.run(stop))
    try:
        await asyncio.wait_for(agent.ready.wait(), 10)
        deadline = time.monotonic() + 10
        while agent.drivers["truck-03"].stats.polls_ok < 5:
            assert time.monotonic() < deadline, "no positions"
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        await run
        await gps.stop()
    for record in caplog.records:
        if record.levelno >= logging.INFO:
            text = record.getMessage()
            assert "31.31" not in text
            assert "120.63" not in text
            assert "3118." not in text  # NMEA ddmm.mmmm form
