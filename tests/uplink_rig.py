"""A gateway without drivers: outbox + uplink, with the reference receiver on the broker."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.buffer.async_outbox import AsyncOutbox
from edge.buffer.gaps import make_gap_factory
from edge.buffer.store import Outbox
from edge.clock import Clock, TimeQuality
from edge.config import UplinkConfig
from edge.config_loader import validate
from edge.model import Alarm, Event, EventType
from edge.security.signing import Ed25519PrivateKey, Signer, raw_public_key
from edge.uplink.mqtt import MqttUplink
from hil.receiver.core import Receiver, load_gateway_keys
from hil.receiver.service import run_mqtt
from hil.receiver.store import ReceiverStore

GW = "gw-320508-0007"


@dataclass
class Rig:
    """Everything a delivery test looks at."""

    outbox: AsyncOutbox
    uplink: MqttUplink
    store: ReceiverStore
    produced: dict[str, int] = field(default_factory=dict)  # event id -> prio
    alarm_ids: list[str] = field(default_factory=list)

    def received_ids(self) -> set[str]:
        return {r[0] for r in self.store.db.execute("SELECT id FROM events WHERE gw=?", (GW,))}

    def missing(self) -> set[str]:
        return set(self.produced) - self.received_ids()

    def duplicates(self) -> int:
        return self.store.counters().get("events.duplicates", 0)

    async def produce(self, rate_per_s: float, seconds: float, *, alarm_every_s: float = 0,
                      ) -> None:
        """Put telemetry at ``rate_per_s`` (and an alarm every ``alarm_every_s``)."""
        start = time.monotonic()
        n = 0
        next_alarm = start + alarm_every_s if alarm_every_s else float("inf")
        while (now := time.monotonic()) - start < seconds:
            due = int((now - start) * rate_per_s) - n
            events = [Event(EventType.READING, 3, time.time_ns(), TimeQuality.SYNCED,
                            device="dev", data={"n": n + k}) for k in range(due)]
            if now >= next_alarm:
                alarm = Event(EventType.ALARM, 0, time.time_ns(), TimeQuality.SYNCED,
                              device="dev", alarm=Alarm("cover_open", "raised",
                                                        f"a:{len(self.alarm_ids)}", 1))
                events.append(alarm)
                self.alarm_ids.append(alarm.id)
                next_alarm += alarm_every_s
            if events:
                await self.outbox.put_many(events)
                for e in events:
                    self.produced[e.id] = e.prio
                n += due
            await asyncio.sleep(0.01)

    async def wait_delivered(self, timeout_s: float) -> float:
        start = time.monotonic()
        while self.missing():
            if time.monotonic() - start > timeout_s:
                raise AssertionError(f"{len(self.missing())} of {len(self.produced)} events "
                                     f"not delivered within {timeout_s} s")
            await asyncio.sleep(0.1)
        return time.monotonic() - start


def uplink_config(port: int, **overrides: Any) -> UplinkConfig:
    base: dict[str, Any] = {"host": "127.0.0.1", "port": port, "tls": False, "keepalive_s": 5,
                            "boot_delay_max_s": 0, "reconnect_base_s": 0.2,
                            "reconnect_cap_s": 1.0, "connect_timeout_s": 3,
                            "replay_events_per_s": 100_000, "stable_after_s": 60}
    return validate(UplinkConfig, {**base, **overrides})


@contextlib.asynccontextmanager
async def rig(tmp_path: Path, *, uplink_port: int, receiver_port: int,
              max_attempts: int = 5, **overrides: Any) -> AsyncIterator[Rig]:
    """Run outbox writer, uplink and receiver; yield the rig; stop everything."""
    key = Ed25519PrivateKey.generate()
    clock = Clock("system")
    store = Outbox(tmp_path / "outbox.db", max_attempts=max_attempts,
                   gap_factory=make_gap_factory(clock))
    outbox = AsyncOutbox(store, commit_max_wait_s=0.01)
    await outbox.open()
    cfg = uplink_config(uplink_port, max_attempts=max_attempts, **overrides)
    uplink = MqttUplink(cfg, gateway_id=GW, boot_id=clock.boot_id, signer=Signer(key),
                        outbox=outbox, base_dir=tmp_path)
    rstore = ReceiverStore(tmp_path / "receiver.db")
    receiver = Receiver(rstore, load_gateway_keys({GW: raw_public_key(key.public_key()).hex()}))
    ready = asyncio.Event()
    tasks = [asyncio.create_task(outbox.run(), name="outbox.writer"),
             asyncio.create_task(run_mqtt(receiver, host="127.0.0.1", port=receiver_port,
                                          tls=None, ready=ready, retry_s=0.2),
                                 name="receiver"),
             asyncio.create_task(uplink.run(boot_delay_s=0), name="uplink")]
    try:
        await asyncio.wait_for(ready.wait(), 10)
        yield Rig(outbox, uplink, rstore)
    finally:
        for task in reversed(tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await outbox.drain()
        await outbox.close()
        rstore.close()
