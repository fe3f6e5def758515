"""``python -m bench tbgw``: edge beside thingsboard-gateway 3.8.2 — readings per CPU-second,
RSS, and loss through a broker outage (60 s; quick: 10 s). See bench/sidebyside.py."""

from __future__ import annotations

from typing import Any

from bench.common import Row, report
from bench.sidebyside import run_in_namespace


def run(*, quick: bool, as_json: bool) -> dict[str, Any]:
    """Run the side-by-side with an outage and print its table."""
    r = run_in_namespace(seconds=8.0 if quick else 60.0, outage_s=10.0 if quick else 60.0)
    ratio = r["edge_readings_per_cpu_s"] / max(r["tbgw_readings_per_cpu_s"], 1e-9)
    keys = ("edge_readings_per_cpu_s", "tbgw_readings_per_cpu_s", "edge_rss_mb", "tbgw_rss_mb",
            "edge_lost", "tbgw_lost")
    data = {k: round(r[k], 1) for k in keys} | {"outage_s": r["outage_s"],
                                                "edge_answered": r["edge_answered"],
                                                "tbgw_answered": r["tbgw_answered"]}
    report("tbgw", [
        Row("edge readings per CPU-second", round(r["edge_readings_per_cpu_s"]), "readings",
            "≥ 3x tbgw", ratio >= 3),
        Row("tbgw readings per CPU-second", round(r["tbgw_readings_per_cpu_s"]), "readings"),
        Row("edge RSS (peak)", round(r["edge_rss_mb"], 1), "MiB", "≤ ½ tbgw",
            r["edge_rss_mb"] <= r["tbgw_rss_mb"] / 2),
        Row("tbgw RSS (peak)", round(r["tbgw_rss_mb"], 1), "MiB"),
        Row(f"edge lost in a {r['outage_s']:g} s broker outage "
            f"(of {r['edge_answered']:,} reads)", r["edge_lost"], "readings", "0",
            r["edge_lost"] == 0),
        Row(f"tbgw lost (of {r['tbgw_answered']:,} reads)", r["tbgw_lost"], "readings"),
    ], data, as_json=as_json)
    return data
