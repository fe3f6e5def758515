"""The fuzzers' hang detector: a per-example deadline on the process's CPU time.

``asyncio.wait_for`` catches a coroutine that never finishes; a CPU-bound loop inside a parser
never yields, so a SIGVTALRM timer on CPU time raises in it instead (pytest-timeout owns
SIGALRM for the whole test). Hypothesis then reports, shrinks and names the example.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator
from types import FrameType


class HangError(Exception):
    """An example ran over its CPU-time deadline."""


def _raise_hang(_sig: int, _frame: FrameType | None) -> None:
    raise HangError("an example ran over its CPU-time deadline")


@contextlib.contextmanager
def watchdog_installed() -> Iterator[None]:
    """Install the SIGVTALRM handler for a test; restore the old one and stop the timer after."""
    old = signal.signal(signal.SIGVTALRM, _raise_hang)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_VIRTUAL, 0)
        signal.signal(signal.SIGVTALRM, old)


@contextlib.contextmanager
def cpu_deadline(seconds: float) -> Iterator[None]:
    """Raise HangError in the code of this block once it has used ``seconds`` of CPU time."""
    signal.setitimer(signal.ITIMER_VIRTUAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_VIRTUAL, 0)


@contextlib.contextmanager
def watched_loop() -> Iterator[asyncio.AbstractEventLoop]:
    """A fresh event loop with the watchdog installed; after, what is still pending on it (a
    server's handlers of its last connections) is cancelled, then the loop is closed."""
    loop = asyncio.new_event_loop()
    try:
        with watchdog_installed():
            yield loop
    finally:
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.close()
