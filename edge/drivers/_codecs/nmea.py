"""NMEA 0183 (firmware_notes/nmea-gnss.md): sentences in, fixes out. Pure.

Dispatch is on the sentence type (last three letters), never on the talker: GP, GN, GL, GA,
GB and BD all mean the same sentence (design/devices.md §3.1).
"""

from __future__ import annotations

import datetime as dt
import re
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


class NmeaTracker:
    """Turns sentences into fixes; pairs GGA (no date) with the last RMC date."""

    def __init__(self) -> None:
        self._date: dt.date | None = None
        self._last_time: dt.time | None = None
        self.no_fix = 0
        self._vtg: tuple[float | None, float | None] = (None, None)  # km/h, course
        self.gsa_mode = 0  # 1 no fix, 2 2D, 3 3D (0: no GSA seen)
        self.hdop: float | None = None

    def feed(self, s: Sentence) -> Fix | None:
        """Return a fix when ``s`` completes a valid one; ValueError on malformed fields."""
        handler = {"RMC": self._rmc, "GGA": self._gga, "VTG": self._vtg_sentence,
                   "GSA": self._gsa}.get(s.type)
        return handler(s.fields) if handler is not None else None

    def _rmc(self, f: tuple[str, ...]) -> Fix | None:
        if len(f) >= 9:
            if not f[0] or not f[8]:
                self.no_fix += 1
                return None
            when = _time(f[0])
            mode = f[11] if len(f) > 11 else "A"
            if f[1] != "A" or mode == "N":  # RMC V is void, its date and time too
                self.no_fix += 1
                return None
            self._date, self._last_time = _date(f[8]), when
            lat, lon = _coord(f[2], f[3], 2), _coord(f[4], f[5], 3)
            if abs(lat) < 1e-6 and abs(lon) < 1e-6:
                raise ValueError("0,0 fake fix")  # null island with status A
            knots = _float(f[6])
            return Fix(dt.datetime.combine(self._date, when, dt.UTC), lat, lon,
                       None if knots is None else round(knots * 1.852, 4), _float(f[7]), 2,
                       "RMC")
        return None

    def _vtg_sentence(self, f: tuple[str, ...]) -> None:
        if len(f) >= 7:  # speed over ground in km/h and true course: GGA carries neither
            self._vtg = (_float(f[6]), _float(f[0]))

    def _gsa(self, f: tuple[str, ...]) -> None:
        if len(f) >= 2:
            self.gsa_mode = int(f[1]) if f[1] in ("1", "2", "3") else 0
            self.hdop = _float(f[15]) if len(f) > 15 else None

    def _gga(self, f: tuple[str, ...]) -> Fix | None:
        if len(f) >= 6:
            if f[5] not in ("1", "2", "4", "5") or not f[0] or self._date is None:
                self.no_fix += 1
                return None
            when = _time(f[0])
            day = self._date
            if self._last_time is not None and when < self._last_time and \
                    self._last_time.hour == 23 and when.hour == 0:
                day += dt.timedelta(days=1)  # midnight rollover before the next RMC
            lat, lon = _coord(f[1], f[2], 2), _coord(f[3], f[4], 3)
            if abs(lat) < 1e-6 and abs(lon) < 1e-6:
                raise ValueError("0,0 fake fix")
            speed_kmh, course = self._vtg
            mode = 2 if self.gsa_mode == 2 or not f[8:9] or not f[8] else 3  # no altitude: 2D
            return Fix(dt.datetime.combine(day, when, dt.UTC), lat, lon, speed_kmh, course,
                       mode, "GGA")
        return None


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


# where a sentence carries the position: shown by a probe without it (personal data)
_POSITION_FIELDS = {"RMC": (2, 3, 4, 5), "GGA": (1, 2, 3, 4), "GLL": (0, 1, 2, 3)}


def without_position(s: Sentence) -> str:
    """Return ``s`` as text with its position fields blanked (``*``), checksum left off."""
    hidden = _POSITION_FIELDS.get(s.type, ())
    fields = ["*" if i in hidden and v else v for i, v in enumerate(s.fields)]
    return f"${s.talker}{s.type}," + ",".join(fields)
