"""Logging: readable text on a terminal, one JSON object per line under systemd."""

from __future__ import annotations

import json
import logging
import os
import sys
import time


class JsonFormatter(logging.Formatter):
    """One JSON object per record (journald keeps it as MESSAGE; fleet tools parse it)."""

    def format(self, record: logging.LogRecord) -> str:
        """Return the record as compact JSON."""
        doc = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
               + f".{int(record.msecs):03d}Z", "level": record.levelname,
               "logger": record.name, "msg": record.getMessage()}
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


def configure(level: str = "INFO", *, json_logs: bool | None = None) -> None:
    """Configure the root logger once (JSON when stderr is journald's stream)."""
    if json_logs is None:
        json_logs = "JOURNAL_STREAM" in os.environ and not sys.stderr.isatty()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_logs else logging.Formatter(
        "%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("pymodbus", "asyncio"):  # pymodbus logs every retry; we log per outage
        logging.getLogger(noisy).setLevel(logging.CRITICAL if noisy == "pymodbus" else
                                          logging.WARNING)
