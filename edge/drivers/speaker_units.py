"""Loudspeaker units by model: what the driver and its broadcast queue talk to.

* ``Syn6288Unit``: a serial TTS board (firmware_notes/syn6288-tts.md); busy/idle by polling.
* ``IpSpeakerUnit``: an IP speaker on the southbound broker (firmware_notes/ip-speaker.md):
  ``{topic}/play`` and ``{topic}/stop`` out, ``{topic}/status`` in (JSON).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from types import MappingProxyType
from typing import Any, Protocol

from edge.drivers._codecs import ip_speaker, syn6288
from edge.drivers._codecs.tts_text import unencodable_at
from edge.drivers._mqtt_device import DeviceBroker
from edge.drivers.broadcast import Play
from edge.drivers.probe_trace import WireRecord
from edge.drivers.probe_trace import current as current_probe
from edge.errors import DeviceProtocolError, DeviceUnavailableError, LinkError
from edge.transports.mqtt import MqttLink
from edge.transports.serial import SerialPort

SPEECH_S_PER_CHAR = 0.3  # SYN6288 reads about 4 Chinese characters a second
# A clip is sent by name and hash only (firmware_notes/ip-speaker.md): the gateway does not
# know its length, so its result is awaited for a fixed bound that covers a long recorded
# announcement; a speaker silent past it is reported unavailable, not waited on for ever.
CLIP_TIMEOUT_S = 120.0
PUBACK_TIMEOUT_S = 10.0  # the southbound broker is on the LAN: seconds mean it is gone


class SpeakerUnit(Protocol):
    """What a loudspeaker model offers the driver."""

    rejected: int  # status messages refused (bad JSON, bad values): the driver's bad_values

    def running(self) -> AbstractAsyncContextManager[None]:
        """Hold what the unit runs beside the driver, for as long as the driver's run lasts."""
        ...

    async def status(self) -> dict[str, Any]:
        """Return at least ``busy`` (bool) and ``amp_fault`` (bool | None)."""
        ...

    async def speak(self, play: Play) -> None:
        """Say ``play.text`` (or play ``play.clip``); return when done; DeviceError on failure."""
        ...

    async def stop(self) -> None:
        """Stop what is playing."""
        ...

    async def close(self) -> None:
        """Release the transport."""
        ...


class Syn6288Unit:
    """SYN6288-style serial TTS board."""

    def __init__(self, name: str, port: SerialPort, reply_timeout_s: float,
                 encoding: str = "gbk") -> None:
        self.name = name
        self._encoding = encoding
        self._port = port
        self._reply_timeout_s = reply_timeout_s
        self._io: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._lock = asyncio.Lock()  # a status poll and a play must not interleave
        self.rejected = 0  # replies are fixed bytes: a bad one is a protocol error instead

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Nothing runs beside the driver: the board answers when polled."""
        yield

    async def _exchange(self, request: bytes, reply_len: int) -> bytes:
        async with self._lock:
            if self._io is None:
                self._io = await self._port.open(self.name)
            reader, writer = self._io
            try:
                writer.write(request)
                async with asyncio.timeout(self._reply_timeout_s):
                    await writer.drain()
                    return await reader.readexactly(reply_len)
            except (TimeoutError, asyncio.IncompleteReadError, ConnectionError) as exc:
                await self.close()
                raise DeviceUnavailableError(self.name, f"no reply: {exc!r}") from exc

    async def status(self) -> dict[str, Any]:
        """Poll busy/idle; a stray byte means we lost sync: reconnect to resynchronise."""
        request = syn6288.frame(syn6288.CMD_STATUS)
        trace = current_probe()
        try:
            reply = await self._exchange(request, 2)
        except DeviceUnavailableError as exc:
            if trace is not None:  # `edge probe`: the status frame sent, and what went wrong
                trace.add(WireRecord(f"serial {self._port.url}", None,
                                     f"status frame {request.hex(' ')}", error=exc.detail))
            raise
        if trace is not None:
            trace.add(WireRecord(f"serial {self._port.url}", None,
                                 f"status frame {request.hex(' ')}", raw=reply.hex(" ")))
        try:
            return {"busy": syn6288.parse_status(reply), "amp_fault": None}
        except ValueError as exc:
            await self.close()
            raise DeviceProtocolError(self.name, str(exc)) from exc

    async def speak(self, play: Play) -> None:
        """Say one text and wait until the unit is idle again."""
        if play.clip is not None:  # it only speaks text (firmware_notes/syn6288-tts.md)
            raise DeviceUnavailableError(self.name, "SYN6288 has no clip store")
        try:
            frame = syn6288.speak(play.text, self._encoding, volume=play.volume)
        except ValueError as exc:
            raise DeviceProtocolError(self.name, str(exc)) from exc
        if await self._exchange(frame, 1) != b"\x41":
            raise DeviceProtocolError(self.name, "unit refused the text")
        deadline = time.monotonic() + SPEECH_S_PER_CHAR * len(play.text) + 5.0
        while True:  # it answers "busy" until it is done
            await asyncio.sleep(0.1)
            if not (await self.status())["busy"]:
                return
            if time.monotonic() > deadline:
                raise DeviceUnavailableError(self.name, "still speaking long after the text")

    async def stop(self) -> None:
        """Send the stop frame."""
        await self._exchange(syn6288.frame(syn6288.CMD_STOP), 1)

    async def close(self) -> None:
        """Drop the serial stream (reopened on the next exchange)."""
        self._io = None
        await self._port.close()


class IpSpeakerUnit:
    """An IP speaker speaking JSON on the southbound broker.

    ``status()``, ``speak()`` and ``stop()`` connect the link when they need it (a broker
    outage is their caller's failure: a failed poll, a failed play). The status reader of a
    link is a task on the TaskGroup of ``running()``, which the loudspeaker driver's run
    holds; outside it (``edge probe``, a ``speaker.stop`` between two runs) a link has no
    reader, so ``status()`` has no fresh report and a play gets no result.
    """

    def __init__(self, name: str, broker: DeviceBroker, topic: str, stale_after_s: float
                 ) -> None:
        self.name = name
        self._broker = broker
        self.topic = topic.rstrip("/")
        self._stale_after_s = stale_after_s
        self._link: MqttLink | None = None
        self._tg: asyncio.TaskGroup | None = None  # running()'s, while the driver runs
        self._reader: asyncio.Task[None] | None = None
        self._reader_died: Exception | None = None  # what ended the reader, if not a close
        self._last: tuple[float, ip_speaker.Status] | None = None
        self._pending: dict[str, asyncio.Future[str]] = {}
        self._counter = 0
        self.rejected = 0
        self._log = logging.getLogger(f"edge.drivers.loudspeaker.{name}")

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Hold the TaskGroup the status reader runs on, for the driver's run (issue 13).

        A link connected before (by a probe or a stop outside a run) has no reader: it is
        dropped, and the next call connects one that has. On exit the reader is cancelled and
        the link closed; the next run connects afresh.
        """
        await self.close()
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            try:
                yield
            finally:
                self._tg = None
                await self.close()

    async def _connected(self) -> MqttLink:
        died = self._reader_died
        if died is not None:
            # the reader died of a bug: say so to the caller (a failed poll or play) instead
            # of serving a stale status for ever (issue 14 #1); the next call reconnects
            await self.close()
            raise DeviceProtocolError(self.name, f"status reader died: {died!r}"[:200]) \
                from died
        if self._link is not None and not self._link.closed.done():
            return self._link
        await self.close()
        link = await self._broker.connect(self.name, [f"{self.topic}/status"])
        self._link = link
        if self._tg is not None:  # cancelled and awaited in close(), or by the group's end
            self._reader = self._tg.create_task(self._read_guarded(link),
                                                name=f"ip-speaker[{self.name}]")
        return link

    async def _read_guarded(self, link: MqttLink) -> None:
        """Read ``link`` until cancelled; keep a bug for the next call instead of raising it.

        Raised, it would end the driver's TaskGroup, and with it a broadcast on air: a
        status the reader cannot handle must not silence an emergency announcement.
        """
        try:
            await self._read(link)
        except Exception as exc:  # noqa: BLE001 - reported by the next _connected() (see above)
            self._reader_died = exc

    async def _read(self, link: MqttLink) -> None:
        while True:
            item = await link.inbound.get()
            try:
                status = ip_speaker.decode_status(item.payload)
            except ValueError as exc:
                # counted and dropped: a hostile status must not end this reader (issue 14 #1)
                self.rejected += 1
                log = self._log.warning if self.rejected == 1 else self._log.debug
                log("%s: status refused (%s); counted in bad_values", self.name,
                    str(exc)[:120])
                continue
            self._last = (time.monotonic(), status)
            if status.play_id is not None and status.result is not None:
                fut = self._pending.pop(status.play_id, None)
                if fut is not None and not fut.done():
                    fut.set_result(status.result)

    async def status(self) -> dict[str, Any]:
        """Return the speaker's last status if fresh; it publishes one periodically."""
        await self._connected()
        if self._last is None or time.monotonic() - self._last[0] > self._stale_after_s:
            raise DeviceUnavailableError(self.name, "no status from the speaker")
        status = self._last[1]
        trace = current_probe()
        if trace is not None:  # `edge probe`: the unit's last status report, as decoded
            age_s = time.monotonic() - self._last[0]
            trace.add(WireRecord(f"mqtt {self.topic}/status", None,
                                 f"status report {age_s:.1f} s old", raw=repr(status)))
        return {"busy": status.playing, "amp_fault": status.amp_fault}

    async def speak(self, play: Play) -> None:
        """Publish a play (a text or a clip) and wait for the speaker's result for it."""
        link = await self._connected()
        self._counter += 1
        play_id = f"{play.cmd_id or 'local'}-{self._counter}"
        if play.clip is not None:
            try:
                body = ip_speaker.encode_play_clip(play_id, play.clip, play.sha256 or "",
                                                   play.volume, emergency=play.rank == 0)
            except ValueError as exc:
                raise DeviceProtocolError(self.name, str(exc)) from exc
            timeout_s = CLIP_TIMEOUT_S
        else:
            body = ip_speaker.encode_play(play_id, play.text, play.volume,
                                          emergency=play.rank == 0)
            timeout_s = SPEECH_S_PER_CHAR * len(play.text) + 10.0
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._pending[play_id] = fut
        try:
            await self._publish(link, "play", body)
            async with asyncio.timeout(timeout_s):
                result = await fut
        except TimeoutError as exc:
            raise DeviceUnavailableError(self.name, "no result from the speaker") from exc
        finally:
            self._pending.pop(play_id, None)
        if result != "played":
            raise DeviceProtocolError(self.name, f"speaker reported {result}")

    async def stop(self) -> None:
        """Publish a stop."""
        link = await self._connected()
        await self._publish(link, "stop", b"{}")

    async def _publish(self, link: MqttLink, leaf: str, body: bytes) -> None:
        """Publish to ``{topic}/{leaf}`` and wait for the broker's PUBACK, bounded.

        A lost link or a refusing broker is the device's unavailability, never a transport
        error out of a command's executor (logged there as a driver bug).
        """
        try:
            async with asyncio.timeout(PUBACK_TIMEOUT_S):
                code = await link.publish(f"{self.topic}/{leaf}", body)
        except TimeoutError as exc:
            raise DeviceUnavailableError(self.name, f"no PUBACK for the {leaf} in "
                                                    f"{PUBACK_TIMEOUT_S:g} s") from exc
        except LinkError as exc:
            raise DeviceUnavailableError(self.name, f"{leaf} not sent: {exc}") from exc
        if code >= 0x80:
            raise DeviceUnavailableError(self.name, f"the broker refused the {leaf} "
                                                    f"(reason 0x{code:02x})")

    async def close(self) -> None:
        """Stop the reader and the link."""
        self._reader_died = None
        if self._reader is not None:
            self._reader.cancel()
            # wait() returns when it has ended and raises nothing of its own: a reader's bug
            # was kept by _read_guarded(), and only our caller's cancellation goes through
            await asyncio.wait([self._reader])
            self._reader = None
        if self._link is not None:
            await self._link.close()
            self._link = None


def _json_text_problem(text: str, _encoding: str, _volume: int) -> str | None:
    """Return why an IP speaker could not take ``text`` in its JSON, or None.

    Any text that is text goes (the speaker's own TTS); a lone surrogate is not.
    """
    at = unencodable_at(text, "utf-8")
    return None if at is None else f"character {at} (U+{ord(text[at]):04X}) is not text"


# (text, the unit's encoding, volume) -> why the unit cannot speak it, or None; by model
TEXT_PROBLEMS: Mapping[str, Callable[[str, str, int], str | None]] = MappingProxyType({
    "syn6288": syn6288.text_problem, "ip_speaker": _json_text_problem})
