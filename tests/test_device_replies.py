"""What devices answer, when it is wrong (docs/inputs.md): a Modbus reply with the wrong number
of registers, and a serial TTS unit's status and acknowledgement bytes. Each is a DeviceError
(protocol or unavailable, so the supervisor retries), the next good exchange works again, and
nothing hangs."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from pymodbus.constants import ExcCodes

from edge.config import ModbusTcpBus
from edge.drivers._codecs import syn6288
from edge.drivers.broadcast import Play
from edge.drivers.speaker_units import Syn6288Unit
from edge.errors import DeviceProtocolError, DeviceUnavailableError
from edge.transports.modbus import ModbusBus
from edge.transports.serial import SerialPort
from hil.broker import free_port
from hil.sims.modbus_sim import ModbusTcpSim, SimUnit

# ---- Modbus replies: the wrong number of registers --------------------------------------------


class MiscountingUnit(SimUnit):
    """Answers every read with ``extra`` registers more (or fewer) than asked."""

    extra = 0

    async def async_getValues(self, func_code: int, address: int,  # noqa: N802 - pymodbus API
                              count: int = 1) -> list[int] | list[bool] | ExcCodes:
        """Serve the read, then add or drop registers."""
        values = await super().async_getValues(func_code, address, count)
        if not isinstance(values, list) or self.extra == 0:
            return values
        words = [int(v) for v in values]
        return words[:count + self.extra] if self.extra < 0 else words + [0] * self.extra


@pytest.mark.parametrize("extra", [-1, -4, 1, 60])
async def test_a_reply_with_the_wrong_register_count_is_a_protocol_error(extra: int) -> None:
    port = free_port()
    unit = MiscountingUnit(holding={a: a for a in range(100)})
    sim = ModbusTcpSim({1: unit}, port)
    await sim.start()
    cfg = ModbusTcpBus(name="b", type="modbus_tcp", host="127.0.0.1", port=port, timeout_s=0.5)
    bus = ModbusBus(cfg)
    try:
        unit.extra = extra
        with pytest.raises(DeviceProtocolError, match="asked 4 registers"):
            await bus.read("dev", 1, 3, 0, 4)
        assert bus.stats.errors == bus.stats.requests >= 1  # each try counted (with retries)
        unit.extra = 0  # the unit behaves again (a new bus: the old one's breaker backs off)
        await bus.close()
        bus = ModbusBus(cfg)
        assert await bus.read("dev", 1, 3, 0, 4) == [0, 1, 2, 3]
    finally:
        await bus.close()
        await sim.stop()


# ---- a serial TTS unit's replies ---------------------------------------------------------------

Script = list[bytes | None]  # one entry per request: the reply, b"" for silence, None to hang up


@contextlib.asynccontextmanager
async def scripted_unit(script: Script) -> AsyncIterator[Syn6288Unit]:
    """A TCP 'serial server' whose unit answers each frame with the next scripted reply."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while script:
                head = await reader.readexactly(3)
                await reader.readexactly(head[1] << 8 | head[2])
                reply = script.pop(0)
                if reply is None:
                    break
                writer.write(reply)
                await writer.drain()
            await reader.read()  # script done: keep the line open until the client goes
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    unit = Syn6288Unit("speaker-1", SerialPort(f"socket://127.0.0.1:{port}", 9600), 0.3)
    try:
        yield unit
    finally:
        await unit.close()
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize(("bad", "error"), [
    (b"\x00\x00", DeviceProtocolError),  # not a status
    (b"\x45\x45", DeviceProtocolError),  # an error byte twice
    (b"\x41", DeviceUnavailableError),  # half a status, then silence
    (b"", DeviceUnavailableError),  # silence
    (None, DeviceUnavailableError),  # the serial server hangs up
])
async def test_a_bad_status_reply_is_a_device_error_and_the_next_poll_resyncs(
        bad: bytes | None, error: type[Exception]) -> None:
    async with scripted_unit([bad, syn6288.STATUS_IDLE, syn6288.STATUS_BUSY]) as unit:
        async with asyncio.timeout(5):
            with pytest.raises(error):
                await unit.status()
            # a bad reply drops the stream; the reopened one is in step again
            assert await unit.status() == {"busy": False, "amp_fault": None}


async def test_trailing_garbage_after_a_status_is_caught_on_the_next_poll() -> None:
    script: Script = [syn6288.STATUS_IDLE + b"\xff" * 1000, b"", syn6288.STATUS_BUSY]
    async with scripted_unit(script) as unit:
        async with asyncio.timeout(5):
            assert (await unit.status())["busy"] is False
            with pytest.raises(DeviceProtocolError):
                await unit.status()  # reads two of the stray bytes: out of step, reconnect
            assert (await unit.status())["busy"] is True


@pytest.mark.parametrize("ack", [b"\x45", b"\x00", b"\xff"])
async def test_a_refused_or_garbled_speak_ack_fails_the_play(ack: bytes) -> None:
    async with scripted_unit([ack]) as unit:
        async with asyncio.timeout(5):
            with pytest.raises(DeviceProtocolError, match="refused"):
                await unit.speak(Play(1, 0, "测试"))
