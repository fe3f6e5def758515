"""Serial over a real pty pair: NMEA byte by byte, with line noise between sentences; no fix
lost, none duplicated."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import random
import tty

from edge.config_loader import validate
from edge.drivers._codecs import nmea
from edge.drivers.gps import GpsSerialDriver
from edge.kinds.gps import GpsDevice
from edge.transports.serial import SerialPort
from tests.helpers import ObservedPort, wait_event, wait_until
from tests.recording_sink import RecordingSink


def gps_on(path: str, port: SerialPort | None = None) -> GpsSerialDriver:
    device = validate(GpsDevice, {
        "name": "truck-03", "kind": "gps", "transport": "serial", "port": path, "baud": 9600,
        "min_distance_m": 0, "max_interval_s": 1, "asset": {
            "code": "3205082190000003", "class": "2190", "grid": "320508001002003",
            "name": "truck"}})
    return GpsSerialDriver(device, port or SerialPort(path, 9600))


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
    # a last, clean sentence: lines are handled in order, so once its fix is in, every byte
    # before it has been (a late duplicate would already be here)
    last = nmea.rmc(start + dt.timedelta(seconds=len(sentences)), 31.3 + len(sentences) * 1e-4,
                    120.6, 20.0, 90.0)
    sentences.append(last)
    stream += last.encode()
    port = ObservedPort(path, 9600)
    driver = gps_on(path, port)
    sink = RecordingSink()
    task = asyncio.create_task(driver.run(sink))
    try:
        await wait_event(port.opened, 10, "the driver opening the pty")
        for byte in stream:
            os.write(master, bytes([byte]))
            if byte == 0x0A:
                await asyncio.sleep(0)  # let the reader run between lines
        last_utc = (start + dt.timedelta(seconds=len(sentences) - 1)).isoformat()
        await wait_until(lambda: any(r.values["fix_utc"] == last_utc for r in sink.readings),
                         10, "the last sentence's fix")
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
