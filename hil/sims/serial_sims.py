"""Serial devices over TCP (``socket://`` ports): an NMEA GPS and a SYN6288 TTS unit."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import math

from hil.sims import wire


class _TcpSim:
    """Serves each connection with ``_serve`` on 127.0.0.1:``port`` (a ``socket://`` port)."""

    port: int
    name = "sim"

    def __init__(self) -> None:
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    async def start(self) -> None:
        """Listen on 127.0.0.1:port."""

        def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            task = asyncio.get_running_loop().create_task(self._serve(r, w), name=self.name)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        self._server = await asyncio.start_server(handle, "127.0.0.1", self.port)

    async def stop(self) -> None:
        """Stop serving and end every connection."""
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


class GpsSim(_TcpSim):
    """Streams RMC + GGA at ``rate_hz`` for a vehicle driving a circle around a point."""

    def __init__(self, port: int, *, lat: float = 31.3105, lon: float = 120.6302,
                 speed_kmh: float = 30.0, rate_hz: float = 1.0) -> None:
        super().__init__()
        self.name = "sim.gps"
        self.port, self.lat, self.lon = port, lat, lon
        self.speed_kmh, self.rate_hz = speed_kmh, rate_hz
        self.noise = False

    def sentences(self, t_s: float, now: dt.datetime) -> str:
        """Return the sentences for time ``t_s`` into the drive."""
        radius_m = 300.0
        angle = (self.speed_kmh / 3.6) * t_s / radius_m
        lat = self.lat + (radius_m * math.sin(angle)) / 111_320
        lon = self.lon + (radius_m * math.cos(angle)) / (111_320 * math.cos(math.radians(self.lat)))
        course = (math.degrees(angle) + 90) % 360
        return self.rmc(now, lat, lon, knots=self.speed_kmh / 1.852, course_deg=course)

    @staticmethod
    def rmc(when: dt.datetime, lat: float, lon: float, *, knots: float,
            course_deg: float) -> str:
        """Return the RMC a receiver sends for this fix (hil/sims/wire.py, not the agent's)."""
        return wire.nmea_rmc(f"{when:%H%M%S}.{when.microsecond // 10000:02d}",
                             f"{when:%d%m%y}", lat, lon, knots=knots, course_deg=course_deg)

    async def _serve(self, _r: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        t0 = asyncio.get_running_loop().time()
        try:
            writer.write(b"partial,line,from,before,we,joined*00\r\n")
            while True:
                t = asyncio.get_running_loop().time() - t0
                text = self.sentences(t, dt.datetime.now(dt.UTC))
                writer.write(text.encode("ascii"))
                await writer.drain()
                await asyncio.sleep(1 / self.rate_hz)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()



class TtsSim(_TcpSim):
    """A SYN6288-style unit: answers status, speaks for 50 ms per character."""

    def __init__(self, port: int) -> None:
        super().__init__()
        self.name = "sim.tts"
        self.port = port
        self.spoken: list[str] = []
        self.busy_until = 0.0
        self.dead = False

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                head = await reader.readexactly(3)
                if head[0] != wire.SYN_HEADER:
                    continue
                rest = await reader.readexactly(head[1] << 8 | head[2])
                if self.dead:
                    continue
                try:
                    cmd, payload = wire.syn6288_split(head + rest)
                except ValueError:
                    writer.write(wire.SYN_ERROR)
                    continue
                if cmd == wire.SYN_STATUS:
                    writer.write(wire.SYN_BUSY if loop.time() < self.busy_until
                                 else wire.SYN_IDLE)
                elif cmd == wire.SYN_SPEAK:
                    text = wire.syn6288_text(payload)
                    self.spoken.append(text)
                    self.busy_until = loop.time() + 0.05 * len(text)
                    writer.write(b"\x41")
                elif cmd == wire.SYN_STOP:
                    self.busy_until = 0.0
                    writer.write(b"\x41")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

