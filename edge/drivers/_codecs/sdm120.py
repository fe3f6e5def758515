"""Eastron SDM120 meter and our lamp controller (firmware_notes/sdm120.md).

FC 0x04, float32 IEEE-754 big-endian, high word first (ABCD). The lamp controller (a simulator
design, not a vendor map) adds coil 0 = relay and holding 0x0100 = dim 0-100 %.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence

from edge.drivers._codecs import RegisterBlock

RELAY_COIL = 0x0000
DIM_REGISTER = 0x0100
# voltage 0x00, current 0x06, active power 0x0C (one block of 14 registers covers all three)
BLOCKS = (RegisterBlock(function=4, address=0x0000, count=14),)


def float_abcd(high: int, low: int) -> float:
    """Decode a float32 from two registers, high word first."""
    (value,) = struct.unpack(">f", struct.pack(">HH", high, low))
    return float(value)


def encode_float_abcd(value: float) -> list[int]:
    """Encode a float32 into two registers, high word first (for simulators)."""
    high, low = struct.unpack(">HH", struct.pack(">f", value))
    return [high, low]


def decode_meter(words: Sequence[int]) -> dict[str, float]:
    """Return voltage, current and power from input registers 0x00-0x0D."""
    if len(words) != 14 or any(not 0 <= w <= 0xFFFF for w in words):
        raise ValueError(f"expected 14 registers from 0x00, got {len(words)}")
    values = {
        "voltage_v": float_abcd(words[0], words[1]),
        "current_a": float_abcd(words[6], words[7]),
        "power_w": float_abcd(words[12], words[13]),
    }
    for name, value in values.items():
        if math.isnan(value) or abs(value) > 1e6:  # NaN or absurd: a garbled frame, not a reading
            raise ValueError(f"implausible {name}: {value}")
        values[name] = round(value, 3)
    return values
