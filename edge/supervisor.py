"""supervise(): keep one driver running; jittered restarts; one log line per outage."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any

from edge.drivers.base import Driver, Sink
from edge.errors import DeviceError

log = logging.getLogger(__name__)


async def supervise(driver: Driver[Any], sink: Sink, *, cap_s: float = 60.0) -> None:
    """Run ``driver`` forever; cancellation stops it.

    After a failure it waits ``uniform(0, min(cap_s, 1.5 ** attempt))`` and restarts it.
    """
    attempt = 0
    down_since: float | None = None
    while True:
        started = time.monotonic()
        try:
            await driver.run(sink)
        except DeviceError as exc:
            driver.stats.last_error = str(exc)
            if down_since is None:
                log.warning("device %s stopped: %s", driver.name, exc)
        except Exception:
            log.exception("device %s crashed (a bug); restarting", driver.name)
        if down_since is None:
            down_since = started
        if time.monotonic() - started > 60:
            attempt = 0  # it ran a good while: this is a new outage
        attempt += 1
        await asyncio.sleep(random.uniform(0, min(cap_s, 1.5 ** attempt)))
