"""Streetlight controller: relay, dimming and a meter; a schedule stored on the gateway.

firmware_notes/sdm120.md, firmware_notes/pzem004t.md. The schedule runs uplink or not.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

from edge.clock import CLOCK_FLOOR_NS
from edge.drivers._codecs import pzem004t, sdm120
from edge.drivers._codecs.plans import READ_PLANS
from edge.drivers.alarms import Debounced
from edge.drivers.base import (
    COMM_LOST,
    AlarmChange,
    PollingDriver,
    Reading,
    Sink,
    StateDocs,
    Value,
    override,
)
from edge.drivers.kind import Action, Kind, Params, SafetyContext, required
from edge.drivers.sun import is_day
from edge.errors import (
    CommandRejectedError,
    DeviceError,
    DeviceProtocolError,
    DeviceRejectedError,
    StoreCorruptError,
)
from edge.kinds.streetlight import LightStep, StreetlightDevice
from edge.light_schedule import Step, in_force, is_astronomical
from edge.safety import RelayLog
from edge.shape_check import check
from edge.shapes import Ge, Le, MaxLen, MinLen, shape
from edge.transports.modbus import ModbusBus

if TYPE_CHECKING:
    from collections.abc import Iterable
    from collections.abc import Set as AbstractSet

    from edge.config import EdgeConfig
    from edge.drivers.transport_pool import Transports

LAMP_OUT = "lamp_out"
POWER_LOSS = "power_loss"
OVERCURRENT = "overcurrent"
DAY_BURN = "day_burn"
SCHEDULE_TICK_S = 20.0  # a schedule step is applied within this of its minute
SCHEDULE_FILE_MAX_BYTES = 64 * 1024  # 24 steps are under 2 KB: more is not ours


# Each model's meter, declared once: its input registers (FC 4, blocks in READ_PLANS) to V/I/P/E
# (firmware_notes/sdm120.md, pzem004t.md). The switchable ones, with a relay coil and a dim
# register, are the config's SWITCHABLE (edge check reads it without importing drivers).
LAMP_METERS: Mapping[str, Callable[[list[int]], Mapping[str, Value]]] = MappingProxyType({
    "lamp_controller": sdm120.decode_meter, "sdm120": sdm120.decode_meter,
    "pzem004t": pzem004t.decode,
})
SWITCHABLE = StreetlightDevice.SWITCHABLE


class StreetlightDriver(PollingDriver[StreetlightDevice]):
    """Poll relay state and meter, raise the lamp's alarms, run the stored light schedule.

    Alarms: ``lamp_out``, ``power_loss`` (prio 0: the cabinet lost supply), ``overcurrent``,
    ``day_burn``.
    """

    kind: ClassVar[str] = "streetlight"
    utc_offset_h: float = 8.0  # set by the factory from gateway.utc_offset_h
    stored: StateDocs | None = None  # state_dir/schedules; set by the factory

    def __init__(self, config: StreetlightDevice, bus: ModbusBus, *, timeout_s: float) -> None:
        super().__init__(config, config.name, poll_interval_s=config.poll_interval_s,
                         timeout_s=timeout_s)
        self._bus = bus
        self._unit_id = required(config.name, "unit_id", config.unit_id)
        rules = config.alarms
        n, m = rules.raise_after, rules.clear_after
        # lamp_out / day_burn: a sample of 1 means "the condition holds", -1 "it does not"
        self.lamp_out = Debounced(1.0, 0.0, n, m)
        self.day_burn = Debounced(1.0, 0.0, n, m)
        self.power_loss = Debounced(rules.power_loss_below_v, rules.power_loss_below_v + 10,
                                    n, m, below=True)
        self.overcurrent = Debounced(rules.overcurrent_a, rules.overcurrent_a * 0.9, n, m)
        self.schedule: list[LightStep] = list(config.schedule)
        self.schedule_applied: tuple[Step, dt.datetime] | None = None
        self._schedule_failed: tuple[Step, dt.datetime] | None = None
        self._restored = False
        self.relay = RelayLog()  # every verified or polled relay state: the switch-rate rule

    # ---- polling ------------------------------------------------------------------------

    @override
    async def poll(self) -> Reading:
        cfg = self.config
        words: dict[int, list[int]] = {}
        for block in READ_PLANS[cfg.model]:  # merged by the planner, one request per block
            assert block.function not in words, "one block per function code for these maps"
            words[block.function] = await self._bus.read(
                cfg.name, self._unit_id, block.function, block.address, block.count,
                timeout_s=cfg.timeout_s)
        at_ns, mono_ns = time.time_ns(), time.monotonic_ns()
        try:
            values: dict[str, Value] = dict(LAMP_METERS[cfg.model](words[4]))
        except ValueError as exc:
            raise DeviceProtocolError(cfg.name, str(exc)) from exc
        if cfg.model in SWITCHABLE:
            values["relay_on"] = bool(words[1][0])
            self.relay.observe(bool(words[1][0]))
            values["dim_pct"] = words[3][0]
        return Reading(cfg.name, values, at_ns, mono_ns)

    async def set_light(self, *, on: bool, dim_pct: int) -> dict[str, object]:
        """Switch and dim, then read back; raise DeviceError if the controller disagrees."""
        cfg, unit_id = self.config, self._unit_id
        if cfg.model not in SWITCHABLE:  # the catalogue refuses first (Action.models)
            raise DeviceRejectedError(cfg.name, unit_id=unit_id, address=sdm120.RELAY_COIL,
                                      exception_code=1)
        await self._bus.write_register(cfg.name, unit_id, sdm120.DIM_REGISTER, dim_pct)
        await self._bus.write_coil(cfg.name, unit_id, sdm120.RELAY_COIL, on)
        relay = await self._bus.read(cfg.name, unit_id, 1, sdm120.RELAY_COIL, 1)
        dim = await self._bus.read(cfg.name, unit_id, 3, sdm120.DIM_REGISTER, 1)
        if bool(relay[0]) != on or dim[0] != dim_pct:
            raise DeviceProtocolError(cfg.name, f"read back relay={bool(relay[0])} dim={dim[0]}"
                                                f", wrote relay={on} dim={dim_pct}")
        self.relay.observe(on)  # commands and schedule steps alike wear the relay
        return {"relay_on": on, "dim_pct": dim_pct, "verified": True}

    def _daylight(self, at_ns: int) -> bool:
        asset = self.config.asset
        if asset.lat is None or asset.lon is None or at_ns < CLOCK_FLOOR_NS:
            return False  # no position, or a clock still at 1970: never a false day_burn
        now = dt.datetime.fromtimestamp(at_ns / 1e9, dt.UTC)
        return is_day(asset.lat, asset.lon, now, self.utc_offset_h,
                      margin_min=self.config.alarms.day_burn_margin_min)

    @override
    async def on_reading(self, reading: Reading, sink: Sink) -> None:
        if not self._restored:  # alarms active before a restart keep their cases open
            active = sink.active_alarms(self.name)
            for kind, tracker in self._trackers():
                tracker.active = kind in active
            self._restored = True
        await sink.reading(reading)
        values = reading.values
        power_w = float(values["power_w"])  # type: ignore[arg-type]
        voltage_v = float(values["voltage_v"])  # type: ignore[arg-type]
        current_a = float(values["current_a"])  # type: ignore[arg-type]
        rules = self.config.alarms
        lit = power_w >= rules.lamp_out_below_w
        dark = bool(values.get("relay_on")) and not lit
        burning = lit and self._daylight(reading.at_ns)
        for kind, tracker, sample, value, threshold, unit, prio in (
            (LAMP_OUT, self.lamp_out, 1.0 if dark else -1.0, power_w, rules.lamp_out_below_w,
             "W", 1),
            (POWER_LOSS, self.power_loss, voltage_v, voltage_v, rules.power_loss_below_v, "V",
             0),
            (OVERCURRENT, self.overcurrent, current_a, current_a, rules.overcurrent_a, "A", 1),
            (DAY_BURN, self.day_burn, 1.0 if burning else -1.0, power_w,
             rules.lamp_out_below_w, "W", 1),
        ):
            change = tracker.update(sample)
            if change is not None:
                await sink.alarm(AlarmChange(self.name, kind, change, prio=prio,
                                             severity=1 if prio == 0 else 2, value=value,
                                             threshold=threshold, unit=unit))

    def _trackers(self) -> tuple[tuple[str, Debounced], ...]:
        return ((LAMP_OUT, self.lamp_out), (POWER_LOSS, self.power_loss),
                (OVERCURRENT, self.overcurrent), (DAY_BURN, self.day_burn))

    # ---- the stored schedule ------------------------------------------------------------

    def load_schedule(self) -> None:
        """Take the schedule a light.schedule command stored (it wins over devices.yaml)."""
        if self.stored is None:
            return
        try:
            doc = self.stored.load(self.name)
            if doc is not None:
                self.schedule = _stored_steps(doc)
        except (StoreCorruptError, ValueError, TypeError) as exc:  # ShapeError: a ValueError
            self.log.warning("%s: stored schedule unreadable (%s); using devices.yaml",
                             self.name, exc)

    def store_schedule(self, steps: list[LightStep]) -> None:
        """Replace and persist the schedule (blocking: a power cut leaves old or new, whole)."""
        if self.stored is not None:
            # durable before the platform is told "stored": the store fsyncs the rename in its
            # directory, so a power cut cannot bring the old schedule back (review finding 4)
            self.stored.save(self.name, {"steps": [dataclasses.asdict(s) for s in steps]})
        self.schedule = list(steps)
        self.schedule_applied = None  # apply the step in force now

    def due_step(self, now_utc: dt.datetime) -> tuple[Step, dt.datetime] | None:
        """Return the step the schedule wants now if it is not applied yet (pure)."""
        steps = [Step(s.at, s.on, s.dim_pct) for s in self.schedule]
        asset = self.config.asset
        current = in_force(steps, now_utc, self.utc_offset_h, asset.lat, asset.lon)
        if current is None or current == self.schedule_applied:
            return None
        return current

    async def run_schedule(self, sink: Sink) -> None:
        """Apply the schedule's steps as they come due; retry a failed step every tick."""
        while True:
            if time.time_ns() >= CLOCK_FLOOR_NS:  # a clock at 1970 would switch at random
                due = self.due_step(dt.datetime.now(dt.UTC))
                if due is not None:
                    step, at = due
                    try:
                        result = await self.set_light(on=step.on, dim_pct=step.dim_pct)
                    except DeviceError as exc:
                        if due != self._schedule_failed:  # once per step, not every tick
                            self._schedule_failed = due
                            await sink.command_result(self.name, None, "light.schedule",
                                                      "failed", {"step": step.at,
                                                                 "error": str(exc)})
                    else:
                        self.schedule_applied = due
                        await sink.command_result(
                            self.name, None, "light.schedule", "executed",
                            {"step": step.at, "at": at.isoformat(),
                             **{k: v for k, v in result.items() if isinstance(v, bool | int)}})
            await asyncio.sleep(SCHEDULE_TICK_S)

    @override
    async def run(self, sink: Sink) -> None:
        if not self.schedule and self.stored is None:
            await super().run(sink)
            return
        await asyncio.to_thread(self.load_schedule)  # a file read: off the loop (StateDocs)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.run_schedule(sink), name=f"light-schedule[{self.name}]")
            await super().run(sink)


def _stored_steps(doc: dict[str, Any]) -> list[LightStep]:
    steps = doc.get("steps")
    if not isinstance(steps, list):
        raise TypeError("no list of steps")
    return [check(LightStep, step) for step in steps]


@shape
class LightSet(Params):
    """``light.set``: switch and dim."""

    on: bool
    dim_pct: Annotated[int, Ge(0), Le(100)] = 100


@shape
class LightSchedule(Params):
    """``light.schedule``: replace the lamp's stored schedule (it runs on the gateway)."""

    steps: Annotated[list[LightStep], MinLen(1), MaxLen(24)]


async def _set_light(driver: StreetlightDriver, params: LightSet, _cmd_id: str | None
                     ) -> dict[str, Any]:
    return await driver.set_light(on=params.on, dim_pct=params.dim_pct)


async def _store_schedule(driver: StreetlightDriver, params: LightSchedule, _cmd_id: str | None
                          ) -> dict[str, Any]:
    # write + fsync off the loop (an SD card's fsync: 10-300 ms); commands run one at a time
    # (CommandProcessor's lock), so two stores never race on the file
    await asyncio.to_thread(driver.store_schedule, params.steps)
    return {"steps": len(params.steps), "stored": True}


def _check_dim(device: StreetlightDevice, steps: Iterable[LightSet | LightStep]) -> None:
    if device.model not in SWITCHABLE:  # the catalogue refuses it first (Action.models)
        raise CommandRejectedError(f"{device.name} is a {device.model} meter without a relay")
    for step in steps:
        if step.on and step.dim_pct < device.min_dim_pct:
            raise CommandRejectedError(f"dim {step.dim_pct} % is below {device.name}'s minimum "
                                       f"{device.min_dim_pct} % (the driver flickers)")


def _safe_set(context: SafetyContext, device: StreetlightDevice, params: LightSet,
              _roles: AbstractSet[str]) -> None:
    """Refuse a dim below the lamp's minimum, or a relay change beyond the switch rate.

    A command that leaves the relay as it is (a repeat, a dim change) does not wear it and is
    neither refused nor counted. The rate counts every change the driver saw (schedule steps,
    a hand at the cabinet), not only commands (issue 20 #10).
    """
    _check_dim(device, [params])
    now = time.monotonic()
    log, owned = context.relay_log(device.name)
    if log.on is not None and log.on == params.on:
        return
    recent = log.recent(now)
    if recent >= device.max_switches_per_min:
        raise CommandRejectedError(f"{device.name} switched {recent} times in the "
                                   f"last minute (limit {device.max_switches_per_min})")
    if owned:  # no driver reports it: count the admitted change (an unknown state counts)
        log.changes.append(now)
        log.on = params.on


def _safe_schedule(_context: SafetyContext, device: StreetlightDevice, params: LightSchedule,
                   _roles: AbstractSet[str]) -> None:
    """Refuse a step dimmed below the minimum, or a sunrise/sunset step without a position."""
    _check_dim(device, params.steps)
    if device.asset.lat is None or device.asset.lon is None:
        for step in params.steps:
            if is_astronomical(step.at):
                raise CommandRejectedError(f"{step.at!r} needs {device.name}'s asset lat/lon")


def _build(device: StreetlightDevice, config: EdgeConfig, transports: Transports
           ) -> StreetlightDriver:
    bus = required(device.name, "bus", device.bus)
    light = StreetlightDriver(device, transports.buses[bus], timeout_s=transports
                              .bus_timeout_s(config, bus, device.timeout_s))
    light.utc_offset_h = config.gateway.utc_offset_h  # schedules are local time
    if transports.state is not None:
        light.stored = transports.state("schedules", SCHEDULE_FILE_MAX_BYTES)
    return light


KIND = Kind("streetlight", (StreetlightDriver,), _build, {
    "light.set": Action("lighting", LightSet, _set_light, _safe_set, models=SWITCHABLE),
    "light.schedule": Action("lighting", LightSchedule, _store_schedule, _safe_schedule,
                             models=SWITCHABLE),
}, fields=frozenset({"voltage_v", "current_a", "power_w", "energy_wh", "frequency_hz",
                     "power_factor", "alarm", "relay_on", "dim_pct"}),  # alarm: the PZEM's flag
    alarms=(LAMP_OUT, POWER_LOSS, OVERCURRENT, DAY_BURN, COMM_LOST))
