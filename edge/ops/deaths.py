"""Death watch: a thread or a task outside the TaskGroups that dies stops the agent at once.

Threads are the executors (the outbox's store thread, ``to_thread`` calls); a stray task's
exception surfaces only when the task is collected, long after the part it served went quiet.
Either now fails the agent (``run`` raises, ``edge run`` exits non-zero, systemd restarts it)
instead of leaving a gateway that looks alive and forwards nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


class DeathWatch:
    """Install with ``watch(loop)``; ``await wait()`` raises what died; ``restore()`` undoes."""

    def __init__(self) -> None:
        self._fatal: asyncio.Future[None] | None = None
        self._restore: list[Callable[[], None]] = []

    def watch(self, loop: asyncio.AbstractEventLoop) -> None:
        """Replace ``threading.excepthook`` and the loop's exception handler."""
        fatal: asyncio.Future[None] = loop.create_future()
        self._fatal = fatal
        previous_hook, previous_handler = threading.excepthook, loop.get_exception_handler()

        def fail(error: BaseException) -> None:
            if not fatal.done():
                fatal.set_exception(error)

        def thread_died(args: threading.ExceptHookArgs) -> None:
            name = args.thread.name if args.thread is not None else "?"
            log.critical("thread %s died: %r", name, args.exc_value, exc_info=args.exc_value)
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                loop.call_soon_threadsafe(fail, RuntimeError(
                    f"thread {name} died: {args.exc_value!r}"))

        def task_died(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
            task, error = context.get("task") or context.get("future"), context.get("exception")
            if isinstance(task, asyncio.Task) and isinstance(error, Exception):
                log.critical("task %s died unseen: %r", task.get_name(), error, exc_info=error)
                fail(RuntimeError(f"task {task.get_name()} died: {error!r}"))
            elif previous_handler is not None:
                previous_handler(loop, context)
            else:
                loop.default_exception_handler(context)

        threading.excepthook = thread_died
        loop.set_exception_handler(task_died)

        def restore() -> None:
            if threading.excepthook is thread_died:
                threading.excepthook = previous_hook
            loop.set_exception_handler(previous_handler)

        self._restore.append(restore)

    def restore(self) -> None:
        """Put back the hooks ``watch`` replaced."""
        while self._restore:
            self._restore.pop()()

    async def wait(self) -> None:
        """Raise what a dead thread or stray task left (cancels the caller's TaskGroup)."""
        if self._fatal is None:
            raise RuntimeError("DeathWatch.wait() before watch()")
        await self._fatal
