"""A driver cancelled while its alarm commits (a reload, a supervisor restart, the lifecycle
tests' run_for) must leave the sink knowing what the store holds: otherwise the clear of a
committed raise is ignored and the platform's case never closes (found by
test_alarm_lifecycles.py::test_cover_open_and_displaced_lifecycles, 2 runs in 7)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from typing_extensions import override

from edge.buffer.alarm_state import AlarmStateChange
from edge.buffer.async_outbox import AsyncOutbox
from edge.buffer.store import Outbox
from edge.clock import Clock
from edge.drivers.base import AlarmChange
from edge.model import Event
from edge.sink import EventSink
from tests.cfg import tilt_device, write_config
from tests.helpers import wait_event, wait_until


class LateAck(AsyncOutbox):
    """Commits as usual, then hands the result back late (the writer thread's hop to the loop),
    so a caller can be cancelled after its event is durable."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.committed = asyncio.Event()

    @override
    async def put_many(self, events: Sequence[Event],
                       alarm_state: Sequence[AlarmStateChange] = ()) -> None:
        await super().put_many(events, alarm_state)
        self.committed.set()
        await asyncio.sleep(0.2)


def change(state: str) -> AlarmChange:
    return AlarmChange("mh-1", "cover_displaced", state, prio=0, severity=1, value=75.0,
                       threshold=60.0)


async def test_a_raise_cancelled_after_its_commit_is_still_known_and_can_be_cleared(
        tmp_path: Path) -> None:
    loaded = write_config(tmp_path, broker_port=1, pki=None, buses=[
        {"name": "b", "type": "modbus_tcp", "host": "127.0.0.1", "port": 1}],
        devices=[tilt_device("mh-1", "b", 1)])
    store = Outbox(tmp_path / "outbox.db")
    outbox = LateAck(store, commit_max_wait_s=0.001)
    await outbox.open()
    writer = asyncio.create_task(outbox.run())
    sink = EventSink(loaded.config, outbox, Clock("system"), {})
    try:
        raising = asyncio.create_task(sink.alarm(change("raised")))
        await wait_event(outbox.committed, 5, "the raise committed")
        raising.cancel()  # the driver is stopped before the put returns
        with contextlib.suppress(asyncio.CancelledError):
            await raising
        await wait_until(lambda: "mh-1:cover_displaced" in sink.active, 2,
                         "the committed raise in the sink's active alarms")
        await sink.alarm(change("cleared"))
        events = [json.loads(p) for p in store.export()]
        states = [(e["alarm"]["state"], e["alarm"]["alarm_id"]) for e in events
                  if e["type"] == "alarm"]
        assert [s for s, _ in states] == ["raised", "cleared"]
        assert states[0][1] == states[1][1]
        assert "mh-1:cover_displaced" not in sink.active
    finally:
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer
        await outbox.drain()
        await outbox.close()
