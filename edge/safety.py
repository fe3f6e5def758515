"""Device safety rules for downlink commands (check 5 of design/events.md §Commands).

Safety-relevant actions — switching lights, speaking in the street — are limited even when a
command is authentic: a stolen platform key must not be able to flicker a street or wake a
neighbourhood at night.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import deque
from collections.abc import Callable

from edge.config import EdgeConfig, LoudspeakerDevice, StreetlightDevice
from edge.errors import CommandRejectedError
from edge.light_schedule import is_astronomical

SWITCH_WINDOW_S = 60.0
MAX_SWITCHES_KEPT = 64  # more than any max_switches_per_min (<= 60): the window is always whole


SPEAKER_PLAYS = frozenset({"speaker.play_tts", "speaker.play_clip"})


class RelayLog:
    """A lamp relay's known state and the monotonic times it changed (what wears it).

    The driver owns one and feeds it every state it verifies or polls, whoever switched the
    relay (a command, a schedule step, a hand at the cabinet); the switch-rate rule reads it.
    It counted ``light.set`` commands before: four ``on: true`` to a lamp already on made the
    fifth ``unsafe`` (issue 20 #10).
    """

    def __init__(self) -> None:
        self.on: bool | None = None  # None: not read yet
        self.changes: deque[float] = deque(maxlen=MAX_SWITCHES_KEPT)

    def observe(self, on: bool, now_mono: float | None = None) -> None:
        """Record that the relay is ``on`` now; a change of a known state is one switch."""
        if self.on is not None and on != self.on:
            self.changes.append(time.monotonic() if now_mono is None else now_mono)
        self.on = on

    def recent(self, now_mono: float) -> int:
        """Return the switches within the last SWITCH_WINDOW_S."""
        return sum(1 for at in self.changes if now_mono - at <= SWITCH_WINDOW_S)


RelayLogs = Callable[[str], RelayLog | None]


def in_quiet_hours(spec: str, local: dt.time) -> bool:
    """Return whether ``local`` falls in ``HH:MM-HH:MM`` (which may wrap past midnight)."""
    start_s, end_s = spec.split("-")
    start, end = dt.time.fromisoformat(start_s), dt.time.fromisoformat(end_s)
    return start <= local < end if start <= end else local >= start or local < end


class SafetyRules:
    """Per-device limits: switch rate, dim range, quiet hours, volume, text length."""

    def __init__(self, config: EdgeConfig, *, now: object = None,
                 relays: RelayLogs | None = None) -> None:
        self.config = config
        # the drivers' relay logs (they see schedule steps too); a device without one (no
        # driver yet, or rules used alone) gets a log here, fed with the switches admitted
        self._relays = relays
        self._own: dict[str, RelayLog] = {}
        self._now = now  # tests inject a clock: () -> datetime (UTC)

    def _utc_now(self) -> dt.datetime:
        if callable(self._now):
            value = self._now()
            assert isinstance(value, dt.datetime)
            return value
        return dt.datetime.now(dt.UTC)

    def check(self, device_name: str, action: str, params: object, roles: set[str]) -> str | None:
        """Return why the action is unsafe now, or None."""
        try:
            device = self.config.device(device_name)
        except KeyError:
            return "unknown device"
        try:
            if isinstance(device, StreetlightDevice) and action == "light.set":
                self._dim(device, [params])
                self._switch_rate(device, bool(getattr(params, "on", False)))
            if isinstance(device, StreetlightDevice) and action == "light.schedule":
                self._schedule(device, list(getattr(params, "steps", [])))
            if isinstance(device, LoudspeakerDevice) and action == "speaker.play_clip":
                self._clip(device, params)
            if isinstance(device, LoudspeakerDevice) and action in SPEAKER_PLAYS:
                # a clip is loud too: volume and quiet hours hold for it (never emergency)
                self._speaker(device, params, roles)
        except CommandRejectedError as exc:
            return str(exc)
        return None

    @staticmethod
    def _dim(device: StreetlightDevice, steps: list[object]) -> None:
        if device.model != "lamp_controller":
            raise CommandRejectedError(f"{device.name} is a {device.model} meter without a relay")
        for step in steps:
            dim = int(getattr(step, "dim_pct", 100))
            if getattr(step, "on", False) and dim < device.min_dim_pct:
                raise CommandRejectedError(f"dim {dim} % is below {device.name}'s minimum "
                                           f"{device.min_dim_pct} % (the driver flickers)")

    def _schedule(self, device: StreetlightDevice, steps: list[object]) -> None:
        self._dim(device, steps)
        if device.asset.lat is None or device.asset.lon is None:
            for step in steps:
                at = str(getattr(step, "at", ""))
                if is_astronomical(at):
                    raise CommandRejectedError(f"{at!r} needs {device.name}'s asset lat/lon")

    def _switch_rate(self, device: StreetlightDevice, on: bool) -> None:
        """Refuse a relay change beyond the limit.

        A command that leaves the relay as it is (a repeat, a dim change) does not wear it and
        is neither refused nor counted.
        """
        now = time.monotonic()
        log = self._relays(device.name) if self._relays is not None else None
        own = log is None
        if log is None:
            log = self._own.setdefault(device.name, RelayLog())
        if log.on is not None and log.on == on:
            return
        recent = log.recent(now)
        if recent >= device.max_switches_per_min:
            raise CommandRejectedError(f"{device.name} switched {recent} times in the "
                                       f"last minute (limit {device.max_switches_per_min})")
        if own:  # no driver reports it: count the admitted change (an unknown state counts)
            log.changes.append(now)
            log.on = on

    @staticmethod
    def _clip(device: LoudspeakerDevice, params: object) -> None:
        name, digest = str(getattr(params, "clip", "")), str(getattr(params, "sha256", ""))
        if device.clips.get(name) != digest:
            raise CommandRejectedError(f"clip {name!r} with sha256 {digest[:12]}… is not on "
                                       f"{device.name}'s allow-list")

    def _speaker(self, device: LoudspeakerDevice, params: object, roles: set[str]) -> None:
        text = str(getattr(params, "text", ""))
        volume = int(getattr(params, "volume", 0))
        emergency = getattr(params, "priority", "normal") == "emergency" and \
            "broadcast-emergency" in roles
        if len(text) > device.max_text_chars:
            raise CommandRejectedError(f"text of {len(text)} characters exceeds "
                                       f"{device.max_text_chars}")
        if emergency:
            return  # only the broadcast-emergency role overrides quiet hours and volume
        if volume > device.max_volume:
            raise CommandRejectedError(f"volume {volume} above the unit's maximum "
                                       f"{device.max_volume}")
        if device.quiet_hours:
            local = (self._utc_now() + dt.timedelta(hours=self.config.gateway.utc_offset_h)).time()
            if in_quiet_hours(device.quiet_hours, local):
                raise CommandRejectedError(f"quiet hours {device.quiet_hours} "
                                           f"(local {local:%H:%M})")
