"""Failures of the agent's auxiliary file writes: counted, logged once per outage, never fatal.

Issue 14 re-test (f14 #1): a full disk made the status file's write raise ENOSPC in the status
task, the agent exited 70 and every restart did the same within 0.1 s, so the cover alarm the
outbox was holding for lack of space died with the process. The status file, the clock floor
and the work-coverage snapshot are conveniences: their writes fail alone (the helper removes
its ``.tmp``) and are retried at their next period. The outbox's alarm path and the durable
helper (edge/atomic_file.py) still raise: those callers must know.
"""

from __future__ import annotations

import logging


class AuxWrites:
    """Per-file failure counts (``edge status``: ``aux_write_failures``) and outage logging."""

    def __init__(self, log: logging.Logger) -> None:
        self.log = log
        self.failures: dict[str, int] = {}
        self._down: dict[str, int] = {}  # file -> failures in the running outage

    def failed(self, name: str, exc: OSError) -> None:
        """Count a failed write of ``name``; log the first one of an outage only."""
        self.failures[name] = self.failures.get(name, 0) + 1
        if name not in self._down:
            self.log.warning("%s not written: %s; the agent goes on and retries (logged once "
                             "until a write succeeds)", name, exc.strerror or exc)
        self._down[name] = self._down.get(name, 0) + 1

    def written(self, name: str) -> None:
        """Note a successful write of ``name``; log the end of an outage."""
        failed = self._down.pop(name, None)
        if failed is not None:
            self.log.info("%s written again after %d failed writes", name, failed)
