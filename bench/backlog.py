"""``python -m bench backlog``: the agent starts with 1 M events queued (a week of outage):
time to the first live reading at the broker, drain rate to a local mosquitto, RSS over the
drain. The real agent (``edge run``) and a real mosquitto; see bench/uplink.py."""

from __future__ import annotations

import asyncio
from typing import Any

from bench.common import Row, report, workdir
from bench.uplink import measure


def run(*, quick: bool, as_json: bool) -> dict[str, Any]:
    """Run the backlog benchmark and print its table."""
    backlog = 200_000 if quick else 1_000_000
    with workdir("backlog-") as folder:
        m = asyncio.run(measure(folder, backlog))
    samples = m["rss_samples"]
    skip = min(len(samples) - 1, 4)  # the first 2 s: start-up, not the drain
    growth = max(samples[skip:]) - samples[skip] if samples else float("nan")
    data = {"first_live_reading_s": round(m["first_live_reading_s"], 2),
            "drain_events_per_s": round(m["drain_events_per_s"]),
            "rss_mb": round(m["rss_mb"], 1), "rss_growth_mb": round(growth, 1),
            "backlog_events": backlog}
    report("backlog", [
        Row(f"backlog at start ({backlog:,} events)", round(m["drain_s"], 1), "s to drain"),
        Row("first live reading at the broker", round(m["first_live_reading_s"], 2),
            "s after start", "≤ 10 s", m["first_live_reading_s"] <= 10),
        Row("drain rate to local mosquitto", round(m["drain_events_per_s"]), "events/s",
            "≥ 20,000", m["drain_events_per_s"] >= 20_000),
        Row("RSS growth during the drain", round(growth, 1), "MiB", "flat (≤ 5)",
            growth <= 5),
        Row("agent RSS (peak)", round(m["rss_mb"], 1), "MiB"),
    ], data, as_json=as_json)
    return data
