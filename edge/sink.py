"""EventSink: turns what drivers report into outbox events with asset, time and alarm ids."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from typing import Any

from edge.buffer.alarm_state import ActiveAlarms, AlarmCleared, AlarmRaised, AlarmStateChange
from edge.buffer.async_outbox import AsyncOutbox
from edge.clock import CLOCK_FLOOR_NS, Clock, TimeQuality
from edge.config import AnyDevice, EdgeConfig
from edge.drivers.base import AlarmChange, DeviceState, Reading
from edge.errors import EventRejectedError, StoreFullError
from edge.model import Alarm, Asset, Event, EventType, Prio

log = logging.getLogger(__name__)


def asset_of(device: AnyDevice) -> Asset:
    """Return the event ``asset`` block of a configured device."""
    a = device.asset
    return Asset(code=a.code, cls=a.class_, grid=a.grid, name=a.name, lat=a.lat, lon=a.lon)


class EventSink:
    """The agent's ``Sink``: readings → prio-3 events, alarms → prio 0/1 with stable ids.

    An alarm's id and active state are written in the same transaction as its event, so a
    restart never loses the id of a raised alarm (its clear closes the same case).
    """

    def __init__(self, config: EdgeConfig, outbox: AsyncOutbox, clock: Clock,
                 active: ActiveAlarms) -> None:
        self._outbox = outbox
        self._clock = clock
        self._assets: dict[str, Asset] = {}
        self._positional: set[str] = set()  # vehicles: their readings are positions
        self.set_devices(config)
        # "device:kind" -> (alarm_id, alarm block as raised)
        self.active = active
        self.alarms_raised = 0
        self.readings_refused = 0
        self.readings_rejected = 0  # values the encoder refuses (NaN): counted, logged once
        self._rejected_logged: set[str] = set()

    def set_devices(self, config: EdgeConfig) -> None:
        """Refresh the asset table (and which devices roam) after a config reload."""
        self._assets = {d.name: asset_of(d) for d in config.devices}
        self._positional = {d.name for d in config.devices if d.ROAMS}

    def gnss_time(self, utc_ns: int) -> None:
        """Trust a GNSS time fix, unless it is implausibly old (week-rollover bugs)."""
        if utc_ns >= CLOCK_FLOOR_NS and self._clock.source in ("gnss", "ntp"):
            first = self._clock.quality() is not TimeQuality.SYNCED
            suspect = self._clock.gnss_suspect
            if self._clock.note_gnss_fix(utc_ns):
                if first:
                    log.info("clock: trusted GNSS time from a fix")
            elif self._clock.gnss_rejected == 1:  # once: a receiver refused at 1 Hz is noise
                log.warning("clock: GNSS time refused (%s); counting further refusals",
                            self._clock.gnss_last_reject)
            if suspect is None and self._clock.gnss_suspect is not None:
                # once per boot; the agent raises the time_source_suspect alarm (D66)
                log.error("clock: GNSS time source suspect, the clock keeps its time: %s",
                          self._clock.gnss_suspect)

    def active_alarms(self, device: str) -> set[str]:
        """Return the kinds of ``device``'s alarms that are raised and not yet cleared."""
        prefix = f"{device}:"
        return {key[len(prefix):] for key in self.active if key.startswith(prefix)}

    def active_blocks(self) -> list[dict[str, Any]]:
        """Return each active alarm's block with its device, kind and id (the state message).

        Every (re)connect and every state tick re-announces the alarms still active, so a
        platform that missed a raise (or lost its state) can open the case.
        """
        return [{**block, "device": key.partition(":")[0], "kind": key.partition(":")[2],
                 "alarm_id": alarm_id} for key, (alarm_id, block) in sorted(self.active.items())]

    def status(self) -> dict[str, Any]:
        """Return the sink's part of ``edge status``."""
        # alarm ids end in the raise time in ms: the status page shows "since"
        return {"readings_rejected": self.readings_rejected,
                "active_alarms": sorted(self.active),
                "active_alarm_ids": {key: ids[0] for key, ids in self.active.items()}}

    def _stamp(self, at_ns: int, mono_ns: int) -> tuple[int, TimeQuality, tuple[str, int] | None]:
        quality = self._clock.quality()
        offset = self._clock.now_ns() - time.time_ns()
        mono = (self._clock.boot_id, mono_ns // 1_000_000) \
            if quality is TimeQuality.UNSYNCED else None
        return at_ns + offset, quality, mono

    async def reading(self, reading: Reading) -> None:
        """Store a reading as telemetry (positions as prio 2)."""
        ts, quality, mono = self._stamp(reading.at_ns, reading.mono_ns)
        positional = reading.device in self._positional
        try:
            await self._outbox.put(Event(
                EventType.POSITION if positional else EventType.READING,
                Prio.STATE if positional else Prio.TELEMETRY, ts, quality,
                device=reading.device, asset=self._assets.get(reading.device),
                data=dict(reading.values), mono=mono))
        except StoreFullError:
            # counted by the store and announced by a gap event; the device keeps polling
            self.readings_refused += 1
        except EventRejectedError as exc:
            # one bad value (a NaN a JSON parser let through) costs its own reading only
            self.readings_rejected += 1
            if reading.device not in self._rejected_logged:
                self._rejected_logged.add(reading.device)
                log.warning("reading of %s refused (logged once per device): %s",
                            reading.device, exc)

    async def alarm(self, change: AlarmChange) -> None:
        """Store an alarm raise or clear; a clear reuses its raise's ``alarm_id``."""
        key = f"{change.device}:{change.kind}"
        asset = self._assets.get(change.device)
        ts, quality, mono = self._stamp(time.time_ns(), time.monotonic_ns())
        state_change: AlarmStateChange
        if change.state == "raised":
            if key in self.active:  # already open (e.g. re-announced after a restart)
                alarm_id = self.active[key][0]
            else:
                code = asset.code if asset else change.device
                alarm_id = f"{code}:{change.kind}:{ts // 1_000_000}"
            block = {"value": change.value, "threshold": change.threshold}
            state_change = AlarmRaised(key, alarm_id, ts, block)
        else:
            if key not in self.active:
                log.debug("clear of %s without an active raise; ignored", key)
                return
            alarm_id = self.active[key][0]
            state_change = AlarmCleared(key)
        alarm = Alarm(kind=change.kind, state="raised" if change.state == "raised" else "cleared",
                      alarm_id=alarm_id, severity=change.severity, value=change.value,
                      threshold=change.threshold, unit=change.unit,
                      event_class=change.event_class)
        # a clear is never critical: it closes a case, so prio 1 (events.md)
        prio = change.prio if change.state == "raised" else max(change.prio, Prio.ALARM)
        event = Event(EventType.ALARM, prio, ts, quality, device=change.device, asset=asset,
                      data=dict(change.data), alarm=alarm, mono=mono)
        # The active map must follow the store even when our caller is cancelled once the
        # writer took the event (a reload or restart of the driver): a committed raise missing
        # here would make its clear "without an active raise" and leave the case open forever.
        # The outbox owns the put (finished or cancelled before it closes, review finding 7).
        put = self._outbox.detach(self._outbox.put_many([event], [state_change]),
                                  name=f"sink.alarm {key}")
        put.add_done_callback(lambda done: self._committed(done, change, key, alarm_id))
        await asyncio.shield(put)

    def _committed(self, put: asyncio.Future[None], change: AlarmChange, key: str,
                   alarm_id: str) -> None:
        if put.cancelled() or put.exception() is not None:
            return  # not stored: the caller saw the error (or was cancelled with it)
        if change.state == "raised":
            self.active[key] = (alarm_id, {})
            self.alarms_raised += 1
            log.warning("alarm %s raised on %s (value %s, threshold %s)", change.kind,
                        change.device, change.value, change.threshold)
        else:
            self.active.pop(key, None)
            log.info("alarm %s cleared on %s", change.kind, change.device)

    async def state(self, device: str, state: DeviceState, detail: str) -> None:
        """Store a device health change (prio 2)."""
        ts, quality, mono = self._stamp(time.time_ns(), time.monotonic_ns())
        with contextlib.suppress(StoreFullError, EventRejectedError):  # counted, like telemetry
            await self._outbox.put(Event(EventType.STATE, Prio.STATE, ts, quality,
                                         device=device, asset=self._assets.get(device),
                                         data={"state": state.value, "detail": detail},
                                         mono=mono))

    async def command_result(self, device: str, cmd_id: str | None, action: str, status: str,
                             detail: Mapping[str, Any]) -> None:
        """Store the final result of a long-running action (prio 1; 0 for an emergency)."""
        ts, quality, mono = self._stamp(time.time_ns(), time.monotonic_ns())
        prio = Prio.CRITICAL if detail.get("priority") == "emergency" else Prio.ALARM
        await self._outbox.put(Event(EventType.COMMAND_RESULT, prio, ts, quality, device=device,
                                     data={"cmd_id": cmd_id, "action": action, "status": status,
                                           "detail": dict(detail)}, mono=mono))

    def trusted_now_ns(self) -> tuple[int, bool]:
        """Return the clock's best UTC ns and whether it is trusted (work shift boundaries)."""
        return self._clock.now_ns(), self._clock.quality() is TimeQuality.SYNCED

    async def work_coverage(self, device: str, report: dict[str, Any]) -> None:
        """Store a truck's ended shift (prio 1: one per shift, the basis of its assessment)."""
        ts, quality, mono = self._stamp(time.time_ns(), time.monotonic_ns())
        await self._outbox.put(Event(EventType.WORK_COVERAGE, Prio.ALARM, ts, quality,
                                     device=device, asset=self._assets.get(device),
                                     data=report, mono=mono))

    async def system_alarm(self, kind: str, detail: str) -> None:
        """Store a gateway-level critical alarm (e.g. the outbox was replaced after corruption)."""
        ts, quality, mono = self._stamp(time.time_ns(), time.monotonic_ns())
        alarm = Alarm(kind=kind, state="raised", alarm_id=f"gateway:{kind}:{ts // 1_000_000}",
                      severity=1)
        await self._outbox.put(Event(EventType.ALARM, Prio.CRITICAL, ts, quality,
                                     data={"detail": detail}, alarm=alarm, mono=mono))
