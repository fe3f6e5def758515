"""JT/T 808-2013/2019 framing and the 0x0200 location report (firmware_notes/jt808.md). Pure.

Frame: ``7E | header | body | checksum | 7E``; checksum = XOR of header and body; then
``7E → 7D 02`` and ``7D → 7D 01`` (un-escape before checking). Big-endian; time is BCD in
GMT+8 (NMEA is UTC).
"""

from __future__ import annotations

import datetime as dt
import struct
from dataclasses import dataclass, field

FLAG, ESC = 0x7E, 0x7D
MSG_LOCATION, MSG_HEARTBEAT = 0x0200, 0x0002
GMT8 = dt.timezone(dt.timedelta(hours=8))
STATUS_FIX, STATUS_SOUTH, STATUS_WEST = 1 << 1, 1 << 2, 1 << 3


@dataclass(frozen=True, slots=True)
class Message:
    """One un-escaped, checked message."""

    msg_id: int
    phone: str
    serial: int
    body: bytes
    version: int | None  # None: 2013; 1: 2019


@dataclass(frozen=True, slots=True)
class Location:
    """A 0x0200 location report."""

    alarm: int
    status: int
    lat: float
    lon: float
    altitude_m: int
    speed_kmh: float
    course_deg: int
    time_utc: dt.datetime
    extras: dict[str, float] = field(default_factory=dict)

    @property
    def fixed(self) -> bool:
        """Return whether the terminal reports a valid fix (status bit 1)."""
        return bool(self.status & STATUS_FIX)


def escape(data: bytes) -> bytes:
    """Escape 0x7E and 0x7D."""
    return data.replace(b"\x7d", b"\x7d\x01").replace(b"\x7e", b"\x7d\x02")


def unescape(data: bytes) -> bytes:
    """Undo ``escape``; raise ValueError on a bad escape sequence."""
    out = bytearray()
    it = iter(data)
    for byte in it:
        if byte == ESC:
            nxt = next(it, None)
            if nxt == 0x01:
                out.append(ESC)
            elif nxt == 0x02:
                out.append(FLAG)
            else:
                raise ValueError(f"bad escape 7D {nxt!r}")
        elif byte == FLAG:
            raise ValueError("0x7E inside a frame")
        else:
            out.append(byte)
    return bytes(out)


def _xor(data: bytes) -> int:
    out = 0
    for byte in data:
        out ^= byte
    return out


def _bcd(data: bytes) -> str:
    digits = []
    for byte in data:
        hi, lo = byte >> 4, byte & 0x0F
        if hi > 9 or lo > 9:
            raise ValueError(f"not BCD: {data.hex()}")
        digits.append(f"{hi}{lo}")
    return "".join(digits)


def _to_bcd(digits: str, size: int) -> bytes:
    digits = digits.rjust(size * 2, "0")
    return bytes(int(digits[i:i + 2], 16) for i in range(0, len(digits), 2))


def encode(msg_id: int, phone: str, serial: int, body: bytes) -> bytes:
    """Return a complete 2013 frame (for simulators and tests)."""
    header = struct.pack(">HH", msg_id, len(body) & 0x3FF) + _to_bcd(phone, 6) + \
        struct.pack(">H", serial)
    payload = header + body
    return bytes([FLAG]) + escape(payload + bytes([_xor(payload)])) + bytes([FLAG])


def decode(frame: bytes) -> Message:
    """Decode one frame (with or without the 0x7E flags); raise ValueError when malformed."""
    if frame[:1] == b"\x7e":
        frame = frame[1:]
    if frame[-1:] == b"\x7e":
        frame = frame[:-1]
    data = unescape(frame)
    if len(data) < 13:
        raise ValueError(f"frame too short ({len(data)} bytes)")
    if _xor(data[:-1]) != data[-1]:
        raise ValueError("bad checksum")
    msg_id, attrs = struct.unpack(">HH", data[:4])
    length = attrs & 0x3FF
    version: int | None = None
    pos = 4
    if attrs & (1 << 14):  # 2019: protocol version byte, BCD[10] phone
        version = data[pos]
        phone = _bcd(data[pos + 1:pos + 11])
        pos += 11
    else:
        phone = _bcd(data[pos:pos + 6])
        pos += 6
    (serial,) = struct.unpack(">H", data[pos:pos + 2])
    pos += 2
    if attrs & (1 << 13):
        pos += 4  # package total + index
    body = data[pos:-1]
    if len(body) != length:
        raise ValueError(f"body is {len(body)} bytes, header says {length}")
    return Message(msg_id, phone.lstrip("0") or "0", serial, body, version)


def parse_location(body: bytes) -> Location:
    """Decode a 0x0200 body; raise ValueError when malformed."""
    if len(body) < 28:
        raise ValueError(f"location body is {len(body)} bytes, needs 28")
    alarm, status, lat_u, lon_u, alt, speed, course = struct.unpack(">IIIIHHH", body[:22])
    stamp = _bcd(body[22:28])
    try:
        local = dt.datetime.strptime(stamp, "%y%m%d%H%M%S").replace(tzinfo=GMT8)
    except ValueError as exc:
        raise ValueError(f"bad time {stamp}") from exc
    lat, lon = lat_u / 1e6, lon_u / 1e6
    if lat > 90 or lon > 180:
        raise ValueError(f"position out of range {lat}, {lon}")
    extras: dict[str, float] = {}
    pos = 28
    while pos + 2 <= len(body):
        item, size = body[pos], body[pos + 1]
        value = body[pos + 2:pos + 2 + size]
        if len(value) != size:
            raise ValueError("truncated extra item")
        if item == 0x01 and size == 4:
            extras["mileage_km"] = struct.unpack(">I", value)[0] / 10
        elif item == 0x30 and size == 1:
            extras["rssi"] = value[0]
        elif item == 0x31 and size == 1:
            extras["satellites"] = value[0]
        pos += 2 + size
    return Location(alarm, status, -lat if status & STATUS_SOUTH else lat,
                    -lon if status & STATUS_WEST else lon, alt, speed / 10, course,
                    local.astimezone(dt.UTC), extras)


class Framer:
    """Splits a byte stream into frames on 0x7E (a stream may start mid-frame)."""

    def __init__(self, max_frame: int = 4096) -> None:
        self._buf = bytearray()
        self._max = max_frame

    def feed(self, data: bytes) -> list[bytes]:
        """Add bytes; return the complete frames (flags stripped) now available."""
        self._buf += data
        frames = []
        while True:
            start = self._buf.find(FLAG)
            if start < 0:
                self._buf.clear()
                break
            end = self._buf.find(FLAG, start + 1)
            if end < 0:
                del self._buf[:start]
                if len(self._buf) > self._max:
                    self._buf.clear()  # a runaway frame: drop it
                break
            if end > start + 1:
                frames.append(bytes(self._buf[start + 1:end]))
                del self._buf[:end + 1]
            else:
                del self._buf[:end]  # 7E 7E: the second flag may open the next frame
        return frames
