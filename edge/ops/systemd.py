"""systemd integration: READY/STOPPING notifications and progress-gated watchdog pings.

A watchdog that pings from a timer proves only that the timer runs. Ours pings only while
(1) the event loop is not blocked, (2) the outbox writer keeps up (its queue drains), and
(3) the uplink or at least one device made progress recently. A wedged agent stops pinging and
systemd kills and restarts it (``WatchdogSec=`` in systemd/edge.service).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)


def notify(state: str) -> bool:
    """Send ``state`` to systemd's notify socket; return False when not under systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(state.encode(), address)
    except OSError as exc:
        log.warning("sd_notify failed: %s", exc)
        return False
    return True


def watchdog_interval_s() -> float | None:
    """Return systemd's watchdog interval for this process, or None when there is none."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec:
        return None
    try:  # systemd writes decimal integers; anything else must not stop the agent starting
        interval_us, for_pid = int(usec), int(pid) if pid else os.getpid()
    except ValueError:
        log.warning("ignoring a malformed watchdog setting: WATCHDOG_USEC=%.20r "
                    "WATCHDOG_PID=%.20r", usec, pid)
        return None
    if for_pid != os.getpid() or interval_us <= 0:
        return None
    return interval_us / 1_000_000


@dataclass(frozen=True)
class Progress:
    """What the agent reports to the watchdog gate (monotonic seconds)."""

    writer_queue: int  # ops waiting for the outbox writer
    writer_last_commit: float
    uplink_last_progress: float
    devices_last_ok: float


def should_ping(progress: Progress, *, now: float, loop_lag_s: float,
                window_s: float) -> tuple[bool, str]:
    """Return (ping?, reason): all three kinds of progress are required."""
    if loop_lag_s > window_s / 2:
        return False, f"event loop blocked for {loop_lag_s:.1f} s"
    if progress.writer_queue > 0 and now - progress.writer_last_commit > window_s:
        return False, f"outbox writer stalled for {now - progress.writer_last_commit:.0f} s"
    recent = max(progress.uplink_last_progress, progress.devices_last_ok)
    if now - recent > window_s:
        return False, f"no uplink or device progress for {now - recent:.0f} s"
    return True, "ok"


async def watchdog(progress: Callable[[], Progress], *, interval_s: float,
                   send: Callable[[str], bool] = notify) -> None:
    """Ping at half the interval while ``should_ping`` says so; runs until cancelled.

    ``window_s`` for progress is generous (10 intervals): a device polled once a minute or an
    uplink idle at night must not be mistaken for a wedged agent; a blocked loop is caught at
    once by the lag measurement.
    """
    period = interval_s / 2
    window = max(10 * interval_s, 120.0)
    withheld = False
    expected = time.monotonic() + period
    while True:
        await asyncio.sleep(max(0.0, expected - time.monotonic()))
        now = time.monotonic()
        lag = now - expected
        expected = now + period
        ok, reason = should_ping(progress(), now=now, loop_lag_s=lag, window_s=window)
        if ok:
            send("WATCHDOG=1")
            if withheld:
                log.info("watchdog pings resumed")
            withheld = False
        elif not withheld:
            log.error("withholding watchdog pings: %s", reason)
            withheld = True
