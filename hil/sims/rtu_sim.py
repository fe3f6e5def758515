"""An RS-485 line on a pty: slaves answer Modbus RTU with the baud rate's wire time enforced.

A pty moves bytes instantly; a real 9,600 baud line does not. Each answer is therefore held
back by the time the request and the reply would take on the wire (start, 8 data, parity and
stop bits per character) plus the 3.5-character silence a slave must see before it knows the
request has ended, so bus timing in tests and benchmarks is real
(firmware_notes/modbus-rtu-timing.md). Faults come from each ``SimUnit``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import struct
import tty

from hil.sims.modbus_sim import SimUnit
from hil.sims.wire import modbus_crc_ok, with_modbus_crc


class RtuLineSim:
    """Slaves on one pty; ``path`` is what the gateway opens (like /dev/ttyUSB0)."""

    def __init__(self, units: dict[int, SimUnit], *, baud: int = 9600, parity: str = "N",
                 stop_bits: int = 1) -> None:
        self.units = units
        self.char_s = (1 + 8 + (0 if parity == "N" else 1) + stop_bits) / baud
        self._master, self._slave = os.openpty()
        tty.setraw(self._master)
        tty.setraw(self._slave)
        self.path = os.ttyname(self._slave)
        self._buf = bytearray()
        self._tasks: set[asyncio.Task[None]] = set()
        self.busy_s = 0.0  # wire time of every transaction answered, both silences included
        self.requests = 0
        self.crc_errors = 0
        self._rng = random.Random(0x485)

    async def start(self) -> None:
        """Listen on the pty."""
        asyncio.get_running_loop().add_reader(self._master, self._readable)

    async def stop(self) -> None:
        """Stop and close the pty pair."""
        asyncio.get_running_loop().remove_reader(self._master)
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        os.close(self._master)
        os.close(self._slave)

    def _readable(self) -> None:
        try:
            self._buf += os.read(self._master, 4096)
        except OSError:
            return
        while True:
            size = self._frame_size()
            if size is None or len(self._buf) < size:
                return
            frame, self._buf = bytes(self._buf[:size]), self._buf[size:]
            task = asyncio.get_running_loop().create_task(self._answer(frame))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _frame_size(self) -> int | None:
        if len(self._buf) < 2:
            return None
        function = self._buf[1]
        if function in (1, 2, 3, 4, 5, 6):
            return 8
        if function in (15, 16):
            return 9 + self._buf[6] if len(self._buf) >= 7 else None
        self._buf.clear()  # not a request we know: resynchronise on silence
        return None

    async def _answer(self, frame: bytes) -> None:
        if not modbus_crc_ok(frame):
            self.crc_errors += 1
            return
        body = frame[:-2]
        unit_id, function = body[0], body[1]
        unit = self.units.get(unit_id)
        self.requests += 1
        if unit is None or unit.fault == "dead":
            return  # silence: the master times out
        reply = self._faulty(unit, self._reply(unit, unit_id, function, body))
        # request, t3.5 (the slave's end-of-frame detection), reply; the master keeps the
        # second t3.5 after the reply before its next request
        wire_s = (len(frame) + 3.5 + len(reply)) * self.char_s
        await asyncio.sleep(wire_s + (unit.delay_s if unit.fault == "slow" else 0.0))
        self.busy_s += wire_s + 3.5 * self.char_s
        os.write(self._master, reply)

    def _faulty(self, unit: SimUnit, reply: bytes) -> bytes:
        """Spoil a good reply the way a noisy RS-485 line or a misconfigured slave does."""
        if unit.fault == "crc":
            return reply[:-1] + bytes([reply[-1] ^ 0xFF])
        if unit.fault == "garbage":
            return self._rng.randbytes(len(reply))
        if unit.fault == "wrong_unit":  # a valid frame, but from the neighbour's address
            return with_modbus_crc(bytes([(reply[0] % 247) + 1]) + reply[1:-2])
        return reply

    def _reply(self, unit: SimUnit, unit_id: int, function: int, body: bytes) -> bytes:
        if unit.fault == "exception":
            return with_modbus_crc(bytes([unit_id, function | 0x80, 0x04]))
        address, value = struct.unpack(">HH", body[2:6])
        if function in (1, 3, 4):
            table = unit.coils if function == 1 else (unit.holding if function == 3
                                                      else unit.inputs)
            try:
                words = [int(table[a]) for a in range(address, address + value)]
            except KeyError:
                return with_modbus_crc(bytes([unit_id, function | 0x80, 0x02]))
            if function == 1:
                packed = bytearray((len(words) + 7) // 8)
                for i, bit in enumerate(words):
                    packed[i // 8] |= (1 if bit else 0) << (i % 8)
                data = bytes(packed)
            else:
                data = struct.pack(f">{len(words)}H", *words)
            return with_modbus_crc(bytes([unit_id, function, len(data)]) + data)
        if function == 6:
            if not unit.control(address, value):
                unit.write(unit.holding, address, [value])
            return with_modbus_crc(body[:6])
        if function == 5:
            unit.write(unit.coils, address, [value == 0xFF00])
            return with_modbus_crc(body[:6])
        return with_modbus_crc(bytes([unit_id, function | 0x80, 0x01]))
