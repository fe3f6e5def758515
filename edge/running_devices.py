"""The running devices: one driver and one supervised task per enabled device.

The agent wires them; this class builds the drivers from the config, starts each in the agent's
task group, and at a reload stops and restarts only the devices a ``ReloadPlan`` names (the
others keep polling with the same driver).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from typing import TYPE_CHECKING, Any

from edge.drivers.base import Driver, stats_dict
from edge.drivers.factory import Transports, build_driver
from edge.errors import ConfigError, DeviceUnavailableError
from edge.safety import RelayLog
from edge.supervisor import supervise

if TYPE_CHECKING:
    from edge.config import EdgeConfig
    from edge.sink import EventSink

log = logging.getLogger(__name__)
STOP_DEVICE_S = 5.0


class RunningDevices:
    """Drivers by device name, and the task that supervises each."""

    def __init__(self, transports: Transports) -> None:
        self.transports = transports
        self.drivers: dict[str, Driver[Any]] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._tg: asyncio.TaskGroup | None = None
        self._sink: EventSink | None = None

    def build(self, config: EdgeConfig) -> None:
        """Make a driver for every enabled device (nothing runs yet)."""
        for device in config.devices:
            if device.enabled:
                self.drivers[device.name] = build_driver(device, config, self.transports)

    def start(self, tg: asyncio.TaskGroup, sink: EventSink) -> None:
        """Supervise every built driver in ``tg``, reporting to ``sink``."""
        self._tg, self._sink = tg, sink
        for name in self.drivers:
            self._start(name)

    def _start(self, name: str) -> None:
        assert self._tg is not None, "start() first"
        assert self._sink is not None
        self._tasks[name] = self._tg.create_task(supervise(self.drivers[name], self._sink),
                                                 name=f"device[{name}]")

    async def stop(self, names: list[str]) -> None:
        """Stop the named devices' tasks and close their drivers."""
        for name in names:
            task = self._tasks.pop(name, None)
            if task is not None:
                task.cancel()
                done, _pending = await asyncio.wait({task}, timeout=STOP_DEVICE_S)
                if not done:  # a driver that ignores cancellation must not hang a reload
                    log.error("device %s did not stop within %.0f s; the task group will end "
                              "it", name, STOP_DEVICE_S)
            driver = self.drivers.pop(name, None)
            if driver is not None:
                with contextlib.suppress(Exception):
                    await driver.close()

    def restart(self, config: EdgeConfig, names: list[str]) -> list[str]:
        """Build and start the named devices from ``config``; return why any could not."""
        notes = []
        for device in config.devices:
            if device.enabled and device.name in names:
                try:
                    self.drivers[device.name] = build_driver(device, config, self.transports)
                except ConfigError as exc:  # its broker starts at the next restart
                    log.warning("reload: %s", exc)
                    notes.append(str(exc))
                    continue
                self._start(device.name)
        return notes

    async def close(self) -> None:
        """Close every driver (their tasks ended with the task group), then the transports."""
        for driver in self.drivers.values():
            with contextlib.suppress(Exception):
                await driver.close()
        await self.transports.close()

    def get(self, name: str) -> Driver[Any]:
        """Return a running device's driver; DeviceUnavailableError when it is disabled."""
        driver = self.drivers.get(name)
        if driver is None:
            raise DeviceUnavailableError(name, "device is disabled")
        return driver

    def relay_log(self, name: str) -> RelayLog | None:
        """Return a lamp driver's relay log (the switch-rate rule counts its changes)."""
        relay = getattr(self.drivers.get(name), "relay", None)  # a kind with a relay has one
        return relay if isinstance(relay, RelayLog) else None

    def last_ok_mono(self) -> float:
        """Return when any device last answered (monotonic; 0 when none has)."""
        return max((d.stats.last_ok_mono for d in self.drivers.values()), default=0.0)

    def stats(self) -> dict[str, dict[str, Any]]:
        """Return each device's counters for the status file."""
        return {name: stats_dict(driver) for name, driver in self.drivers.items()}

    def bus_stats(self) -> dict[str, dict[str, Any]]:
        """Return each shared bus's counters (wire time, turnarounds) for the status file."""
        return {name: dataclasses.asdict(bus.stats)
                for name, bus in self.transports.buses.items()}
