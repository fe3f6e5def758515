"""NMEA 0183 (firmware_notes/nmea-gnss.md): sentences in, fixes out. Pure.

Dispatch is on the sentence type (last three letters), never on the talker: GP, GN, GL, GA,
GB and BD all mean the same sentence (design/devices.md §3.1).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass

TALKERS = frozenset({"GP", "GN", "GL", "GA", "GB", "BD", "GQ", "GI"})
MAX_LEN = 82 + 10  # the standard says 82; some receivers run a little over


@dataclass(frozen=True, slots=True)
class Sentence:
    """A checked sentence: talker, type and fields (the checksum removed)."""

    talker: str
    type: str
    fields: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Fix:
    """A valid position at a UTC instant."""

    utc: dt.datetime
    lat: float
    lon: float
    speed_kmh: float | None
    course_deg: float | None
    mode: int  # 2 = 2D, 3 = 3D (gpsd's TPV mode)
    source: str  # sentence type that completed it


def parse_sentence(text: str) -> Sentence:
    """Check and split one sentence; raise ValueError when malformed or the checksum is wrong."""
    text = text.strip()
    start = text.rfind("$")
    if start < 0:
        raise ValueError("no '$'")
    text = text[start:]
    if len(text) > MAX_LEN:
        raise ValueError(f"sentence too long ({len(text)} chars)")
    body, star, given = text[1:].partition("*")
    if not star or len(given) != 2:
        raise ValueError("missing checksum")
    calc = 0
    for ch in body:
        calc ^= ord(ch)
    try:
        given_value = int(given, 16)
    except ValueError as exc:
        raise ValueError(f"bad checksum {given!r}") from exc
    if given_value != calc:
        raise ValueError(f"checksum {given} != {calc:02X}")
    if not body.isascii() or not body.isprintable():
        raise ValueError("non-printable characters")
    head, *fields = body.split(",")
    if len(head) != 5 or not head.isalpha():
        raise ValueError(f"bad address {head!r}")
    return Sentence(head[:2], head[2:], tuple(fields))


# NMEA numbers are plain decimals; float() would also take "1E303", "NAN" and "inf"
_DECIMAL = re.compile(r"-?\d+(\.\d*)?")
_TIME = re.compile(r"\d{6}(\.\d*)?")


def _coord(value: str, hemi: str, degree_digits: int) -> float:
    if not value or hemi not in ("N", "S", "E", "W"):
        raise ValueError("empty coordinate")
    if not _DECIMAL.fullmatch(value) or value.startswith("-"):
        raise ValueError(f"bad coordinate {value!r}")
    degrees = int(value[:degree_digits])
    minutes = float(value[degree_digits:])
    if minutes >= 60:
        raise ValueError(f"minutes out of range: {value}")
    result = degrees + minutes / 60
    return -result if hemi in ("S", "W") else result


def _time(value: str) -> dt.time:
    if not _TIME.fullmatch(value):
        raise ValueError(f"bad time {value!r}")
    micro = round(float("0" + value[6:]) * 1e6) if len(value) > 6 else 0
    return dt.time(int(value[0:2]), int(value[2:4]), int(value[4:6]), min(micro, 999_999))


def _date(value: str) -> dt.date:
    if len(value) != 6 or not value.isdigit():
        raise ValueError(f"bad date {value!r}")
    day, month, year = int(value[0:2]), int(value[2:4]), int(value[4:6])
    # two-digit year: 80-99 → 1980-1999 (GPS epoch), else 20xx (devices.md §3.1 pitfall 3)
    return dt.date(1900 + year if year >= 80 else 2000 + year, month, day)


def _float(value: str) -> float | None:
    if not value:
        return None
    if not _DECIMAL.fullmatch(value):
        raise ValueError(f"bad number {value!r}")
    return float(value)


@dataclass(slots=True)
class _Cycle:
    """What one receiver cycle (one epoch, one time of day) said so far."""

    time: dt.time | None = None
    rmc: tuple[dt.date, float, float, float | None, float | None] | None = None  # valid only
    rmc_void: bool = False
    gga: tuple[float, float, bool] | None = None  # lat, lon, has altitude (valid only)
    gsa_mode: int = 0  # the highest 2/3 any GSA of this cycle reported
    vtg: tuple[float | None, float | None] = (None, None)  # km/h, course
    last_key: str = ""  # address of the last sentence fed (learns the cycle ender)


_Apply = Callable[[_Cycle], None]
_TIMED = {"RMC": 0, "GGA": 0, "GLL": 4, "GNS": 0}  # sentence type → index of its UTC field


class NmeaTracker:
    """Turns sentences into fixes: one fix per receiver cycle, decided from that cycle alone.

    A cycle is every sentence of one epoch: it ends when a sentence carries another time, or
    (once learned) when the receiver's last sentence of a cycle arrives, as gpsd does. The
    mode is the cycle's own GSA (2 or 3), else 3 for a GGA with altitude, else 2: GSA often
    comes after GGA, and a fix taken at RMC knew neither (issue 14 #3,
    firmware_notes/nmea-gnss.md#cycles). ``flush()`` returns the last cycle of a stream.
    """

    def __init__(self) -> None:
        self._date: dt.date | None = None
        self._last_time: dt.time | None = None
        self.no_fix = 0
        self.gsa_mode = 0  # 1 no fix, 2 2D, 3 3D (0: no GSA seen) — last GSA, for status
        self.hdop: float | None = None
        self._cycle = _Cycle()
        self._ender: str | None = None  # the address that has ended the last two cycles
        self._ender_candidate: str | None = None

    @property
    def pending(self) -> bool:
        """Return whether a cycle is in progress (``flush()`` would close it)."""
        return self._cycle.time is not None

    def feed(self, s: Sentence) -> Fix | None:
        """Add ``s``; return the fix of a cycle it completes; ValueError on malformed fields.

        A malformed sentence is refused before it touches anything: the cycle in progress
        stays as it was (and is not closed by the bad sentence's time).
        """
        index = _TIMED.get(s.type)
        when = _time(s.fields[index]) if index is not None and len(s.fields) > index and \
            s.fields[index] else None
        parse = {"RMC": self._rmc, "GGA": self._gga, "VTG": self._vtg_sentence,
                 "GSA": self._gsa}.get(s.type)
        apply = parse(s.fields) if parse is not None else None
        done: Fix | None = None
        if when is not None:
            if self._cycle.time is not None and when != self._cycle.time:
                done = self._close(learn=True)
            self._cycle.time = when
        if apply is not None:
            apply(self._cycle)
        key = s.talker + s.type
        if s.type == "GSV":  # multi-part: only the last part can end a cycle
            key += "*" if len(s.fields) > 1 and s.fields[0] == s.fields[1] else "-"
        self._cycle.last_key = key
        if done is None and key == self._ender and self._cycle.time is not None:
            done = self._close(learn=False)
        return done

    def flush(self) -> Fix | None:
        """Close the cycle in progress (the end of a stream, or a receiver gone quiet)."""
        return self._close(learn=False) if self._cycle.time is not None else None

    def _close(self, *, learn: bool) -> Fix | None:
        cycle, self._cycle = self._cycle, _Cycle()
        if learn:  # the same last sentence twice in a row: the receiver's cycle ender
            if cycle.last_key == self._ender_candidate:
                self._ender = cycle.last_key
            self._ender_candidate = cycle.last_key
        return self._fix(cycle)

    def _fix(self, c: _Cycle) -> Fix | None:
        assert c.time is not None
        if c.rmc is not None:
            day = c.rmc[0]
        elif self._date is not None:
            day = self._date
            if self._last_time is not None and c.time < self._last_time and \
                    self._last_time.hour == 23 and c.time.hour == 0:
                day += dt.timedelta(days=1)  # midnight rollover before the next RMC
        else:
            day = None
        if day is None or (c.rmc is None and c.gga is None):
            self.no_fix += 1  # no position, or a GGA before any date
            return None
        self._date, self._last_time = day, c.time
        if c.gga is not None:
            lat, lon, has_alt = c.gga
            source = "GGA"
        else:
            assert c.rmc is not None
            lat, lon, _knots, _course = c.rmc[1:]
            has_alt, source = False, "RMC"
        mode = cycle_mode(c.gsa_mode, has_alt=has_alt)
        if c.rmc is not None and c.rmc[3] is not None:
            speed_kmh: float | None = round(c.rmc[3] * 1.852, 4)
        else:
            speed_kmh = c.vtg[0]
        course = c.rmc[4] if c.rmc is not None and c.rmc[4] is not None else c.vtg[1]
        return Fix(dt.datetime.combine(day, c.time, dt.UTC), lat, lon, speed_kmh, course, mode,
                   source)

    # Each parser checks a sentence and returns how it changes a cycle (applied only once the
    # whole sentence is known good); ValueError on a malformed field.

    def _rmc(self, f: tuple[str, ...]) -> _Apply:
        if len(f) < 9:
            return _nothing
        mode = f[11] if len(f) > 11 else "A"
        if not f[0] or not f[8] or f[1] != "A" or mode == "N":
            return _void_rmc  # RMC V is void, its date and time too
        date = _date(f[8])
        lat, lon = _coord(f[2], f[3], 2), _coord(f[4], f[5], 3)
        if abs(lat) < 1e-6 and abs(lon) < 1e-6:
            raise ValueError("0,0 fake fix")  # null island with status A
        rmc = (date, lat, lon, _float(f[6]), _float(f[7]))

        def apply(c: _Cycle) -> None:
            c.rmc = rmc
        return apply

    def _vtg_sentence(self, f: tuple[str, ...]) -> _Apply:
        if len(f) < 7:
            return _nothing
        vtg = (_float(f[6]), _float(f[0]))  # km/h and true course: GGA carries neither

        def apply(c: _Cycle) -> None:
            c.vtg = vtg
        return apply

    def _gsa(self, f: tuple[str, ...]) -> _Apply:
        if len(f) < 2:
            return _nothing
        mode = int(f[1]) if f[1] in ("1", "2", "3") else 0
        hdop = _float(f[15]) if len(f) > 15 else None

        def apply(c: _Cycle) -> None:
            self.gsa_mode, self.hdop = mode, hdop
            if mode >= 2:  # multi-constellation receivers send one GSA per system
                c.gsa_mode = max(c.gsa_mode, mode)
        return apply

    def _gga(self, f: tuple[str, ...]) -> _Apply:
        if len(f) < 6 or f[5] not in ("1", "2", "4", "5") or not f[0]:
            return _nothing
        lat, lon = _coord(f[1], f[2], 2), _coord(f[3], f[4], 3)
        if abs(lat) < 1e-6 and abs(lon) < 1e-6:
            raise ValueError("0,0 fake fix")
        has_alt = len(f) > 8 and _float(f[8]) is not None  # no altitude: 2D
        gga = (lat, lon, has_alt)

        def apply(c: _Cycle) -> None:
            c.gga = gga
        return apply


def _nothing(_c: _Cycle) -> None:
    return None


def _void_rmc(c: _Cycle) -> None:
    c.rmc_void = True


def checksum(body: str) -> str:
    """Return the two-hex-digit checksum of a sentence body (between $ and *)."""
    calc = 0
    for ch in body:
        calc ^= ord(ch)
    return f"{calc:02X}"


def rmc(when: dt.datetime, lat: float, lon: float, knots: float, course: float,
        talker: str = "GN") -> str:
    """Return an RMC sentence for a valid fix (simulators, tests)."""
    la, lo = abs(lat), abs(lon)
    body = (f"{talker}RMC,{when:%H%M%S}.{when.microsecond // 10000:02d},A,"
            f"{int(la):02d}{(la - int(la)) * 60:09.6f},{'N' if lat >= 0 else 'S'},"
            f"{int(lo):03d}{(lo - int(lo)) * 60:09.6f},{'E' if lon >= 0 else 'W'},"
            f"{knots:.3f},{course:.2f},{when:%d%m%y},,,A")
    return f"${body}*{checksum(body)}\r\n"


# GGA field 6, fix quality (firmware_notes/nmea-gnss.md); shown by `edge probe`
GGA_QUALITY = {"0": "no fix", "1": "GPS", "2": "DGPS", "3": "PPS", "4": "RTK fixed",
               "5": "RTK float", "6": "dead reckoning", "7": "manual", "8": "simulation"}


def receiver_status(s: Sentence) -> dict[str, str | int | float | None]:
    """Return what a GGA or GSA says about the receiver (fix quality, satellites, mode)."""
    f = s.fields
    if s.type == "GGA" and len(f) >= 8:
        sats = f[6] if f[6].isdigit() and len(f[6]) <= 2 else None
        return {"fix_quality": GGA_QUALITY.get(f[5], f"unknown ({f[5][:4]!r})"),
                "satellites": int(sats) if sats is not None else None, "hdop": _float(f[7])}
    if s.type == "GSA" and len(f) >= 2:
        return {"fix_mode": {"1": "no fix", "2": "2D", "3": "3D"}.get(f[1], "unknown")}
    return {}


def cycle_mode(gsa_mode: int, *, has_alt: bool) -> int:
    """Return a cycle's fix mode: its GSA's (2 or 3), else 3 for a GGA with altitude, else 2.

    The tracker's rule, and the probe's for a receiver that sends no GSA (f14 #7).
    """
    return gsa_mode if gsa_mode in (2, 3) else (3 if has_alt else 2)


def gga_has_altitude(s: Sentence) -> bool | None:
    """Return whether a GGA with a fix carries an altitude; None for no fix or another type."""
    f = s.fields
    if s.type != "GGA" or len(f) < 6 or f[5] not in ("1", "2", "4", "5"):
        return None
    return len(f) > 8 and _float(f[8]) is not None


# where a sentence carries the position: shown by a probe without it (personal data)
_POSITION_FIELDS = {"RMC": (2, 3, 4, 5), "GGA": (1, 2, 3, 4), "GLL": (0, 1, 2, 3),
                    "GNS": (1, 2, 3, 4)}
# ddmm.mmm / dddmm.mmm: what a latitude or longitude looks like wherever it sits in a line
_COORD_LIKE = re.compile(r"(?<!\d)\d{4,5}\.\d")


def without_position(s: Sentence) -> str:
    """Return ``s`` as text with its position fields blanked (``*``), checksum left off."""
    hidden = _POSITION_FIELDS.get(s.type, ())
    fields = ["*" if i in hidden and v else v for i, v in enumerate(s.fields)]
    return f"${s.talker}{s.type}," + ",".join(fields)


def without_position_text(line: str) -> str:
    """Return a line ``parse_sentence`` refused with anything that may be a position blanked.

    A receiver that sends bad checksums (firefly-II.log) still sends real positions (review
    finding 5): the fields of a position sentence are blanked by index, and any field that
    looks like a coordinate is blanked too (a garbled address, two sentences run together).
    The checksum is left off; the text is cut at ``MAX_LEN``.
    """
    text = line.strip()[:MAX_LEN]
    start = text.find("$")
    prefix, body = ("$", text[start + 1:]) if start >= 0 else ("", text)
    head, *fields = body.partition("*")[0].split(",")
    hidden = _POSITION_FIELDS.get(head[2:], ()) if len(head) == 5 else ()
    shown = ["*" if v and (i in hidden or _COORD_LIKE.search(v)) else v
             for i, v in enumerate(fields)]
    if _COORD_LIKE.search(head):
        head = "*"
    return prefix + ",".join([head, *shown])
