"""WitMotion-style RS-485 inclinometer (firmware_notes/witmotion-inclinometer.md).

FC 0x03, int16 big-endian; roll/pitch/yaw at 0x3D-0x3F, ° = raw / 32768 × 180; temperature at
0x40 in 0.01 °C (model-dependent). One block read covers all four.
"""

from __future__ import annotations

from collections.abc import Sequence

from edge.drivers._codecs import RegisterBlock

DEFAULT_UNIT_ID = 0x50
ANGLE_REGISTER = 0x3D
BLOCKS = (RegisterBlock(function=3, address=ANGLE_REGISTER, count=4),)


def _int16(word: int) -> int:
    if not 0 <= word <= 0xFFFF:
        raise ValueError(f"register value out of range: {word}")
    return word - 0x10000 if word & 0x8000 else word


def decode_angles(words: Sequence[int]) -> dict[str, float]:
    """Return roll/pitch/yaw in degrees and temperature in °C from registers 0x3D-0x40."""
    if len(words) != 4:
        raise ValueError(f"expected 4 registers from 0x3D, got {len(words)}")
    roll, pitch, yaw, temp = (_int16(w) for w in words)
    return {
        "tilt_x_deg": round(roll / 32768 * 180, 2),
        "tilt_y_deg": round(pitch / 32768 * 180, 2),
        "yaw_deg": round(yaw / 32768 * 180, 2),
        "temperature_c": temp / 100,
    }


def encode_angles(tilt_x_deg: float, tilt_y_deg: float, yaw_deg: float = 0.0,
                  temperature_c: float = 20.0) -> list[int]:
    """Return the four registers a sensor at these angles reports (for simulators)."""

    def word(value: int) -> int:
        return max(-32768, min(32767, value)) & 0xFFFF

    return [word(round(tilt_x_deg / 180 * 32768)), word(round(tilt_y_deg / 180 * 32768)),
            word(round(yaw_deg / 180 * 32768)), word(round(temperature_c * 100))]


def tilt_deg(values: dict[str, float], baseline_deg: float = 0.0) -> float:
    """Return the cover's tilt from level: the larger of |roll| and |pitch| minus the baseline."""
    return abs(max(abs(values["tilt_x_deg"]), abs(values["tilt_y_deg"])) - baseline_deg)
