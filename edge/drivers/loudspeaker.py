"""Loudspeaker broadcast units: serial TTS boards and IP speakers (firmware_notes/)."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from edge.drivers.base import AlarmChange, PollingDriver, Reading, Sink, Value, override
from edge.drivers.broadcast import BroadcastQueue, Play
from edge.drivers.kind import (
    NO_BROKER,
    Action,
    Escalation,
    Kind,
    NoParams,
    Params,
    SafetyContext,
    required,
)
from edge.drivers.speaker_units import TEXT_PROBLEMS, IpSpeakerUnit, SpeakerUnit, Syn6288Unit
from edge.errors import CommandRejectedError, ConfigError
from edge.kinds.loudspeaker import LoudspeakerDevice
from edge.safety import in_quiet_hours
from edge.shapes import Ge, Le, MaxLen, MinLen, Pattern, shape
from edge.transports.serial import SerialPort

if TYPE_CHECKING:
    from collections.abc import Set as AbstractSet

    from edge.config import EdgeConfig
    from edge.drivers.transport_pool import Transports

SPEAKER_OFFLINE = "speaker_offline"
PLAYBACK_FAILED = "playback_failed"
AMPLIFIER_FAULT = "amplifier_fault"
SCHEDULE_TICK_S = 5.0
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class LoudspeakerDriver(PollingDriver[LoudspeakerDevice]):
    """Poll the unit's status; queue plays; run stored schedules.

    Alarms: ``speaker_offline`` (no answer), ``amplifier_fault`` (where the model reports it),
    ``playback_failed`` (a play failed; cleared by the next that plays).
    """

    kind: ClassVar[str] = "loudspeaker"
    offline_alarm: ClassVar[str | None] = SPEAKER_OFFLINE

    def __init__(self, config: LoudspeakerDevice, unit: SpeakerUnit) -> None:
        timeout_s = config.timeout_s or 1.0
        super().__init__(config, config.name, poll_interval_s=config.poll_interval_s,
                         timeout_s=timeout_s + 5.0)
        self.unit = unit
        self._sink: Sink | None = None
        self.queue = BroadcastQueue(self.unit.speak, self.unit.stop, self._report)
        self.utc_offset_h = 8
        self._now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)

    @override
    async def poll(self) -> Reading:
        self.stats.bad_values = self.unit.rejected
        status = await self.unit.status()
        return Reading(self.name, {"busy": bool(status["busy"]),
                                   "amp_fault": status.get("amp_fault")},
                       time.time_ns(), time.monotonic_ns())

    @override
    async def on_reading(self, reading: Reading, sink: Sink) -> None:
        await sink.reading(reading)
        fault = reading.values.get("amp_fault")
        active = AMPLIFIER_FAULT in sink.active_alarms(self.name)
        if fault is True and not active:
            await sink.alarm(AlarmChange(self.name, AMPLIFIER_FAULT, "raised", prio=1,
                                         severity=2))
        elif fault is False and active:
            await sink.alarm(AlarmChange(self.name, AMPLIFIER_FAULT, "cleared", prio=1,
                                         severity=2))

    async def play_tts(self, text: str, volume: int, *, emergency: bool = False,
                       cmd_id: str | None = None) -> dict[str, object]:
        """Queue ``text``; its final result comes later as a ``command_result``."""
        queued = await self.queue.submit(text, volume=volume, emergency=emergency, cmd_id=cmd_id)
        return {"queued": queued, "chars": len(text),
                "priority": "emergency" if emergency else "normal"}

    async def play_clip(self, clip: str, sha256: str, volume: int, *,
                        cmd_id: str | None = None) -> dict[str, object]:
        """Queue a stored clip; its final result comes later as a ``command_result``.

        The safety rule has checked ``clip``/``sha256`` against the allow-list; a clip play is
        always normal priority (BroadcastQueue.submit).
        """
        queued = await self.queue.submit("", volume=volume, emergency=False, cmd_id=cmd_id,
                                         clip=clip, sha256=sha256)
        return {"queued": queued, "clip": clip, "priority": "normal"}

    async def stop_playback(self) -> dict[str, object]:
        """Stop what is playing."""
        await self.unit.stop()
        return {"stopped": True}

    async def _report(self, play: Play, status: str, why: str) -> None:
        sink = self._sink
        if sink is None:
            return
        detail: dict[str, Value] = {"source": play.source,
                                    "priority": "emergency" if play.rank == 0 else "normal"}
        action = "speaker.play_tts"
        if play.clip is not None:
            action = "speaker.play_clip"
            detail["clip"] = play.clip
        else:
            detail["text_chars"] = len(play.text)
        if why:
            detail["reason"] = why
        await sink.command_result(self.name, play.cmd_id, action, status, detail)
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
        # the unit's own tasks (an IP speaker's status reader) outlive the queue that plays
        # through them, and end with this run (issue 13)
        async with self.unit.running(), asyncio.TaskGroup() as tg:
            tg.create_task(self.queue.run(), name=f"broadcast[{self.name}]")
            tg.create_task(self._schedules(), name=f"schedule[{self.name}]")
            await super().run(sink)


    @override
    async def close(self) -> None:
        await self.unit.close()


@shape
class PlayTts(Params):
    """``speaker.play_tts``: speak a text."""

    text: Annotated[str, MinLen(1), MaxLen(200)]
    volume: Annotated[int, Ge(0), Le(16)] = 8
    priority: Literal["normal", "emergency"] = "normal"


@shape
class PlayClip(Params):
    """``speaker.play_clip``: play an allow-listed audio clip."""

    clip: Annotated[str, MinLen(1), MaxLen(64)]
    sha256: Annotated[str, Pattern(r"^[0-9a-f]{64}$")]
    volume: Annotated[int, Ge(0), Le(16)] = 8


async def _play_tts(driver: LoudspeakerDriver, params: PlayTts, cmd_id: str | None
                    ) -> dict[str, Any]:
    return await driver.play_tts(params.text, params.volume,
                                 emergency=params.priority == "emergency", cmd_id=cmd_id)


async def _play_clip(driver: LoudspeakerDriver, params: PlayClip, cmd_id: str | None
                     ) -> dict[str, Any]:
    return await driver.play_clip(params.clip, params.sha256, params.volume, cmd_id=cmd_id)


async def _stop(driver: LoudspeakerDriver, _params: NoParams, _cmd_id: str | None
                ) -> dict[str, Any]:
    return await driver.stop_playback()


def _emergency(params: PlayTts | PlayClip, roles: AbstractSet[str]) -> bool:
    # only the escalated role makes an emergency (a clip never is one)
    return isinstance(params, PlayTts) and \
        getattr(params, EMERGENCY.field) == EMERGENCY.value and EMERGENCY.role in roles


def _quiet_hours_knowable(context: SafetyContext, device: LoudspeakerDevice,
                          params: PlayTts | PlayClip, roles: AbstractSet[str]) -> None:
    """Fail safe: without a trusted clock a play may fall in the quiet hours (finding 10)."""
    if device.quiet_hours and not context.clock_trusted() and not _emergency(params, roles):
        raise CommandRejectedError("clock untrusted: quiet hours cannot be ruled out")


def _safe_play(context: SafetyContext, device: LoudspeakerDevice, params: PlayTts | PlayClip,
               roles: AbstractSet[str]) -> None:
    """Refuse text over the unit's limit; unless an emergency, a volume or a time it forbids.

    A volume over the unit's cap or a play in its quiet hours (or in hours that cannot be
    judged: an untrusted clock) is refused; only the ``broadcast-emergency`` role makes an
    emergency.
    """
    _quiet_hours_knowable(context, device, params, roles)
    _play_limits(context, device, params, roles)


def _play_limits(context: SafetyContext, device: LoudspeakerDevice,
                 params: PlayTts | PlayClip, roles: AbstractSet[str]) -> None:
    text = params.text if isinstance(params, PlayTts) else ""
    if len(text) > device.max_text_chars:
        raise CommandRejectedError(f"text of {len(text)} characters exceeds "
                                   f"{device.max_text_chars}")
    if _emergency(params, roles):
        return
    if params.volume > device.max_volume:
        raise CommandRejectedError(f"volume {params.volume} above the unit's maximum "
                                   f"{device.max_volume}")
    if device.quiet_hours:
        local = context.local_time()
        if in_quiet_hours(device.quiet_hours, local):
            raise CommandRejectedError(f"quiet hours {device.quiet_hours} "
                                       f"(local {local:%H:%M})")


def _safe_clip(context: SafetyContext, device: LoudspeakerDevice, params: PlayClip,
               roles: AbstractSet[str]) -> None:
    """Refuse a clip not on the unit's allow-list (name and SHA-256); then as any play.

    A clip is loud too: volume and quiet hours hold for it (it is never an emergency).
    """
    _quiet_hours_knowable(context, device, params, roles)
    if device.clips.get(params.clip) != params.sha256:
        raise CommandRejectedError(f"clip {params.clip!r} with sha256 {params.sha256[:12]}… "
                                   f"is not on {device.name}'s allow-list")
    _play_limits(context, device, params, roles)


def _text_problem(device: LoudspeakerDevice, params: PlayTts) -> str | None:
    """Return why the unit could not speak ``params.text``, or None (issue 19 re-test #7)."""
    problem = TEXT_PROBLEMS[device.model](params.text, device.text_encoding, params.volume)
    return None if problem is None else f"params.text: {problem}"


def _build(device: LoudspeakerDevice, config: EdgeConfig, transports: Transports
           ) -> LoudspeakerDriver:
    unit: SpeakerUnit
    if device.transport == "mqtt":
        if transports.broker is None:  # added by a reload: the broker starts at a restart
            raise ConfigError([f"{device.name}: {NO_BROKER}"])
        unit = IpSpeakerUnit(device.name, transports.broker,
                             required(device.name, "topic", device.topic),
                             stale_after_s=3 * device.poll_interval_s + 5)
    else:
        port = required(device.name, "port", device.port)
        unit = Syn6288Unit(device.name, SerialPort(port, device.baud),
                           device.timeout_s or 1.0, device.text_encoding)
    driver = LoudspeakerDriver(device, unit)
    driver.utc_offset_h = config.gateway.utc_offset_h  # schedules are local time
    return driver


# An emergency play needs its own role, and stopping one does too for a while: a 200-character
# text plays in under a minute, a queue ahead of it adds more (finding 11, D42)
EMERGENCY = Escalation("priority", "emergency", "broadcast-emergency", guard_s=600.0,
                       during="an emergency play")
KIND = Kind("loudspeaker", (LoudspeakerDriver,), _build, {
    "speaker.play_tts": Action("broadcast", PlayTts, _play_tts, _safe_play,
                               params_problem=_text_problem, escalation=EMERGENCY),
    # clips live on the speaker, referenced by name and SHA-256; a SYN6288 only speaks text:
    # firmware_notes/ip-speaker.md and firmware_notes/syn6288-tts.md
    "speaker.play_clip": Action("broadcast", PlayClip, _play_clip, _safe_clip,
                                models=frozenset({"ip_speaker"})),
    "speaker.stop": Action("broadcast", NoParams, _stop, guarded=True),
}, fields=frozenset({"busy", "amp_fault"}),
    alarms=(SPEAKER_OFFLINE, AMPLIFIER_FAULT, PLAYBACK_FAILED))
