"""GPS probe wording (issue 14 re-test f14 #7): a port flooding bytes without a newline is not
"silent", and a receiver without GSA gets the fix mode the tracker would give it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

import pytest

from edge.config_loader import validate
from edge.drivers._codecs import nmea
from edge.drivers.gps import PROBE_LISTEN_S, GpsSerialDriver
from edge.errors import DeviceUnavailableError
from edge.kinds.gps import GpsDevice
from edge.ops.status_page import probe_verdict
from edge.transports.serial import SerialPort

ASSET = {"code": "3205082190000003", "class": "2190", "grid": "320508001002003",
         "name": "巡逻车 3"}
Talk = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _probe(talk: Talk) -> dict[str, object]:
    server = await asyncio.start_server(talk, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    driver = GpsSerialDriver(validate(GpsDevice, {
        "name": "truck-07", "kind": "gps", "transport": "serial", "model": "nmea",
        "port": f"socket://127.0.0.1:{port}", "asset": ASSET}),
        SerialPort(f"socket://127.0.0.1:{port}", 9600))
    try:
        return await driver.probe()
    finally:
        await driver.close()
        server.close()


async def test_garbage_without_newlines_is_named_not_called_silence() -> None:
    async def flood(_r: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while True:
                writer.write(b"\xa5\x5a garbage at the wrong baud rate " * 512)
                await writer.drain()
                await asyncio.sleep(0.01)

    start = time.monotonic()
    with pytest.raises(DeviceUnavailableError) as info:
        await _probe(flood)
    took_s = time.monotonic() - start
    why = str(info.value)
    assert "silent" not in why, why
    assert "no NMEA line:" in why and "bytes without a newline" in why, why
    assert f"in {PROBE_LISTEN_S:g} s" in why or " in 3." in why or " in 2.9" in why, why
    assert took_s >= PROBE_LISTEN_S - 0.2  # it listened the whole time, not 1.08 s


def _line(body: str) -> bytes:
    return f"${body}*{nmea.checksum(body)}\r\n".encode()


@pytest.mark.parametrize(("altitude", "mode"), [("12.0", "3D"), ("", "2D")])
async def test_an_rmc_gga_receiver_without_gsa_gets_the_trackers_mode(altitude: str,
                                                                      mode: str) -> None:
    async def talk(_r: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while True:
                writer.write(_line("GPRMC,120000.00,A,3118.6300,N,12037.8120,E,0.0,0.0,"
                                   "011226,,,A"))
                writer.write(_line(f"GPGGA,120000.00,3118.6300,N,12037.8120,E,1,09,0.9,"
                                   f"{altitude},M,0.0,M,,"))
                await writer.drain()
                await asyncio.sleep(0.3)

    values = await _probe(talk)
    assert values["fix_mode"] == mode, values
    assert values["fix_quality"] == "GPS"
    assert probe_verdict(values) == ("ok", "")
