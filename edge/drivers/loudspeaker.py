"""Loudspeaker broadcast unit with a SYN6288-style TTS board (firmware_notes/syn6288-tts.md)."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Callable
from typing import ClassVar

from typing_extensions import override

from edge.config import LoudspeakerDevice
from edge.drivers._codecs import syn6288
from edge.drivers._serial import SerialPort
from edge.drivers.base import AlarmChange, PollingDriver, Reading, Sink, Value
from edge.drivers.broadcast import BroadcastQueue, Play
from edge.errors import DeviceProtocolError, DeviceUnavailableError

SPEAKER_OFFLINE = "speaker_offline"
PLAYBACK_FAILED = "playback_failed"
SPEECH_S_PER_CHAR = 0.3  # SYN6288 reads about 4 Chinese characters a second
SCHEDULE_TICK_S = 5.0
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


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
        self._sink: Sink | None = None
        self.queue = BroadcastQueue(self._speak, self._stop_unit, self._report)
        self.utc_offset_h = 8
        self._now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)

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

    async def play_tts(self, text: str, volume: int, *, emergency: bool = False,
                       cmd_id: str | None = None) -> dict[str, object]:
        """Queue ``text``; its final result comes later as a ``command_result``."""
        queued = await self.queue.submit(text, volume=volume, emergency=emergency, cmd_id=cmd_id)
        return {"queued": queued, "chars": len(text),
                "priority": "emergency" if emergency else "normal"}

    async def _speak(self, play: Play) -> None:
        """Say one text and wait until the unit is idle again (the queue's player)."""
        try:
            frame = syn6288.speak(f"[v{play.volume}]{play.text}")
        except ValueError as exc:
            raise DeviceProtocolError(self.name, str(exc)) from exc
        reply = await self._exchange(frame, 1)
        if reply != b"\x41":
            raise DeviceProtocolError(self.name, f"unit refused the text ({reply.hex()})")
        # the unit talks for a while; it answers "busy" until it is done
        deadline = time.monotonic() + SPEECH_S_PER_CHAR * len(play.text) + 5.0
        while True:
            await asyncio.sleep(0.1)
            busy = syn6288.parse_status(await self._exchange(syn6288.frame(
                syn6288.CMD_STATUS), 2))
            if not busy:
                return
            if time.monotonic() > deadline:
                raise DeviceUnavailableError(self.name, "still speaking long after the text")

    async def _report(self, play: Play, status: str, why: str) -> None:
        sink = self._sink
        if sink is None:
            return
        detail: dict[str, Value] = {"text_chars": len(play.text), "source": play.source,
                                    "priority": "emergency" if play.rank == 0 else "normal"}
        if why:
            detail["reason"] = why
        await sink.command_result(self.name, play.cmd_id, "speaker.play_tts", status, detail)
        if status == "failed" and PLAYBACK_FAILED not in sink.active_alarms(self.name):
            await sink.alarm(AlarmChange(self.name, PLAYBACK_FAILED, "raised", prio=1,
                                         severity=2, data={"reason": why}))
        elif status == "played" and PLAYBACK_FAILED in sink.active_alarms(self.name):
            await sink.alarm(AlarmChange(self.name, PLAYBACK_FAILED, "cleared", prio=1,
                                         severity=2))

    async def _schedules(self) -> None:
        """Queue stored announcements at their local time; needs no uplink."""
        fired: set[tuple[str, str]] = set()
        while True:
            local = self._now() + dt.timedelta(hours=self.utc_offset_h)
            day, hhmm = DAYS[local.weekday()], f"{local:%H:%M}"
            for entry in self.config.schedules:
                key = (f"{local:%Y-%m-%d}", entry.at + entry.text)
                if entry.at == hhmm and day in entry.days and key not in fired:
                    fired.add(key)
                    await self.queue.submit(entry.text, volume=entry.volume, emergency=False,
                                            source="schedule")
            fired = {k for k in fired if k[0] == f"{local:%Y-%m-%d}"}
            await asyncio.sleep(SCHEDULE_TICK_S)

    @override
    async def run(self, sink: Sink) -> None:
        self._sink = sink
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.queue.run(), name=f"broadcast[{self.name}]")
            tg.create_task(self._schedules(), name=f"schedule[{self.name}]")
            await super().run(sink)

    async def _stop_unit(self) -> None:
        await self._exchange(syn6288.frame(syn6288.CMD_STOP), 1)

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
