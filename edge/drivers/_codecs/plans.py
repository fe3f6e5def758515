"""Modbus read planning: a model's points merged into as few requests as it allows (pure).

Used by drivers, the config loader's wire-capacity check and benchmarks.

Each request costs a fixed overhead on the wire (8 request bytes, 5 reply bytes and a
3.5-character silence either side), about 16 characters; a register skipped inside a block costs
2. So two runs of registers are merged while the hole between them is at most ``max_gap``
registers and the block stays within the model's ``max_registers``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from edge.drivers._codecs import RegisterBlock, sdm120, witmotion

MODBUS_MAX_REGISTERS = 125  # FC 3/4 limit (the spec's 253-byte PDU)
DEFAULT_MAX_GAP = 8  # registers: ~16 characters, one request's overhead


@dataclass(frozen=True, slots=True)
class Point:
    """A run of registers a device model needs."""

    function: int
    address: int
    count: int


def plan_blocks(points: Iterable[Point], *, max_registers: int = MODBUS_MAX_REGISTERS,
                max_gap: int = DEFAULT_MAX_GAP) -> tuple[RegisterBlock, ...]:
    """Return the fewest blocks covering ``points`` (merged per function code)."""
    if not 1 <= max_registers <= MODBUS_MAX_REGISTERS:
        raise ValueError(f"max_registers {max_registers} outside 1..{MODBUS_MAX_REGISTERS}")
    blocks: list[RegisterBlock] = []
    for p in sorted(points, key=lambda p: (p.function, p.address)):
        if p.count > max_registers:
            raise ValueError(f"a point of {p.count} registers exceeds {max_registers}")
        last = blocks[-1] if blocks else None
        if last is not None and last.function == p.function:
            end = max(last.address + last.count, p.address + p.count)
            if p.address - (last.address + last.count) <= max_gap and \
                    end - last.address <= max_registers:
                blocks[-1] = RegisterBlock(last.function, last.address, end - last.address)
                continue
        blocks.append(RegisterBlock(p.function, p.address, p.count))
    return tuple(blocks)


def take(block: RegisterBlock, words: list[int], point: Point) -> list[int]:
    """Return ``point``'s registers out of a block read."""
    start = point.address - block.address
    if point.function != block.function or start < 0 or start + point.count > block.count:
        raise ValueError(f"{point} is not inside {block}")
    return words[start:start + point.count]


PZEM004T_BLOCKS = (RegisterBlock(function=4, address=0x0000, count=10),)
# SunSpec 304 after discovery: ID, L and one group of X/Y/Z int32 (design/devices.md §2.2).
SUNSPEC304_BLOCKS = (RegisterBlock(function=3, address=0, count=8),)
# SDM120: voltage, current, active power (float32 each): one block with two holes
SDM120_POINTS = (Point(4, 0x00, 2), Point(4, 0x06, 2), Point(4, 0x0C, 2))
# the lamp controller adds relay coil 0 and dim register 0x0100 (other function codes)
LAMP_POINTS = (*SDM120_POINTS, Point(1, sdm120.RELAY_COIL, 1), Point(3, sdm120.DIM_REGISTER, 1))

READ_PLANS: dict[str, tuple[RegisterBlock, ...]] = {
    "witmotion": witmotion.BLOCKS,
    "sunspec304": SUNSPEC304_BLOCKS,
    "sdm120": plan_blocks(SDM120_POINTS),
    "lamp_controller": plan_blocks(LAMP_POINTS),
    "pzem004t": PZEM004T_BLOCKS,
}
