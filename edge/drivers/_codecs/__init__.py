"""Pure codecs: bytes or registers in, values out. Standard library only; no I/O, no clock.

Codecs raise ``ValueError`` on malformed input; drivers turn it into ``DeviceProtocolError``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RegisterBlock:
    """One Modbus read request: function code, first register, register count."""

    function: int  # 3 holding, 4 input
    address: int
    count: int

    @property
    def request_bytes(self) -> int:
        """Return the RTU request size: addr, fc, start(2), count(2), crc(2)."""
        return 8

    @property
    def response_bytes(self) -> int:
        """Return the RTU response size: addr, fc, byte count, data, crc(2)."""
        return 5 + 2 * self.count
