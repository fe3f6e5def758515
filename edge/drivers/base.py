"""The driver contract, the polling loop every poll-based driver shares, and the Sink.

Drivers know nothing of the outbox or the uplink: they hand readings, alarm transitions and
state changes to a ``Sink`` that the agent implements.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar

from edge.errors import DeviceError

ConfigT = TypeVar("ConfigT")
_F = TypeVar("_F", bound=Callable[..., Any])

if sys.version_info >= (3, 12):
    from typing import override as override  # noqa: PLC0414 - an explicit re-export (mypy)
elif TYPE_CHECKING:
    from typing_extensions import override as override  # noqa: PLC0414 - re-exported
else:
    def override(method: _F) -> _F:
        """``typing.override`` of 3.12: marks a method for the type checker, nothing more.

        typing_extensions would bring ~330 KiB of the agent's RSS for this one decorator
        (issue 13's RSS goal, D87).
        """
        with contextlib.suppress(AttributeError, TypeError):
            method.__override__ = True  # type: ignore[attr-defined]
        return method

Value = float | int | str | bool | None


class DeviceState(StrEnum):
    """Health of a device as reported in ``state`` events."""

    ONLINE = "online"
    DEGRADED = "degraded"  # some polls fail
    OFFLINE = "offline"  # no answer for ``offline_after`` polls in a row


@dataclass(frozen=True, slots=True)
class Reading:
    """Values read from one device at one instant (never merged with another read)."""

    device: str
    values: Mapping[str, Value]
    at_ns: int  # wall clock when the answer arrived (read time, not send time)
    mono_ns: int  # monotonic twin of ``at_ns``, for re-stamping after a clock sync

    def __post_init__(self) -> None:
        """Refuse what the event encoder would refuse later, far from its cause.

        Raises ValueError for NaN or ±Infinity (JSON cannot carry them: the encoder runs
        with ``allow_nan=False``) and TypeError for a value that is not a ``Value``
        (issue 14 #1). Drivers check device data before building a reading; this is the
        net under all of them.
        """
        for key, value in self.values.items():
            if isinstance(value, float):
                if not math.isfinite(value):
                    msg = f"{self.device}: non-finite value for {key!r}"
                    raise ValueError(msg)
            elif value is not None and not isinstance(value, int | str):  # bool is an int
                msg = f"{self.device}: {key!r} is a {type(value).__name__}, not a value"
                raise TypeError(msg)


@dataclass(frozen=True, slots=True)
class AlarmChange:
    """An alarm raised or cleared by a device's rules."""

    device: str
    kind: str
    state: str  # "raised" | "cleared"
    prio: int
    severity: int
    value: float | None = None
    threshold: float | None = None
    unit: str | None = None
    event_class: str | None = None
    data: Mapping[str, Value] = field(default_factory=dict)


class Sink(Protocol):
    """Where drivers deliver; the agent's implementation turns these into outbox events."""

    async def reading(self, reading: Reading) -> None:
        """Deliver a reading (returns once it is durable)."""

    async def alarm(self, change: AlarmChange) -> None:
        """Deliver an alarm raise or clear (returns once it is durable)."""

    async def state(self, device: str, state: DeviceState, detail: str) -> None:
        """Report a device health change."""

    def active_alarms(self, device: str) -> set[str]:
        """Return the alarm kinds still active for ``device`` (persisted across restarts)."""
        ...

    async def command_result(self, device: str, cmd_id: str | None, action: str,
                             status: str, detail: Mapping[str, Value]) -> None:
        """Report how a long-running action (a broadcast) ended."""

    def gnss_time(self, utc_ns: int) -> None:
        """Offer a GNSS fix's time as a time source (a gateway with a GPS gets trusted time)."""


class StateDocs(Protocol):
    """A device's document kept across restarts (edge.buffer.device_state, injected).

    Both methods block (a read of a small file, a durable write): call them in a thread.
    """

    def load(self, device: str) -> dict[str, Any] | None:
        """Return the stored JSON object, or None; ``StoreCorruptError`` when unreadable."""

    def save(self, device: str, doc: dict[str, Any] | None) -> None:
        """Replace the document (None: remove it), durably, before returning."""


# where a kind keeps its StateDocs (a folder of state_dir) and how big one may be
StateFolder = Callable[[str, int], StateDocs]

COMM_LOST = "comm_lost"  # a polled device that stopped answering (offline_alarm)
EARLIER = "earlier"  # prefix of a last_error the device has recovered from


@dataclass(slots=True)
class DriverStats:
    """Counters a driver keeps for metrics and ``edge status``."""

    polls_ok: int = 0
    polls_failed: int = 0
    overruns: int = 0
    parse_errors: int = 0
    bad_values: int = 0  # values refused where a reading is built (NaN, wrong type, ...)
    last_latency_s: float = 0.0
    last_error: str = ""
    last_values: dict[str, Value] = field(default_factory=dict)
    state: DeviceState = DeviceState.ONLINE
    last_ok_mono: float = 0.0


class Driver(ABC, Generic[ConfigT]):
    """A device driver.

    Contract:

    * ``run(sink)`` never returns normally; it lets ``CancelledError`` through and stops
      within 1 s of cancellation, leaving the bus free.
    * It raises only ``DeviceError`` subclasses on device trouble; anything else is a bug
      that the supervisor logs and restarts with backoff.
    * Transports are injected at construction; a driver opens nothing by itself.
    * Readings carry read-time timestamps; two reads are never merged into one reading.
    """

    kind: ClassVar[str]

    def __init__(self, config: ConfigT, name: str) -> None:
        self.config = config
        self.name = name
        self.stats = DriverStats()
        self.log = logging.getLogger(f"edge.drivers.{self.kind}.{name}")
        self._bad_logged: set[str] = set()
        self._refusal_logged = False

    @abstractmethod
    async def run(self, sink: Sink) -> None:
        """Operate the device until cancelled."""

    def bad_value(self, key: str, why: str) -> None:
        """Count a refused value of ``key``; log it once per key (WARNING), then DEBUG.

        ``why`` must not carry the value itself: it may be a position (personal data).
        """
        self.stats.bad_values += 1
        self.stats.last_error = f"bad value for {key}: {why}"
        if key in self._bad_logged:
            self.log.debug("%s: bad value for %s again: %s", self.name, key, why)
        else:
            self._bad_logged.add(key)
            self.log.warning("%s: bad value for %s refused: %s (counted in bad_values)",
                             self.name, key, why)

    def refused(self, why: str) -> None:
        """Count a refused message (``parse_errors``); log the first WARNING, then DEBUG.

        A device sending garbage every second must not flood the journal; ``why`` must not
        carry the payload (it may hold a position).
        """
        self.stats.parse_errors += 1
        self.stats.last_error = why
        if self._refusal_logged:
            self.log.debug("%s: message refused again: %s", self.name, why)
        else:
            self._refusal_logged = True
            self.log.warning("%s: message refused: %s (counted in parse_errors)", self.name,
                             why)

    async def probe(self) -> dict[str, Value]:
        """Read the device once and return decoded values (``edge probe``)."""
        raise DeviceError(self.name, "this driver cannot be probed")

    async def close(self) -> None:
        """Release what the driver holds (transports are closed by their owner)."""


class PollingDriver(Driver[ConfigT]):
    """``run()`` built from ``poll()``: a fixed-rate schedule that skips, never stacks.

    A poll still running when the next is due makes that tick an overrun (counted). A failing
    device goes ``degraded`` at the first failure and ``offline`` after ``offline_after``; the
    outage is logged once (WARNING at start, INFO with its length at recovery).
    """

    offline_after: ClassVar[int] = 3
    # raised when the device goes offline, cleared when it answers again; silence never
    # fakes the clear of any other alarm (their trackers simply get no samples)
    offline_alarm: ClassVar[str | None] = COMM_LOST

    def __init__(self, config: ConfigT, name: str, *, poll_interval_s: float,
                 timeout_s: float) -> None:
        super().__init__(config, name)
        self.poll_interval_s = poll_interval_s
        self.timeout_s = timeout_s
        self._failures = 0
        self._outage_started: float | None = None

    @abstractmethod
    async def poll(self) -> Reading:
        """Read the device once; raise DeviceError on failure."""

    async def on_reading(self, reading: Reading, sink: Sink) -> None:
        """Deliver ``reading`` and evaluate alarm rules (drivers override to add rules)."""
        await sink.reading(reading)

    async def on_offline(self, sink: Sink) -> None:
        """Handle the device going offline: raise ``offline_alarm``."""
        if self.offline_alarm is not None:
            await sink.alarm(AlarmChange(self.name, self.offline_alarm, "raised", prio=1,
                                         severity=2))

    async def on_online(self, sink: Sink) -> None:
        """Handle the device answering again after being offline: clear ``offline_alarm``."""
        if self.offline_alarm is not None and \
                self.offline_alarm in sink.active_alarms(self.name):
            await sink.alarm(AlarmChange(self.name, self.offline_alarm, "cleared", prio=1,
                                         severity=2))

    async def probe(self) -> dict[str, Value]:
        """Read once (``edge probe``)."""
        return dict((await self.poll()).values)

    async def run(self, sink: Sink) -> None:
        """Poll every ``poll_interval_s`` until cancelled."""
        next_due = time.monotonic()
        while True:
            started = time.monotonic()
            try:
                async with asyncio.timeout(self.timeout_s):
                    reading = await self.poll()
            except (DeviceError, TimeoutError) as exc:
                await self._failed(exc, sink)
            else:
                self.stats.last_latency_s = time.monotonic() - started
                await self._succeeded(reading, sink)
            next_due += self.poll_interval_s
            now = time.monotonic()
            if now > next_due:  # the poll outran its period: skip the missed ticks
                missed = int((now - next_due) // self.poll_interval_s) + 1
                self.stats.overruns += missed
                next_due += missed * self.poll_interval_s
            await asyncio.sleep(max(0.0, next_due - now))

    async def _succeeded(self, reading: Reading, sink: Sink) -> None:
        # the device answers again: an old error must not read as today's on an online
        # device (issue 21 f3), but the technician still sees what it was and until when
        if self.stats.last_error and not self.stats.last_error.startswith(EARLIER):
            self.stats.last_error = (f"{EARLIER} (until {time.strftime('%H:%M')}): "
                                     f"{self.stats.last_error}")
        self.stats.polls_ok += 1
        self.stats.last_ok_mono = time.monotonic()
        self.stats.last_values = dict(reading.values)
        was = self.stats.state
        self._failures = 0
        if was is not DeviceState.ONLINE:
            self.stats.state = DeviceState.ONLINE
            if self._outage_started is not None:
                self.log.info("%s recovered after %.1f s", self.name,
                              time.monotonic() - self._outage_started)
                self._outage_started = None
            await sink.state(self.name, DeviceState.ONLINE, "answering again")
            if was is DeviceState.OFFLINE:
                await self.on_online(sink)
        await self.on_reading(reading, sink)

    async def _failed(self, exc: BaseException, sink: Sink) -> None:
        self.stats.polls_failed += 1
        self._failures += 1
        detail = str(exc) if isinstance(exc, DeviceError) else \
            f"{self.name}: no answer in {self.timeout_s:g} s"
        if isinstance(exc, DeviceError) and exc.code == "device.protocol":
            self.stats.parse_errors += 1
        self.stats.last_error = detail
        if self._outage_started is None:
            self._outage_started = time.monotonic()
            self.log.warning("%s failing: %s", self.name, detail)  # once per outage
        else:
            self.log.debug("%s still failing: %s", self.name, detail)
        new = DeviceState.OFFLINE if self._failures >= self.offline_after else DeviceState.DEGRADED
        if new is not self.stats.state and not (
                new is DeviceState.DEGRADED and self.stats.state is DeviceState.OFFLINE):
            self.stats.state = new
            await sink.state(self.name, new, detail)
            if new is DeviceState.OFFLINE:
                await self.on_offline(sink)


def stats_dict(driver: Driver[Any]) -> dict[str, Any]:
    """Return a driver's stats as plain JSON values (status file, metrics)."""
    s = driver.stats
    return {"kind": driver.kind, "state": s.state.value, "polls_ok": s.polls_ok,
            "polls_failed": s.polls_failed, "overruns": s.overruns,
            "parse_errors": s.parse_errors, "bad_values": s.bad_values,
            "latency_s": round(s.last_latency_s, 4),
            "last_error": s.last_error, "values": s.last_values,
            # how long since the device last answered (the status page's "last seen")
            "last_ok_age_s": round(time.monotonic() - s.last_ok_mono, 1) if s.last_ok_mono
            else None,
            # where it is polled: `edge check` vouches for a device by the agent's polls only
            # while the file still names the same unit (an edited unit_id is read anew)
            **_modbus_address(driver.config)}


def _modbus_address(config: object) -> dict[str, Any]:
    unit_id = getattr(config, "unit_id", None)
    return {} if unit_id is None else {"bus": getattr(config, "bus", None), "unit_id": unit_id,
                                       "model": getattr(config, "model", None)}
