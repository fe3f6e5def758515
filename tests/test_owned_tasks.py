"""Tasks the sink and the batch source start outlive their caller, but not the outbox.

Review finding 7: ``EventSink.alarm`` and ``BatchSource._lease`` started their outbox call with
``asyncio.ensure_future`` outside any TaskGroup, so a caller cancelled at stop left a task
pending after the outbox had closed (and a lease whose caller was cancelled twice was never
given back).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from pathlib import Path

from edge.buffer.async_outbox import AsyncOutbox
from edge.buffer.lease import Leased
from edge.buffer.store import Outbox
from edge.clock import Clock
from edge.drivers.base import AlarmChange
from edge.security.signing import Ed25519PrivateKey, Signer
from edge.sink import EventSink
from edge.uplink.batches import BatchSource
from tests.cfg import write_config
from tests.outbox_util import ev


def _others() -> set[asyncio.Task[object]]:
    return {t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()}


async def test_an_alarm_whose_caller_is_cancelled_leaves_no_task_after_close(
        tmp_path: Path) -> None:
    loaded = write_config(tmp_path, broker_port=1, pki=None, devices=[], buses=[])
    outbox = AsyncOutbox(Outbox(tmp_path / "outbox.db"))
    await outbox.open()
    sink = EventSink(loaded.config, outbox, Clock("system"), {})
    # no writer task: the agent is stopping and its writer is gone when the driver is cancelled
    caller = asyncio.create_task(sink.alarm(AlarmChange("dev", "tilt", "raised", 0, 1)))
    await asyncio.sleep(0.05)
    caller.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await caller
    assert _others(), "the put outlives its cancelled caller (it is shielded)"
    await asyncio.wait_for(outbox.close(), 10)
    assert _others() == set()


async def test_a_lease_whose_caller_is_cancelled_twice_is_given_back(tmp_path: Path) -> None:
    store = Outbox(tmp_path / "outbox.db")
    outbox = AsyncOutbox(store)
    await outbox.open()
    store.append([ev(3, n=i) for i in range(5)])  # nothing else uses the store yet
    source = BatchSource(outbox, gateway_id="gw-1", signer=Signer(
        Ed25519PrivateKey.generate()), replay_events_per_s=0)
    gate = threading.Event()
    real_lease = store.lease

    def slow_lease(*args: object) -> object:
        gate.wait(5)
        return real_lease(*args)  # type: ignore[arg-type]

    store.lease = slow_lease  # type: ignore[method-assign,assignment]
    caller = asyncio.create_task(source._lease(10, 1 << 20, max_prio=3))
    await asyncio.sleep(0.05)
    caller.cancel()
    await asyncio.sleep(0.01)
    caller.cancel()  # the link dropped and the agent stops: cancelled again while giving back
    with contextlib.suppress(asyncio.CancelledError):
        await caller
    gate.set()
    store.lease = real_lease  # type: ignore[method-assign]
    again: list[Leased] = []
    for _ in range(50):  # the lease finishes on the outbox thread, then is given back
        await asyncio.sleep(0.05)
        again = await outbox.lease(10, 1 << 20)
        if again:
            break
    assert len(again) == 5  # nothing stayed leased to a caller that is gone
    await asyncio.wait_for(outbox.close(), 10)
    assert _others() == set()
