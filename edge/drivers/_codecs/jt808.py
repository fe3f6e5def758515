"""JT/T 808-2013/2019 framing and bodies (firmware_notes/jt808.md). Pure.

Sub-package reassembly; the 0x0200 location report, 0x0100 register, 0x0102 authenticate and
0x8001 general response bodies. Frame: ``7E | header | body | checksum | 7E``; checksum = XOR
of header and body; then ``7E → 7D 02`` and ``7D → 7D 01`` (un-escape before checking).
Big-endian; time is BCD in GMT+8 (NMEA is UTC). Strings are GBK.
"""

from __future__ import annotations

import datetime as dt
import struct
from dataclasses import dataclass, field

FLAG, ESC = 0x7E, 0x7D
MSG_LOCATION, MSG_HEARTBEAT = 0x0200, 0x0002
MSG_REGISTER, MSG_AUTHENTICATE, MSG_PLATFORM_RESPONSE = 0x0100, 0x0102, 0x8001
LENGTH_MASK, PACKAGE_BIT, VERSION_BIT = 0x03FF, 1 << 13, 1 << 14
MAX_BODY = LENGTH_MASK  # 10 bits of body length: 1,023 bytes per (sub-)package
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
    packages: tuple[int, int] | None = None  # (total, index from 1) when sub-packaged


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
    if not digits.isdigit() or not digits.isascii() or len(digits) > size * 2:
        raise ValueError(f"phone must be at most {size * 2} digits")
    digits = digits.rjust(size * 2, "0")
    return bytes(int(digits[i:i + 2], 16) for i in range(0, len(digits), 2))


def encode(msg_id: int, phone: str, serial: int, body: bytes, *, version: int | None = None,
           packages: tuple[int, int] | None = None) -> bytes:
    """Return a complete frame: 2013 (``version=None``) or 2019 (``version``, BCD[10] phone).

    ``packages`` = (total, index) sets the sub-package bit and fields. ValueError when the body
    exceeds 1,023 bytes or a field does not fit (for simulators, tests and replies).
    """
    if len(body) > MAX_BODY:
        raise ValueError(f"body of {len(body)} bytes; one package carries {MAX_BODY}")
    attrs = len(body)
    if version is not None:
        attrs |= VERSION_BIT
        header = struct.pack(">HHB", msg_id, attrs, version) + _to_bcd(phone, 10)
    else:
        header = struct.pack(">HH", msg_id, attrs) + _to_bcd(phone, 6)
    header += struct.pack(">H", serial)
    if packages is not None:
        header = struct.pack(">HH", msg_id, attrs | PACKAGE_BIT) + header[4:] + \
            struct.pack(">HH", *packages)
    payload = header + body
    return bytes([FLAG]) + escape(payload + bytes([_xor(payload)])) + bytes([FLAG])


def decode(frame: bytes) -> Message:
    """Decode one frame (with or without the 0x7E flags); raise ValueError when malformed.

    The header's own sizes are checked before the checksum, so a frame cut short (in the
    header, the package fields or mid-body) is reported as ``truncated``, never as a bad
    checksum or a ``struct.error`` (issue 14 #4). Package total/index are exposed in
    ``packages``; a total of 0 or an index outside 1..total is refused.
    """
    if frame[:1] == b"\x7e":
        frame = frame[1:]
    if frame[-1:] == b"\x7e":
        frame = frame[:-1]
    data = unescape(frame)
    if len(data) < 5:
        raise ValueError(f"truncated: {len(data)} bytes")
    msg_id, attrs = struct.unpack(">HH", data[:4])
    length = attrs & LENGTH_MASK
    phone_at = 5 if attrs & VERSION_BIT else 4  # 2019: a version BYTE first
    serial_at = phone_at + (10 if attrs & VERSION_BIT else 6)
    body_at = serial_at + 2 + (4 if attrs & PACKAGE_BIT else 0)
    need = body_at + length + 1
    if len(data) < body_at + 1:  # the header (and its checksum byte) is not even whole
        raise ValueError(f"truncated: {len(data)} bytes, the header needs {body_at + 1}")
    if len(data) < need:  # the header is whole; its body length is not there (f14 #10)
        raise ValueError(f"truncated: {len(data)} bytes, the body needs {need} "
                         f"({length} body bytes)")
    if len(data) > need:
        raise ValueError(f"body is {len(data) - body_at - 1} bytes, header says {length}")
    if _xor(data[:-1]) != data[-1]:
        raise ValueError("bad checksum")
    version = data[4] if attrs & VERSION_BIT else None
    phone = _bcd(data[phone_at:serial_at])
    (serial,) = struct.unpack(">H", data[serial_at:serial_at + 2])
    packages: tuple[int, int] | None = None
    if attrs & PACKAGE_BIT:
        total, index = struct.unpack(">HH", data[serial_at + 2:body_at])
        if total < 1 or not 1 <= index <= total:
            raise ValueError(f"bad package {index} of {total}")
        packages = (total, index)
    return Message(msg_id, phone.lstrip("0") or "0", serial, data[body_at:-1], version,
                   packages)


class Reassembler:
    """Joins sub-packaged messages (header bit 13); bounded in messages, packages and time.

    Packages of one message share phone and msg id and carry consecutive serials, so the key is
    the serial of package 1 (serial − index + 1). Pure: the caller passes the time.
    """

    def __init__(self, *, max_messages: int = 16, max_packages: int = 256,
                 timeout_s: float = 60.0) -> None:
        self._max_messages = max_messages
        self._max_packages = max_packages  # 256 x 1,023 B: a 0x0704 blind-area batch fits
        self._timeout_s = timeout_s
        self._open: dict[tuple[str, int, int, int], tuple[float, Message, dict[int, bytes]]] = {}
        self.dropped = 0  # evicted to make room (counted)
        self.expired = 0  # incomplete after timeout_s (counted)

    @property
    def pending(self) -> int:
        """Return how many messages are waiting for packages."""
        return len(self._open)

    def feed(self, msg: Message, now_s: float) -> Message | None:
        """Return ``msg`` whole (itself if not sub-packaged) or None while packages are missing.

        ValueError when a message claims more than ``max_packages`` packages.
        """
        for key, (started_s, _m, _p) in list(self._open.items()):
            if now_s - started_s > self._timeout_s:
                del self._open[key]
                self.expired += 1
        if msg.packages is None:
            return msg
        total, index = msg.packages
        if total > self._max_packages:
            raise ValueError(f"{total} packages; at most {self._max_packages} are joined")
        key = (msg.phone, msg.msg_id, (msg.serial - index + 1) & 0xFFFF, total)
        entry = self._open.get(key)
        if entry is None:
            if len(self._open) >= self._max_messages:
                del self._open[next(iter(self._open))]  # the oldest
                self.dropped += 1
            entry = (now_s, msg, {})
            self._open[key] = entry
        parts = entry[2]
        parts.setdefault(index, msg.body)  # a resent package changes nothing
        if len(parts) < total:
            return None
        del self._open[key]
        first = entry[1]
        return Message(msg.msg_id, msg.phone, key[2],
                       b"".join(parts[i] for i in range(1, total + 1)), first.version)


@dataclass(frozen=True, slots=True)
class GeneralResponse:
    """0x8001 (platform) / 0x0001 (terminal) general response."""

    reply_serial: int
    reply_id: int
    result: int  # 0 OK, 1 failed, 2 bad message, 3 unsupported, 4 alarm confirmed (0x8001)


def general_response(reply_serial: int, reply_id: int, result: int) -> bytes:
    """Return a 0x8001/0x0001 body."""
    return struct.pack(">HHB", reply_serial, reply_id, result)


def parse_general_response(body: bytes) -> GeneralResponse:
    """Decode a 0x8001/0x0001 body; ValueError unless it is exactly 5 bytes."""
    if len(body) != 5:
        raise ValueError(f"general response is {len(body)} bytes, needs 5 bytes")
    return GeneralResponse(*struct.unpack(">HHB", body))


@dataclass(frozen=True, slots=True)
class Register:
    """A 0x0100 terminal registration."""

    province: int
    city: int
    maker: str
    model: str
    terminal_id: str
    plate_colour: int  # 0: no plate (``plate`` is then the VIN)
    plate: str


# maker, model, terminal id sizes: 2013 BYTE[5], [20], [7]; 2019 BYTE[11], [30], [30]
_REGISTER_SIZES = {None: (5, 20, 7), 1: (11, 30, 30)}


def _fixed(data: bytes, what: str) -> str:
    try:
        return data.rstrip(b"\x00").decode("ascii")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{what}: not ASCII") from exc


def _pad(text: str, size: int, what: str) -> bytes:
    raw = text.encode("ascii")
    if len(raw) > size:
        raise ValueError(f"{what} is {len(raw)} bytes; the field holds {size}")
    return raw.ljust(size, b"\x00")


def parse_register(body: bytes, *, version: int | None) -> Register:
    """Decode a 0x0100 body of the given header version; ValueError when malformed."""
    maker_n, model_n, id_n = _REGISTER_SIZES.get(version, _REGISTER_SIZES[1])
    fixed_n = 4 + maker_n + model_n + id_n + 1
    if len(body) < fixed_n:
        raise ValueError(f"register body is {len(body)} bytes, needs {fixed_n}")
    province, city = struct.unpack(">HH", body[:4])
    pos = 4
    fields = []
    for size, what in ((maker_n, "register maker"), (model_n, "register model"),
                       (id_n, "register terminal id")):
        fields.append(_fixed(body[pos:pos + size], what))
        pos += size
    try:
        plate = body[pos + 1:].rstrip(b"\x00").decode("gbk")
    except UnicodeDecodeError as exc:
        raise ValueError("register plate: not GBK") from exc
    return Register(province, city, fields[0], fields[1], fields[2], body[pos], plate)


def register_body(reg: Register, *, version: int | None) -> bytes:
    """Return a 0x0100 body; ValueError when a field does not fit."""
    maker_n, model_n, id_n = _REGISTER_SIZES.get(version, _REGISTER_SIZES[1])
    return struct.pack(">HH", reg.province, reg.city) + _pad(reg.maker, maker_n, "maker") + \
        _pad(reg.model, model_n, "model") + _pad(reg.terminal_id, id_n, "terminal id") + \
        bytes([reg.plate_colour]) + reg.plate.encode("gbk")


@dataclass(frozen=True, slots=True)
class Authenticate:
    """A 0x0102 authentication (2019 adds IMEI and software version)."""

    code: str
    imei: str | None = None
    software_version: str | None = None


def parse_authenticate(body: bytes, *, version: int | None) -> Authenticate:
    """Decode a 0x0102 body; ValueError when malformed.

    2013: the auth code is the whole body. 2019: code length BYTE, code, IMEI BYTE[15],
    software version BYTE[20] (fixed, 00-padded: the length-prefixed reading is disputed,
    design/devices.md §3.2, unverified).
    """
    try:
        if version is None:
            return Authenticate(body.rstrip(b"\x00").decode("gbk"))
        if not body:
            raise ValueError("authenticate body is empty")
        n = body[0]
        if len(body) != 1 + n + 15 + 20:
            raise ValueError(
                f"authenticate body is {len(body)} bytes, needs {1 + n + 35}")
        code = body[1:1 + n].decode("gbk")
    except UnicodeDecodeError as exc:
        raise ValueError("authenticate code: not GBK") from exc
    return Authenticate(code, _fixed(body[1 + n:16 + n], "authenticate IMEI"),
                        _fixed(body[16 + n:], "authenticate software version"))


def authenticate_body(auth: Authenticate, *, version: int | None) -> bytes:
    """Return a 0x0102 body; ValueError when a field does not fit."""
    code = auth.code.encode("gbk")
    if version is None:
        return code
    if len(code) > 0xFF:
        raise ValueError("auth code longer than 255 bytes")
    return bytes([len(code)]) + code + _pad(auth.imei or "", 15, "IMEI") + \
        _pad(auth.software_version or "", 20, "software version")


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
