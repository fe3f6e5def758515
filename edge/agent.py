"""The agent: builds everything from the config and owns the task tree.

Task tree (all named, all owned)::

    outbox.writer                   group commits; outlives the others to commit what they gave
    └── TaskGroup
        ├── uplink.mqtt             connect / forward / reconnect
        ├── device[<name>] …        supervise(driver) per device
        ├── agent.fatal             ops.deaths: a dead thread or stray task stops the agent
        ├── agent.reload            SIGHUP / ``edge reload``: restart only what changed
        ├── agent.status            ops.status_file: ``edge status`` reads it (no port)
        ├── agent.maintenance       ops.maintenance: retention, time correction, clock floor
        └── agent.watchdog          ops.systemd, when systemd asks for one

Stopping (SIGTERM, Ctrl-C): the group is cancelled, then everything drivers already handed
over is committed, then the store is checkpointed and closed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge import __version__
from edge.aux_writes import AuxWrites
from edge.buffer.async_outbox import AsyncOutbox
from edge.buffer.device_state import DeviceStateStore
from edge.buffer.gaps import make_gap_factory
from edge.buffer.store import Outbox
from edge.clock import FLOOR_FILE, Clock, TimeQuality, read_floor
from edge.commands.catalogue import action_of
from edge.commands.processor import CommandProcessor, load_platform_keys
from edge.commands.safety import SafetyRules
from edge.config_file import LoadedConfig, load_in_child_async
from edge.drivers.base import Driver
from edge.drivers.factory import Transports
from edge.errors import ConfigError, DeviceUnavailableError, EdgeError
from edge.ops.deaths import DeathWatch
from edge.ops.maintenance import Maintenance, release_startup_memory
from edge.ops.status_file import StatusFile
from edge.ops.systemd import Progress, notify, watchdog, watchdog_interval_s
from edge.reload import plan
from edge.running_devices import RunningDevices
from edge.safety import RelayLog
from edge.security.keys import load_key
from edge.security.secrets import read_secret
from edge.security.signing import Ed25519PrivateKey, Signer
from edge.sink import EventSink
from edge.uplink.mqtt import MqttUplink

if TYPE_CHECKING:
    from edge.config import EdgeConfig

    # only the type: aiohttp (~10 MB of RSS) loads only when an HTTP part is configured
    from edge.ops.http_site import Site
    from edge.uplink.https import HttpsUplink

log = logging.getLogger(__name__)
STOP_DEVICE_S = 5.0


class Agent:
    """One gateway agent. ``run(stop)`` returns after ``stop`` is set and state is committed."""

    def __init__(self, loaded: LoadedConfig, *, boot_delay_s: float | None = None) -> None:
        self.loaded = loaded
        cfg = loaded.config
        self.clock = Clock(cfg.gateway.time_source)
        state_dir = loaded.state_dir
        self.state_dir = state_dir
        store = Outbox(state_dir / cfg.outbox.path, quota_bytes=cfg.outbox.quota_bytes,
                       max_attempts=cfg.uplink.max_attempts,
                       gap_factory=make_gap_factory(self.clock))
        self.outbox = AsyncOutbox(store, commit_max_events=cfg.outbox.commit_max_events,
                                  commit_max_wait_s=cfg.outbox.commit_max_wait_s)
        self._boot_delay_s = boot_delay_s
        self.devices: RunningDevices | None = None
        self.sink: EventSink | None = None
        self.uplink: MqttUplink | HttpsUplink | None = None
        self.commands: CommandProcessor | None = None
        self.started = time.monotonic()
        self.ready = asyncio.Event()
        self.reload_requested = asyncio.Event()  # SIGHUP sets it
        self._uplink_password: str | None = None
        self.generation = 0
        self.last_reload: dict[str, Any] = {}
        self._deaths = DeathWatch()  # a thread or stray task that dies stops the agent
        self.aux_writes = AuxWrites(log)  # status.json, clock floor: never fatal (f14 #1)
        self.status_file = StatusFile(state_dir, self.status, self.aux_writes)
        self.maintenance = Maintenance(self.clock, self.outbox, cfg.outbox, state_dir=state_dir,
                                       aux_writes=self.aux_writes,
                                       system_alarm=self._system_alarm)

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set."""
        cfg = self.loaded.config
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # owner-only (review 19 #11)
        tighten_dir(self.state_dir)
        self.clock.floor_ns = read_floor(self.state_dir / FLOOR_FILE)
        key = load_key(self.loaded.resolve(cfg.gateway.key_file))
        page_password = None
        if cfg.observability.status_page_password_file is not None:  # refuse placeholders
            page_password = read_secret(
                self.loaded.resolve(cfg.observability.status_page_password_file),
                "status page password")
        self._uplink_password = self._password()
        await self.outbox.open()
        self.devices = devices = RunningDevices(
            Transports(cfg, base_dir=self.loaded.base_dir, state=self._state_store))
        servers: list[Site] = []
        self._deaths.watch(asyncio.get_running_loop())
        try:
            async with asyncio.TaskGroup() as core:
                writer = core.create_task(self.outbox.run(), name="outbox.writer")
                try:
                    await self._run_parts(stop, key, devices, servers, page_password)
                finally:
                    writer.cancel()  # after the parts: drain() commits what they handed over
        except BaseExceptionGroup as group:
            _raise_failures(group)
        finally:
            for server in servers:
                await server.cleanup()
            await devices.close()
            committed = 0
            try:
                committed = await self.outbox.drain()
            except Exception:  # a writer that failed may fail its drain too; still close
                log.exception("outbox: final commit failed")
            await self.status_file.write()
            await asyncio.to_thread(self.maintenance.save_clock_floor)  # an fsync: off the loop
            await self.outbox.close()
            self._deaths.restore()
            log.info("stopped; outbox committed (%d late events)", committed)

    async def _run_parts(self, stop: asyncio.Event, key: Ed25519PrivateKey,
                         devices: RunningDevices, servers: list[Site],
                         page_password: str | None) -> None:
        """Run uplink, devices and housekeeping in one TaskGroup; _StopError once stopped."""
        cfg = self.loaded.config
        uplink, sink = await self._build(key, devices)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(uplink.run(boot_delay_s=self._boot_delay_s),
                           name=f"uplink.{cfg.uplink.kind}")
            devices.start(tg, sink)
            tg.create_task(self._deaths.wait(), name="agent.fatal")
            tg.create_task(self._reload_loop(), name="agent.reload")
            tg.create_task(self.status_file.run(), name="agent.status")
            tg.create_task(self.maintenance.run(), name="agent.maintenance")
            servers += await self._start_servers(page_password)
            interval = watchdog_interval_s()
            if interval is not None:
                tg.create_task(watchdog(self._progress, interval_s=interval),
                               name="agent.watchdog")
            log.info("edge %s running: gateway %s, %d devices", __version__,
                     cfg.gateway.id, len(devices.drivers))
            release_startup_memory()
            self.ready.set()
            notify("READY=1")
            await stop.wait()
            notify("STOPPING=1")
            raise _StopError  # cancels the task groups' other tasks

    async def _start_servers(self, page_password: str | None) -> list[Site]:
        """Start the configured local HTTP endpoints (none by default)."""
        obs = self.loaded.config.observability
        servers: list[Site] = []
        if obs.metrics_port is not None:
            from edge.ops.metrics import serve_metrics  # noqa: PLC0415 - see TYPE_CHECKING

            servers.append(await serve_metrics(self.status, host=obs.metrics_host,
                                               port=obs.metrics_port))
        if obs.status_page_port is not None and page_password is not None:
            from edge.ops.status_page import assets_of, serve_status_page  # noqa: PLC0415

            servers.append(await serve_status_page(
                self.status, self._probe, host=obs.status_page_host,
                port=obs.status_page_port, password=page_password,
                assets=lambda: assets_of(self.loaded.config)))
        return servers

    async def _build(self, key: Ed25519PrivateKey, devices: RunningDevices
                     ) -> tuple[MqttUplink | HttpsUplink, EventSink]:
        """Create the sink, the drivers, the command processor and the uplink."""
        cfg = self.loaded.config
        active = await self.outbox.active_alarms()
        self.sink = sink = EventSink(cfg, self.outbox, self.clock, active)
        if self.outbox.replaced_corrupt is not None:
            await sink.system_alarm("store_corrupt",
                                    f"outbox replaced: {self.outbox.corrupt_reason}")
        devices.build(cfg)
        self.commands = CommandProcessor(
            cfg, self.outbox, self.clock, keys=load_platform_keys(cfg, self.loaded.base_dir),
            execute=self._execute, safety=self._safety_rules(cfg).check,
            audit_path=self.state_dir / "audit.log")
        await self.commands.recover()
        uplink: MqttUplink | HttpsUplink
        if cfg.uplink.kind == "https":
            from edge.uplink.https import HttpsUplink  # noqa: PLC0415 - see TYPE_CHECKING

            uplink = HttpsUplink(cfg.uplink, gateway_id=cfg.gateway.id, signer=Signer(key),
                                 outbox=self.outbox, base_dir=self.loaded.base_dir,
                                 token=self._uplink_password)
        else:
            uplink = MqttUplink(
                cfg.uplink, gateway_id=cfg.gateway.id, boot_id=self.clock.boot_id,
                signer=Signer(key), outbox=self.outbox, base_dir=self.loaded.base_dir,
                password=self._uplink_password, state_provider=self._uplink_state,
                on_command=self._on_command, on_command_tick=self.commands.tick)
        self.uplink = uplink
        return uplink, sink

    async def _reload_loop(self) -> None:
        while True:
            await self.reload_requested.wait()
            self.reload_requested.clear()
            await self.reload()

    async def reload(self) -> list[str]:
        """Re-read devices.yaml; restart only what changed. Return the problems, if any."""
        try:
            # validated in a child: the agent keeps no YAML parser or pydantic (D86)
            new = await load_in_child_async(self.loaded.path)
        except ConfigError as exc:
            for problem in exc.problems:
                log.error("reload rejected: %s", problem)  # noqa: TRY400 - no traceback
            self.last_reload = {"ok": False, "problems": exc.problems, "at": time.time()}
            return exc.problems
        old = self.loaded.config
        change = plan(old, new.config)
        for section in change.needs_restart:
            log.warning("reload: %s changed; it takes effect at the next restart", section)
        assert self.devices is not None
        assert self.sink is not None
        assert self.commands is not None
        await self.devices.stop([*change.removed, *change.changed])
        await self.devices.transports.update(new.config, change.buses_changed)
        kept = {s: getattr(old, s) for s in change.needs_restart}  # running settings stay
        notes = [*change.needs_restart]
        merged = dataclasses.replace(new.config, **kept)
        keys_note = await self.commands.reconfigure(merged, self._safety_rules(merged).check,
                                                    self.loaded.base_dir)
        if keys_note is not None:
            log.warning("reload: %s", keys_note)
            notes.append(keys_note)
        self.loaded = LoadedConfig(merged, self.loaded.path)
        self.sink.set_devices(merged)
        notes += self.devices.restart(merged, [*change.added, *change.changed])
        self.generation += 1
        self.last_reload = {"ok": True, "added": change.added, "removed": change.removed,
                            "changed": change.changed, "needs_restart": notes,
                            "at": time.time()}
        log.info("reloaded %s: added %s, removed %s, restarted %s", self.loaded.path,
                 change.added or "-", change.removed or "-", change.changed or "-")
        return []

    def _progress(self) -> Progress:
        uplink = self.uplink.stats.last_progress_mono if self.uplink else 0.0
        if self.uplink is not None and self.uplink.stats.connected:
            uplink = time.monotonic()  # connected and idle is progress too
        devices = 0.0 if self.devices is None else self.devices.last_ok_mono()
        return Progress(writer_queue=self.outbox.queued, writer_last_commit=self.outbox
                        .last_commit_mono, uplink_last_progress=uplink, devices_last_ok=devices)

    def _safety_rules(self, config: EdgeConfig) -> SafetyRules:
        return SafetyRules(config, relays=self._relay_log, clock_trusted=lambda: (
            self.clock.quality() is not TimeQuality.UNSYNCED))

    async def _system_alarm(self, kind: str, text: str) -> None:
        # housekeeping starts after _build made the sink: an alarm is never dropped silently
        assert self.sink is not None, "a system alarm before the sink exists"
        await self.sink.system_alarm(kind, text)

    async def _on_command(self, raw: bytes) -> None:
        if self.commands is not None:
            await self.commands.handle(raw)

    async def _execute(self, device: str, action: str, params: Any,
                       cmd_id: str | None = None) -> dict[str, Any]:
        """Carry out a verified command on its driver (or, ``agent.state``, on the gateway)."""
        if action == "agent.state":  # a fresh seq baseline for a late platform (D68)
            if not isinstance(self.uplink, MqttUplink):
                raise DeviceUnavailableError("gateway", "no MQTT uplink to publish state on")
            self.uplink.request_state()
            return {"state": "requested"}
        assert self.devices is not None, "a command before the devices exist"
        driver = self.devices.get(device)
        declared = action_of(driver.kind, action)
        if declared is None:  # the processor checked the kind: a catalogue bug
            raise DeviceUnavailableError(device, f"{action} is not declared for {driver.kind}")
        return await declared.execute(driver, params, cmd_id)

    @property
    def drivers(self) -> dict[str, Driver[Any]]:
        """The running drivers by device name (none before ``run``)."""
        return {} if self.devices is None else self.devices.drivers

    def _relay_log(self, name: str) -> RelayLog | None:
        return None if self.devices is None else self.devices.relay_log(name)

    def _state_store(self, folder: str, max_bytes: int) -> DeviceStateStore:
        """Return the store of one kind's per-device state (``state_dir/<folder>``)."""
        return DeviceStateStore(self.state_dir / folder, max_bytes=max_bytes)

    def _password(self) -> str | None:
        pw_file = self.loaded.config.uplink.password_file
        if pw_file is None:
            return None
        return read_secret(self.loaded.resolve(pw_file), "uplink password")

    async def _probe(self, name: str) -> dict[str, Any]:
        """Read one device now (the status page's button); KeyError if unknown."""
        return await self.drivers[name].probe()

    async def _uplink_state(self) -> dict[str, Any]:
        stats = await self.outbox.stats()
        active = [] if self.sink is None else self.sink.active_blocks()
        return {"outbox": {"depth": stats["depth"], "dead_letters": stats["dead_letters"],
                           "by_prio": stats["by_prio"]},
                "time_quality": self.clock.quality().value, "active_alarms": active}

    async def status(self) -> dict[str, Any]:
        """Return what ``edge status`` shows."""
        return {
            "version": __version__, "pid": os.getpid(), "gateway": self.loaded.config.gateway.id,
            "written_at": time.time(), "uptime_s": round(time.monotonic() - self.started, 1),
            "time_quality": self.clock.quality().value,
            # GNSS fixes refused as a time source (implausible, disagreeing: issue 19 #3)
            "gnss_time_rejected": self.clock.gnss_rejected,
            # auxiliary files not written (full disk, I/O error): counted, retried (f14 #1)
            "aux_write_failures": dict(self.aux_writes.failures),
            "devices": {} if self.devices is None else self.devices.stats(),
            "outbox": await self.outbox.status(),
            "buses": {} if self.devices is None else self.devices.bus_stats(),
            "uplink": None if self.uplink is None else self.uplink.stats.status(),
            **(self.sink.status() if self.sink else {
                "readings_rejected": 0, "active_alarms": [], "active_alarm_ids": {}}),
            "commands": dict(self.commands.counts) if self.commands else {},
            "config": {"path": str(self.loaded.path), "generation": self.generation,
                       "last_reload": self.last_reload},
        }

def tighten_dir(path: Path) -> None:
    """Make a state folder we own owner-only, even one created 0755 earlier (issue 19 re-test)."""
    info = path.stat()
    if info.st_uid == os.getuid() and info.st_mode & 0o077:
        path.chmod(0o700)
        log.info("state folder %s tightened to 0700", path)


class _StopError(Exception):
    """Raised inside the task group to cancel it on a requested stop."""


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out += _leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc]
    return out


def _raise_failures(group: BaseExceptionGroup[BaseException]) -> None:
    """Return on a requested stop; otherwise log and raise what failed.

    A lone EdgeError (a start-up failure: key, store, port) is raised as itself, so ``edge
    run`` prints it and exits 69; anything else (a bug, a dead writer) is raised as the group.
    """
    failures = [exc for exc in _leaves(group) if not isinstance(exc, _StopError)]
    if not failures:
        return
    if len(failures) == 1 and isinstance(failures[0], EdgeError):
        raise failures[0]
    log.critical("agent stopping: a task failed: %r", failures)
    raise group
