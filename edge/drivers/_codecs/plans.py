"""Modbus read plans per device model: what one poll asks for (used for wire-capacity checks)."""

from __future__ import annotations

from edge.drivers._codecs import RegisterBlock, sdm120, witmotion

PZEM004T_BLOCKS = (RegisterBlock(function=4, address=0x0000, count=10),)
# SunSpec 304 after discovery: ID, L and one group of X/Y/Z int32 (design/devices.md §2.2).
SUNSPEC304_BLOCKS = (RegisterBlock(function=3, address=0, count=8),)

READ_PLANS: dict[str, tuple[RegisterBlock, ...]] = {
    "witmotion": witmotion.BLOCKS,
    "sunspec304": SUNSPEC304_BLOCKS,
    "sdm120": sdm120.BLOCKS,
    "lamp_controller": sdm120.BLOCKS,
    "pzem004t": PZEM004T_BLOCKS,
}
