"""SunSpec model 304 inclinometer (firmware_notes/sunspec304.md). Pure.

After discovery: ID (= 304), L (= 6 × groups), then per group Inclx, Incly, Inclz as int32,
high word first, fixed scale factor −2 (degrees).
"""

from __future__ import annotations

from collections.abc import Sequence

MODEL_ID = 304


def _i32_high_first(high: int, low: int) -> int:
    value = (high << 16) | low
    return value - (1 << 32) if value & 0x8000_0000 else value


def decode(words: Sequence[int]) -> dict[str, float]:
    """Return the first group's X/Y/Z inclination from ID, L and six registers."""
    if len(words) < 8 or any(not 0 <= w <= 0xFFFF for w in words):
        raise ValueError(f"expected at least 8 registers, got {len(words)}")
    if words[0] != MODEL_ID:
        raise ValueError(f"model id {words[0]}, expected {MODEL_ID}")
    if words[1] == 0 or words[1] % 6:
        raise ValueError(f"model length {words[1]} is not a multiple of 6")
    return {
        "tilt_x_deg": _i32_high_first(words[2], words[3]) / 100,
        "tilt_y_deg": _i32_high_first(words[4], words[5]) / 100,
        "tilt_z_deg": _i32_high_first(words[6], words[7]) / 100,
    }
