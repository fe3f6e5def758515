"""A broadcast queue per loudspeaker: emergency first, and an emergency interrupts normal play.

Every play ends with exactly one result — ``played``, ``interrupted``, ``refused`` or
``failed`` — handed to ``on_result`` (the driver turns it into a ``command_result`` event).
The queue is bounded: when full, a normal play is refused; an emergency play displaces the
newest normal one.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)
EMERGENCY, NORMAL = 0, 1


@dataclass(order=True)
class Play:
    """One thing to say: a text (TTS), or a stored clip when ``clip`` is set."""

    rank: int  # EMERGENCY or NORMAL
    order: int
    text: str = field(compare=False)  # "" for a clip play
    volume: int = field(compare=False, default=8)
    cmd_id: str | None = field(compare=False, default=None)
    source: str = field(compare=False, default="command")  # or "schedule"
    clip: str | None = field(compare=False, default=None)  # allow-listed clip name
    sha256: str | None = field(compare=False, default=None)  # its allow-listed hash


Player = Callable[[Play], Awaitable[None]]  # speaks and returns when done; raises on failure
Stopper = Callable[[], Awaitable[None]]
ResultFn = Callable[[Play, str, str], Awaitable[None]]


class BroadcastQueue:
    """Runs plays one at a time; ``run()`` is owned by the loudspeaker driver."""

    def __init__(self, player: Player, stopper: Stopper, on_result: ResultFn, *,
                 max_queued: int = 16) -> None:
        self._player = player
        self._stopper = stopper
        self._on_result = on_result
        self._max = max_queued
        self._queue: list[Play] = []
        self._wake = asyncio.Event()
        self._order = itertools.count()
        self._current: Play | None = None
        self._current_task: asyncio.Task[None] | None = None
        self.played = 0
        self.failed = 0

    async def submit(self, text: str, *, volume: int, emergency: bool,
                     cmd_id: str | None = None, source: str = "command",
                     clip: str | None = None, sha256: str | None = None) -> bool:
        """Queue a play; return False (and report ``refused``) when there is no room.

        A clip play passes ``clip`` and ``sha256`` with ``text`` empty. It is always normal
        priority (the command's PlayClip has no priority): it never interrupts another play.
        """
        if (clip is None) != (sha256 is None) or (clip is not None and (text or emergency)):
            raise ValueError("a clip play needs clip and sha256, no text, normal priority")
        play = Play(EMERGENCY if emergency else NORMAL, next(self._order), text, volume, cmd_id,
                    source, clip, sha256)
        if len(self._queue) >= self._max:
            normals = [p for p in self._queue if p.rank == NORMAL]
            if not emergency or not normals:
                await self._on_result(play, "refused", "broadcast queue full")
                return False
            displaced = max(normals)
            self._queue.remove(displaced)
            await self._on_result(displaced, "refused", "displaced by an emergency broadcast")
        self._queue.append(play)
        self._queue.sort()
        self._wake.set()
        if emergency and self._current is not None and self._current.rank == NORMAL and \
                self._current_task is not None:
            self._current_task.cancel()  # interrupt: the emergency goes on air now
        return True

    async def run(self) -> None:
        """Play forever (cancel to stop)."""
        while True:
            while not self._queue:
                self._wake.clear()
                await self._wake.wait()
            play = self._queue.pop(0)
            self._current = play
            self._current_task = asyncio.ensure_future(self._player(play))
            try:
                await asyncio.shield(self._current_task)
            except asyncio.CancelledError:
                if not self._current_task.cancelled():
                    self._current_task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await self._current_task
                    raise  # the driver itself is stopping
                with contextlib.suppress(Exception):
                    await self._stopper()
                await self._on_result(play, "interrupted", "an emergency broadcast took over")
            except Exception as exc:  # noqa: BLE001 - any playback failure is reported
                self.failed += 1
                await self._on_result(play, "failed", str(exc) or type(exc).__name__)
            else:
                self.played += 1
                await self._on_result(play, "played", "")
            finally:
                self._current = None
                self._current_task = None
