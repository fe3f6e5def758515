"""Modbus RTU framing helpers (CRC-16/MODBUS) used by simulators and fault injectors.

CRC-16/MODBUS: init 0xFFFF, reflected polynomial 0xA001, no final XOR, low byte first on
the wire (design/devices.md §2).
"""

from __future__ import annotations

import struct


def _table() -> tuple[int, ...]:
    rows = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        rows.append(crc)
    return tuple(rows)


_CRC_TABLE = _table()


def crc16(data: bytes) -> int:
    """Return the CRC-16/MODBUS of ``data``."""
    crc = 0xFFFF
    for byte in data:
        crc = (crc >> 8) ^ _CRC_TABLE[(crc ^ byte) & 0xFF]
    return crc


def with_crc(frame: bytes) -> bytes:
    """Append the CRC, low byte first."""
    return frame + struct.pack("<H", crc16(frame))


def check_crc(frame: bytes) -> bytes:
    """Return the frame without its CRC; raise ValueError on a short frame or bad CRC."""
    if len(frame) < 4:
        raise ValueError(f"frame too short: {len(frame)} bytes")
    (received,) = struct.unpack("<H", frame[-2:])
    if crc16(frame[:-2]) != received:
        raise ValueError(f"bad CRC 0x{received:04x}")
    return frame[:-2]


def read_request(unit_id: int, function: int, address: int, count: int) -> bytes:
    """Return an RTU read request (FC 3 or 4)."""
    return with_crc(struct.pack(">BBHH", unit_id, function, address, count))


def parse_read_response(frame: bytes, unit_id: int, function: int, count: int) -> list[int]:
    """Decode an RTU read response into registers; raise ValueError if it does not fit."""
    body = check_crc(frame)
    if body[0] != unit_id:
        raise ValueError(f"reply from unit {body[0]}, expected {unit_id}")
    if body[1] == function | 0x80:
        raise ValueError(f"exception code {body[2]}")
    if body[1] != function or body[2] != 2 * count or len(body) != 3 + 2 * count:
        raise ValueError("response does not match the request")
    return list(struct.unpack(f">{count}H", body[3:]))
