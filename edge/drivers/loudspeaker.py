"""Loudspeaker broadcast unit with a SYN6288-style TTS board (firmware_notes/syn6288-tts.md)."""

from __future__ import annotations

import asyncio
import time
from typing import ClassVar

from typing_extensions import override

from edge.config import LoudspeakerDevice
from edge.drivers._codecs import syn6288
from edge.drivers._serial import SerialPort
from edge.drivers.base import AlarmChange, PollingDriver, Reading, Sink
from edge.errors import DeviceProtocolError, DeviceUnavailableError

SPEAKER_OFFLINE = "speaker_offline"


class LoudspeakerDriver(PollingDriver[LoudspeakerDevice]):
    """Poll the unit's busy/idle status; raise ``speaker_offline`` when it stops answering."""

    kind: ClassVar[str] = "loudspeaker"

    def __init__(self, config: LoudspeakerDevice, port: SerialPort) -> None:
        timeout_s = config.timeout_s or 1.0
        super().__init__(config, config.name, poll_interval_s=config.poll_interval_s,
                         timeout_s=timeout_s + 5.0)
        self._port = port
        self._io: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._reply_timeout_s = timeout_s
        self._io_lock = asyncio.Lock()

    async def _exchange(self, request: bytes, reply_len: int) -> bytes:
        async with self._io_lock:  # a status poll and a play must not interleave on the line
            return await self._exchange_locked(request, reply_len)

    async def _exchange_locked(self, request: bytes, reply_len: int) -> bytes:
        if self._io is None:
            self._io = await self._port.open(self.name)
        reader, writer = self._io
        try:
            writer.write(request)
            async with asyncio.timeout(self._reply_timeout_s):
                await writer.drain()
                return await reader.readexactly(reply_len)
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError) as exc:
            self._io = None
            await self._port.close()
            raise DeviceUnavailableError(self.name, f"no status reply: {exc!r}") from exc

    async def play_tts(self, text: str, volume: int) -> dict[str, object]:
        """Speak ``text`` at ``volume`` (0-16); return once the unit accepted it."""
        try:
            frame = syn6288.speak(f"[v{volume}]{text}")
        except ValueError as exc:
            raise DeviceProtocolError(self.name, str(exc)) from exc
        reply = await self._exchange(frame, 1)
        if reply != b"\x41":
            raise DeviceProtocolError(self.name, f"unit refused the text ({reply.hex()})")
        return {"played": "accepted", "chars": len(text)}

    async def stop_playback(self) -> dict[str, object]:
        """Stop what is playing."""
        reply = await self._exchange(syn6288.frame(syn6288.CMD_STOP), 1)
        return {"stopped": reply == b"\x41"}

    @override
    async def poll(self) -> Reading:
        reply = await self._exchange(syn6288.frame(syn6288.CMD_STATUS), 2)
        try:
            busy = syn6288.parse_status(reply)
        except ValueError as exc:
            self._io = None
            await self._port.close()  # resynchronise: a stray byte would shift every reply
            raise DeviceProtocolError(self.name, str(exc)) from exc
        return Reading(self.name, {"busy": busy}, time.time_ns(), time.monotonic_ns())

    @override
    async def on_offline(self, sink: Sink) -> None:
        await sink.alarm(AlarmChange(self.name, SPEAKER_OFFLINE, "raised", prio=1, severity=2))

    @override
    async def on_online(self, sink: Sink) -> None:
        if SPEAKER_OFFLINE in sink.active_alarms(self.name):
            await sink.alarm(AlarmChange(self.name, SPEAKER_OFFLINE, "cleared", prio=1,
                                         severity=2))

    @override
    async def close(self) -> None:
        await self._port.close()
