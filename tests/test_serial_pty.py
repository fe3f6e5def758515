"""Serial over a real pty pair: NMEA byte by byte, with line noise between sentences; no fix
lost, none duplicated."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import random
import time
import tty

from edge.config import GpsDevice
from edge.drivers._codecs import nmea
from edge.drivers._serial import SerialPort
from edge.drivers.gps import GpsDriver
from tests.recording_sink import RecordingSink


def gps_on(path: str) -> GpsDriver:
    device = GpsDevice.model_validate({
        "name": "truck-03", "kind": "gps", "transport": "serial", "port": path, "baud": 9600,
        "min_distance_m": 0, "max_interval_s": 1, "asset": {
            "code": "3205082190000003", "class": "2190", "grid": "320508001002003",
            "name": "truck"}})
    return GpsDriver(device, SerialPort(path, 9600))


async def test_byte_at_a_time_with_noise_loses_and_duplicates_nothing() -> None:
    master, slave = os.openpty()
    tty.setraw(slave)
    path = os.ttyname(slave)
    rng = random.Random(3)
    start = dt.datetime(2026, 11, 26, 4, 0, tzinfo=dt.UTC)
    sentences = [nmea.rmc(start + dt.timedelta(seconds=i), 31.3 + i * 1e-4, 120.6, 20.0, 90.0)
                 for i in range(40)]
    stream = b"garbage-before-the-first-line"
    for s in sentences:
        stream += s.encode()
        if rng.random() < 0.5:  # line noise: random bytes, a cut sentence, a bad checksum
            stream += rng.choice([bytes(rng.randrange(256) for _ in range(7)) + b"\r\n",
                                  b"$GPRMC,1200\r\n", s.encode().replace(b"*", b"*0", 1)])
    driver = gps_on(path)
    sink = RecordingSink()
    task = asyncio.create_task(driver.run(sink))
    try:
        await asyncio.sleep(0.3)  # the driver has the port open
        for byte in stream:
            os.write(master, bytes([byte]))
            if byte == 0x0A:
                await asyncio.sleep(0)  # let the reader run between lines
        deadline = time.monotonic() + 10
        while len(sink.readings) < len(sentences):
            assert time.monotonic() < deadline, f"{len(sink.readings)} of {len(sentences)}"
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # nothing more may arrive
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        os.close(master)
        os.close(slave)
    times = [r.values["fix_utc"] for r in sink.readings]
    assert len(times) == len(sentences), "a fix was lost or duplicated"
    assert len(set(times)) == len(times)
    assert driver.rejected > 0, "the noise was not seen as noise"
