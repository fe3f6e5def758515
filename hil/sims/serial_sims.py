"""Serial devices over TCP (``socket://`` ports): an NMEA GPS and a SYN6288 TTS unit."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import math
from dataclasses import dataclass

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


@dataclass(frozen=True, slots=True)
class RouteFix:
    """One fix of a simulated route: seconds into the drive, position, speed and course."""

    t_s: float
    lat: float
    lon: float
    speed_kmh: float
    course_deg: float


@dataclass(frozen=True, slots=True)
class Leg:
    """Drive through ``points`` ([lat, lon] waypoints) at ``speed_kmh``."""

    points: tuple[tuple[float, float], ...]
    speed_kmh: float


def offset(lat: float, lon: float, east_m: float, north_m: float) -> tuple[float, float]:
    """Return the point ``east_m``/``north_m`` metres from (lat, lon) (a city-sized plane)."""
    return (lat + north_m / 111_320,
            lon + east_m / (111_320 * math.cos(math.radians(lat))))


def route(legs: list[Leg], *, rate_hz: float = 1.0,
          outages: tuple[tuple[float, float], ...] = ()) -> list[RouteFix]:
    """Return the fixes a receiver reports driving ``legs`` one after another.

    A fix every ``1 / rate_hz`` s along the way; none while ``t_s`` is inside one of
    ``outages`` (``(from_s, to_s)``: a tunnel, an underpass, a receiver reset). Legs join
    where they meet: a jump between legs is driven straight at the next leg's speed.
    """
    fixes: list[RouteFix] = []
    step_s = 1 / rate_hz
    t_s = 0.0
    path: list[tuple[float, float, float]] = []  # (lat, lon, speed) waypoints
    for leg in legs:
        path += [(lat, lon, leg.speed_kmh) for lat, lon in leg.points]
    for (lat0, lon0, _), (lat1, lon1, speed) in itertools.pairwise(path):
        north = (lat1 - lat0) * 111_320
        east = (lon1 - lon0) * 111_320 * math.cos(math.radians(lat0))
        length = math.hypot(north, east)
        if length < 1e-9:
            continue
        course = math.degrees(math.atan2(east, north)) % 360
        duration = length / (speed / 3.6)
        # the first fix of this edge: where the clock has got to, past the edge's start
        start = t_s
        k = math.ceil(start / step_s - 1e-9)
        while k * step_s <= start + duration:
            at = k * step_s
            frac = (at - start) / duration
            if not any(a <= at < b for a, b in outages):
                fixes.append(RouteFix(at, lat0 + (lat1 - lat0) * frac,
                                      lon0 + (lon1 - lon0) * frac, speed, course))
            k += 1
        t_s = start + duration
    return fixes


class GpsSim(_TcpSim):
    """Streams RMC + GGA + GSA at ``rate_hz`` for a vehicle driving a circle around a point.

    Faults (``python -m hil fault``, sent in-band as ``$PSIMF,<mode>``): ``dead`` (silent),
    ``no_fix`` (RMC status V, GGA quality 0), ``none``.
    """

    FAULTS = ("none", "dead", "no_fix")

    def __init__(self, port: int, *, lat: float = 31.3105, lon: float = 120.6302,
                 speed_kmh: float = 30.0, rate_hz: float = 1.0) -> None:
        super().__init__()
        self.name = "sim.gps"
        self.port, self.lat, self.lon = port, lat, lon
        self.speed_kmh, self.rate_hz = speed_kmh, rate_hz
        self.noise = False
        # a simulated route replaces the circle: played once, ``speedup`` times real time,
        # then the receiver keeps reporting the last position standing still
        self.route: list[RouteFix] | None = None
        self.speedup = 1.0
        self.route_start: dt.datetime | None = None  # the first fix's time (None: now)
        # False: a receiver that has not found a fix (indoors, no antenna): RMC status V,
        # GGA quality 0, GSA mode 1, no satellites
        self.fix = True
        self.silent = False  # fault `dead`: connected, but sends nothing

    def set_fault(self, mode: str) -> None:
        """Switch to fault ``mode`` (one of ``FAULTS``; ValueError otherwise)."""
        if mode not in self.FAULTS:
            raise ValueError(mode)
        self.silent, self.fix = mode == "dead", mode != "no_fix"

    async def _control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Take ``$PSIMF,<mode>`` lines from a connection (the fault switch); answer ok/bad."""
        prefix = f"${wire.SIM_FAULT_SENTENCE},".encode("ascii")
        while True:
            line = await reader.readline()
            if not line:
                return
            if line.startswith(prefix):
                mode = line[len(prefix):].split(b"*")[0].decode("ascii", "replace")
                try:
                    self.set_fault(mode)
                except ValueError:
                    answer = "bad"
                else:
                    answer = "ok"
                writer.write(wire.nmea_sentence(f"{wire.SIM_FAULT_SENTENCE},{answer}")
                             .encode("ascii"))

    def sentences(self, t_s: float, now: dt.datetime) -> str:
        """Return the sentences for time ``t_s`` into the drive."""
        radius_m = 300.0
        angle = (self.speed_kmh / 3.6) * t_s / radius_m
        lat = self.lat + (radius_m * math.sin(angle)) / 111_320
        lon = self.lon + (radius_m * math.cos(angle)) / (111_320 * math.cos(math.radians(self.lat)))
        # the course is a compass bearing (clockwise from north) of the direction of travel,
        # not the maths angle of the position: counter-clockwise on the circle, the velocity
        # is (east, north) = (-sin, cos) of the angle, so the bearing is -angle
        course = math.degrees(math.atan2(-math.sin(angle), math.cos(angle))) % 360
        return self.burst(now, lat, lon, knots=self.speed_kmh / 1.852, course_deg=course)

    SATELLITES = (3, 7, 8, 10, 14, 16, 21, 27, 30)  # PRNs in use: 9 satellites, HDOP 0.9

    @staticmethod
    def rmc(when: dt.datetime, lat: float, lon: float, *, knots: float,
            course_deg: float, fix: bool = True) -> str:
        """Return the RMC a receiver sends for this fix (hil/sims/wire.py, not the agent's)."""
        return wire.nmea_rmc(f"{when:%H%M%S}.{when.microsecond // 10000:02d}",
                             f"{when:%d%m%y}", lat, lon, knots=knots, course_deg=course_deg,
                             fix=fix)

    def burst(self, when: dt.datetime, lat: float, lon: float, *, knots: float,
              course_deg: float) -> str:
        """Return what a receiver sends each second for this fix: RMC, GGA and GSA.

        Built by hil/sims/wire.py, never the agent's codecs (a test enforces it).
        """
        hhmmss = f"{when:%H%M%S}.{when.microsecond // 10000:02d}"
        used = list(self.SATELLITES) if self.fix else []
        dop = (1.6, 0.9, 1.3) if self.fix else (99.9, 99.9, 99.9)
        return (self.rmc(when, lat, lon, knots=knots, course_deg=course_deg, fix=self.fix)
                + wire.nmea_gga(hhmmss, lat, lon, satellites=len(used), hdop=dop[1],
                                fix=self.fix)
                + wire.nmea_gsa(used, pdop=dop[0], hdop=dop[1], vdop=dop[2], fix=self.fix))

    async def _play(self, writer: asyncio.StreamWriter, fixes: list[RouteFix]) -> None:
        loop = asyncio.get_running_loop()
        t0, start = loop.time(), self.route_start or dt.datetime.now(dt.UTC)
        for fix in fixes:
            await asyncio.sleep(max(0.0, t0 + fix.t_s / self.speedup - loop.time()))
            when = start + dt.timedelta(seconds=fix.t_s)
            writer.write(self.burst(when, fix.lat, fix.lon, knots=fix.speed_kmh / 1.852,
                                    course_deg=fix.course_deg).encode("ascii"))
            await writer.drain()
        last = fixes[-1]
        while True:
            await asyncio.sleep(1 / self.rate_hz)
            writer.write(self.burst(dt.datetime.now(dt.UTC), last.lat, last.lon, knots=0.0,
                                    course_deg=last.course_deg).encode("ascii"))
            await writer.drain()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        control = asyncio.create_task(self._control(reader, writer),
                                      name=f"{self.name}-control")
        try:
            await self._stream(writer)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            control.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await control
            writer.close()

    async def _stream(self, writer: asyncio.StreamWriter) -> None:
        t0 = asyncio.get_running_loop().time()
        writer.write(b"partial,line,from,before,we,joined*00\r\n")
        if self.route:
            await self._play(writer, self.route)
        while True:
            t = asyncio.get_running_loop().time() - t0
            if not self.silent:
                writer.write(self.sentences(t, dt.datetime.now(dt.UTC)).encode("ascii"))
                await writer.drain()
            await asyncio.sleep(1 / self.rate_hz)


class TtsSim(_TcpSim):
    """A SYN6288-style unit: answers status, speaks for 50 ms per character.

    Faults (``python -m hil fault``, sent in-band as a ``SIM_CONTROL`` frame): ``dead``
    (answers nothing), ``none``.
    """

    FAULTS = ("none", "dead")

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
                try:
                    cmd, payload = wire.syn6288_split(head + rest)
                except ValueError:
                    if not self.dead:
                        writer.write(wire.SYN_ERROR)
                    continue
                if cmd == wire.SIM_CONTROL:  # the fault switch works on a dead unit too
                    mode = payload.decode("ascii", "replace")
                    if mode in self.FAULTS:
                        self.dead = mode == "dead"
                    writer.write(wire.SYN_OK if mode in self.FAULTS else wire.SYN_ERROR)
                    await writer.drain()
                    continue
                if self.dead:
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

