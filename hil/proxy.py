"""A TCP proxy on loopback that can fail like a 4G link or a hostile broker.

Modes: ``forward``; ``blackhole`` (stop moving bytes both ways, keep sockets open: a silent
drop with no RST); ``rst`` (abort every connection with RST, then keep forwarding new ones);
``kick`` (let the broker's first reply — CONNACK — through, then close: accept-then-kick);
``refuse`` (accept and close at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any


@dataclass
class FaultProxy:
    """Listens on 127.0.0.1:``port`` and forwards to 127.0.0.1:``target_port``."""

    target_port: int
    port: int = 0
    mode: str = "forward"
    accepted: list[float] = field(default_factory=list)  # monotonic accept times
    first_bytes: list[int] = field(default_factory=list)  # first byte each client sent
    _server: asyncio.Server | None = None
    _conns: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = field(default_factory=set)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _flowing: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> None:
        """Listen; ``port`` 0 picks a free one."""
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and drop every connection."""
        if self._server is not None:
            self._server.close()
        self.abort_all()
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def census(self) -> dict[str, int]:
        """Count what the proxy holds now (R5: tells a piling-up proxy from a stuck client)."""
        return {"pairs": len(self._conns), "tasks": len(self._tasks),
                "accepted": len(self.accepted)}

    def set_mode(self, mode: str) -> None:
        """Switch mode; ``rst`` aborts the current connections at once."""
        self.mode = mode
        if mode == "rst":
            self.abort_all()
            self.mode = "forward"
        if self.mode == "blackhole":
            self._flowing.clear()
        else:
            self._flowing.set()

    def abort_all(self) -> None:
        """Close every proxied connection with RST."""
        for client, upstream in list(self._conns):
            for writer in (client, upstream):
                _rst(writer)
        self._conns.clear()

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted.append(time.monotonic())
        if self.mode == "refuse":
            _rst(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            _rst(writer)
            return
        pair = (writer, up_writer)
        self._conns.add(pair)
        kick = self.mode == "kick"
        self._spawn(self._pipe(reader, up_writer, pair, kick_after_first=False,
                               record_first=True), "proxy.up")
        self._spawn(self._pipe(up_reader, writer, pair, kick_after_first=kick), "proxy.down")

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter], *,
                    kick_after_first: bool, record_first: bool = False) -> None:
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                if record_first:
                    self.first_bytes.append(data[0])
                    record_first = False
                await self._flowing.wait()  # blackhole: hold the bytes, close nothing
                if pair not in self._conns:
                    return
                writer.write(data)
                await writer.drain()
                if kick_after_first:
                    await asyncio.sleep(0.05)
                    break
        except (ConnectionError, OSError):
            pass
        finally:
            if pair in self._conns:
                self._conns.discard(pair)
                for w in pair:
                    w.close()


def _rst(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.close()
