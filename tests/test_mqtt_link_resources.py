"""One MqttLink per connection must give back every file descriptor when it closes (R5).

paho closes its socket only in ``Client.__del__``; an MqttLink and its client reference each
other, so without an explicit close the socket waits for a full garbage collection, which a
long-running agent with a large heap rarely runs. With paho's own loop thread (before D84) every
reconnect leaked three descriptors (its socket and the ``loop_start`` socket pair) until paho's
``select()`` met one numbered above 1023 (FD_SETSIZE): the thread died silently and every later
connection got "no CONNACK" (R5 stuck at about the 30th flap). The event loop now drives paho
(epoll: no such limit), and no thread may be left per link. The garbage collector is off in
these tests: the release must not depend on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from edge.errors import LinkUnavailableError
from edge.transports.mqtt import MqttLink
from hil.broker import Mosquitto

LINKS = 15


def _open_fds() -> int:
    return sum(1 for _ in Path("/proc/self/fd").iterdir())


@pytest.fixture
def no_gc() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.collect()


@contextlib.asynccontextmanager
async def _silent_server() -> AsyncIterator[int]:
    """Accept, read, never answer: a CONNECT that gets no CONNACK (a blackholed link)."""
    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while await reader.read(4096):
                pass
        writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


def _link(port: int, n: int, connect_timeout_s: float = 3.0) -> MqttLink:
    return MqttLink(host="127.0.0.1", port=port, client_id=f"fd-test-{n}", protocol="5",
                    keepalive_s=5, connect_timeout_s=connect_timeout_s, tls=None)


@pytest.mark.usefixtures("no_gc")
async def test_connect_and_close_leaves_no_descriptor(plain_broker: Mosquitto) -> None:
    warm = _link(plain_broker.port, -1)
    await warm.connect()
    await warm.close()
    before = _open_fds()
    for n in range(LINKS):
        link = _link(plain_broker.port, n)
        await link.connect()
        await link.close()
    assert _open_fds() - before <= 2, f"{_open_fds() - before} descriptors leaked by {LINKS} links"


@pytest.mark.usefixtures("no_gc")
async def test_aborted_link_leaves_no_descriptor(plain_broker: Mosquitto) -> None:
    """The uplink's path after a dead link: abort(), then close()."""
    before = _open_fds()
    for n in range(LINKS):
        link = _link(plain_broker.port, n)
        await link.connect()
        link.abort()
        await link.close()
    assert _open_fds() - before <= 2, f"{_open_fds() - before} descriptors leaked by {LINKS} links"


@pytest.mark.usefixtures("no_gc")
async def test_no_connack_attempts_leave_no_descriptor() -> None:
    """A blackholed link: CONNECT goes out, CONNACK never comes, the attempt is abandoned."""
    async with _silent_server() as port:
        before = _open_fds()
        for n in range(5):
            link = _link(port, n, connect_timeout_s=0.3)
            with pytest.raises(LinkUnavailableError, match="no CONNACK"):
                await link.connect()
            link.abort()
            await link.close()
        await asyncio.sleep(0.1)  # the silent server sees the FINs and closes its side
        assert _open_fds() - before <= 2, f"{_open_fds() - before} descriptors leaked"


async def test_a_descriptor_above_select_limit_works(plain_broker: Mosquitto) -> None:
    """No select() polls paho's socket any more: one numbered above 1023 carries messages."""
    fillers: list[int] = []
    try:
        while (fd := os.open("/dev/null", os.O_RDONLY)) < 1100:
            fillers.append(fd)
        os.close(fd)
        link = _link(plain_broker.port, 0)
        await link.connect()
        sock = link._client.socket()
        assert sock is not None
        assert sock.fileno() >= 1024
        assert await link.subscribe("fd-test/high")
        assert await link.publish("fd-test/high", b"x") == 0
        assert (await link.next_inbound(3.0)).payload == b"x"
        await link.close()
    finally:
        for fd in fillers:
            os.close(fd)


def _threads_beside_the_executor() -> list[str]:
    # the loop's default executor (asyncio.to_thread: the blocking connect) is shared, bounded
    # and may start a worker per call until it is full: not a thread per link
    return [t.name for t in threading.enumerate() if not t.name.startswith("asyncio_")]


async def test_no_thread_runs_per_link(plain_broker: Mosquitto) -> None:
    """Connected links add no thread of their own (paho's loop_start added one each)."""
    links = [_link(plain_broker.port, n) for n in range(LINKS)]
    before = _threads_beside_the_executor()
    for link in links:
        await link.connect()
    assert _threads_beside_the_executor() == before
    for link in links:
        await link.close()


async def test_no_publish_reaches_paho_once_it_lost_the_link(plain_broker: Mosquitto) -> None:
    """abort() before paho has read the loss (the loop is held): publish() must refuse by
    itself (paho would queue the message for a resend), and the R5 metric stays put."""
    link = _link(plain_broker.port, 0)
    await link.connect()
    before = MqttLink.publishes_while_disconnected
    link.abort()
    time.sleep(0.5)  # hold the loop: the hop is queued while paho has closed its socket
    assert not link.closed.done()
    with pytest.raises(LinkUnavailableError, match="link is down"):
        link.publish("t", b"x")
    assert MqttLink.publishes_while_disconnected == before
    await link.close()
