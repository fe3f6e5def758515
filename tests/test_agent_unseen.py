"""Issue 14 finding 1: a thread or a stray task of the agent that dies stops the agent at once
(exit non-zero, systemd restarts it) instead of leaving it running without that part."""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time
from pathlib import Path

import pytest

from edge.agent import Agent
from hil.broker import Mosquitto
from tests.cfg import write_config
from tests.helpers import wait_until


async def started(tmp_path: Path, port: int) -> tuple[Agent, asyncio.Event, asyncio.Task[None]]:
    loaded = write_config(tmp_path, broker_port=port, pki=None, devices=[], buses=[])
    agent = Agent(loaded, boot_delay_s=0)
    stop = asyncio.Event()
    run = asyncio.create_task(agent.run(stop), name="agent")
    await asyncio.wait_for(agent.ready.wait(), 10)
    return agent, stop, run


def messages(group: BaseExceptionGroup[BaseException]) -> str:
    return " | ".join(messages(e) if isinstance(e, BaseExceptionGroup) else str(e)
                      for e in group.exceptions)


async def ends_at_once(run: asyncio.Task[None], stop: asyncio.Event) -> BaseException:
    started_mono = time.monotonic()
    try:
        done, _ = await asyncio.wait({run}, timeout=3)
        assert done, "the agent kept running"
        assert time.monotonic() - started_mono < 2
        error = run.exception()
        assert error is not None
        return error
    finally:
        stop.set()
        if not run.done():
            await asyncio.wait({run}, timeout=10)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
async def test_a_thread_that_dies_stops_the_agent(tmp_path: Path, plain_broker: Mosquitto,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    _agent, stop, run = await started(tmp_path, plain_broker.port)

    def network_loop() -> None:
        msg = "a callback bug in a library thread"
        raise KeyError(msg)

    thread = threading.Thread(target=network_loop, name="paho-like")
    thread.start()
    thread.join()
    error = await ends_at_once(run, stop)
    assert isinstance(error, BaseExceptionGroup)
    assert "thread paho-like died" in messages(error)
    assert any("paho-like" in r.getMessage() and r.levelno == logging.CRITICAL
               for r in caplog.records)


async def test_a_stray_task_that_dies_unretrieved_stops_the_agent(
        tmp_path: Path, plain_broker: Mosquitto) -> None:
    _agent, stop, run = await started(tmp_path, plain_broker.port)

    async def boom() -> None:
        msg = "a task outside the TaskGroup"
        raise ValueError(msg)

    task = asyncio.get_running_loop().create_task(boom(), name="stray")
    await wait_until(task.done, 5, "the stray task failing")
    del task
    gc.collect()  # asyncio reports an unretrieved exception when the task is collected
    error = await ends_at_once(run, stop)
    assert isinstance(error, BaseExceptionGroup)
    assert "task stray died" in messages(error)
