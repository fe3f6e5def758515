"""Issue 14 finding 1: one unencodable event fails alone, and a dead writer ends the agent.

An MQTT cover reporting ``{"battery": NaN}`` produced an event the encoder refuses
(``allow_nan=False``); the writer task died on the ValueError, the good event batched with it
was never committed and every later ``put`` waited until the systemd watchdog.
"""

from __future__ import annotations

import asyncio
import math
import time
from pathlib import Path

import pytest

from edge.agent import Agent
from edge.buffer.async_outbox import AsyncOutbox
from edge.clock import Clock
from edge.drivers.base import Reading
from edge.errors import EventRejectedError
from edge.sink import EventSink
from hil.broker import Mosquitto
from tests.cfg import write_config
from tests.outbox_sql import sql_rows, store_of
from tests.outbox_util import ev, open_store


async def test_a_nan_event_fails_alone_and_the_event_batched_with_it_commits(
        tmp_path: Path) -> None:
    store = open_store(tmp_path / "o.db")
    outbox = AsyncOutbox(store, commit_max_wait_s=0.05)  # both puts share one batch window
    try:
        async with asyncio.timeout(5), asyncio.TaskGroup() as tg:
            writer = tg.create_task(outbox.run(), name="outbox.writer")
            good = tg.create_task(outbox.put(ev(3, n=1)))
            bad = asyncio.ensure_future(outbox.put(ev(3, battery=math.nan)))
            await asyncio.wait({bad})
            assert isinstance(bad.exception(), EventRejectedError)
            await good
            await outbox.put(ev(3, n=2))  # later puts are served
            writer.cancel()
        assert outbox.rejected == {3: 1}
        assert [r[0] for r in sql_rows(store, "SELECT count(*) FROM events")] == [2]
    finally:
        await outbox.close()


async def test_a_put_of_an_unserialisable_value_raises_to_its_caller(tmp_path: Path) -> None:
    outbox = AsyncOutbox(open_store(tmp_path / "o.db"))
    try:
        for value in (math.inf, -math.inf, {1, 2}, b"raw"):
            with pytest.raises(EventRejectedError, match="cannot be encoded"):
                await outbox.put(ev(1, value=value))  # raised before the writer sees it
        assert outbox.rejected == {1: 4}
        assert outbox.queued == 0
    finally:
        await outbox.close()


async def test_the_agent_exits_at_once_when_the_outbox_writer_dies(
        tmp_path: Path, plain_broker: Mosquitto) -> None:
    loaded = write_config(tmp_path, broker_port=plain_broker.port, pki=None, devices=[],
                          buses=[])
    agent = Agent(loaded, boot_delay_s=0)
    stop = asyncio.Event()
    run = asyncio.create_task(agent.run(stop), name="agent")
    await asyncio.wait_for(agent.ready.wait(), 10)

    def broken_append(*_args: object) -> None:
        msg = "a bug in the store"
        raise RuntimeError(msg)

    store_of(agent.outbox).append = broken_append  # type: ignore[method-assign,assignment]
    put = asyncio.ensure_future(agent.outbox.put(ev(3, n=1)))
    started = time.monotonic()
    try:
        done, _ = await asyncio.wait({run}, timeout=3)
        assert done, "the agent kept running without its outbox writer"
        assert time.monotonic() - started < 2
        with pytest.raises(BaseExceptionGroup) as info:
            run.result()
        assert info.group_contains(RuntimeError, match="a bug in the store")
        # the caller of the failed commit hears of it instead of waiting forever
        await asyncio.wait({put}, timeout=1)
        assert put.done()
    finally:
        stop.set()
        if not run.done():
            await asyncio.wait({run}, timeout=10)
        put.cancel()


async def test_the_sink_counts_a_rejected_reading_and_the_device_keeps_running(
        tmp_path: Path) -> None:
    loaded = write_config(tmp_path, broker_port=1, pki=None, buses=[], devices=[])
    outbox = AsyncOutbox(open_store(tmp_path / "o.db"))
    sink = EventSink(loaded.config, outbox, Clock("system"), {})
    reading = Reading("mh-1", {"battery": 3.6}, time.time_ns(), time.monotonic_ns())
    # Reading refuses NaN itself since issue 14; the sink is the net below that net
    object.__setattr__(reading, "values", {"battery": math.nan})
    try:
        await sink.reading(reading)  # does not raise into the driver
        assert sink.readings_rejected == 1
        assert outbox.rejected == {3: 1}
    finally:
        await outbox.close()
