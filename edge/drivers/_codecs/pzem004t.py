"""PZEM-004T v3 energy meter (firmware_notes/pzem004t.md). Pure.

FC 0x04, registers 0x0000-0x0009; 32-bit values are LOW word first (CDAB).
"""

from __future__ import annotations

from collections.abc import Sequence

REGISTERS = 10


def _u32_low_first(low: int, high: int) -> int:
    return (high << 16) | low


def decode(words: Sequence[int]) -> dict[str, float | bool]:
    """Return voltage, current, power, energy, frequency, power factor and the alarm flag."""
    if len(words) != REGISTERS or any(not 0 <= w <= 0xFFFF for w in words):
        raise ValueError(f"expected {REGISTERS} registers from 0x0000, got {len(words)}")
    if words[9] not in (0x0000, 0xFFFF):
        raise ValueError(f"alarm register must be 0 or 0xFFFF, got {words[9]:#06x}")
    return {
        "voltage_v": words[0] / 10,
        "current_a": _u32_low_first(words[1], words[2]) / 1000,
        "power_w": _u32_low_first(words[3], words[4]) / 10,
        "energy_wh": float(_u32_low_first(words[5], words[6])),
        "frequency_hz": words[7] / 10,
        "power_factor": words[8] / 100,
        "alarm": words[9] == 0xFFFF,
    }


def encode(*, voltage_v: float, current_a: float, power_w: float, energy_wh: int = 0,
           frequency_hz: float = 50.0, power_factor: float = 0.95) -> list[int]:
    """Return the ten registers a meter with these values reports (for simulators)."""
    amps, watts = round(current_a * 1000), round(power_w * 10)
    return [round(voltage_v * 10), amps & 0xFFFF, amps >> 16, watts & 0xFFFF, watts >> 16,
            energy_wh & 0xFFFF, energy_wh >> 16, round(frequency_hz * 10),
            round(power_factor * 100), 0]
