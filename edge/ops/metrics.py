"""Prometheus text exposition and ``/healthz`` on loopback, only when configured.

No listening port exists unless ``observability.metrics_port`` is set, and then it binds to
``observability.metrics_host`` (127.0.0.1 by default; design/reliability.md S8).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from edge.ops.http_site import Reply, Request, Site, rejected_exposition, serve

StatusFn = Callable[[], Awaitable[dict[str, Any]]]


def _label(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")


def render(status: dict[str, Any]) -> str:
    """Return the exposition text for an agent status (``Agent.status()``)."""
    lines: list[str] = []

    def metric(name: str, kind: str, help_text: str,
               samples: list[tuple[dict[str, object], float]]) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            tags = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
            lines.append(f"{name}{{{tags}}} {value}" if tags else f"{name} {value}")

    ob = status["outbox"]
    by_prio = ob["by_prio"]
    metric("edge_outbox_events", "gauge", "Events waiting in the outbox.",
           [({"prio": p}, by_prio.get(str(p), {}).get("events", 0)) for p in range(4)])
    metric("edge_outbox_bytes", "gauge", "Payload bytes waiting in the outbox.",
           [({"prio": p}, by_prio.get(str(p), {}).get("bytes", 0)) for p in range(4)])
    metric("edge_outbox_oldest_age_seconds", "gauge", "Age of the oldest queued event.",
           [({"prio": p}, by_prio.get(str(p), {}).get("oldest_age_s", 0)) for p in range(4)])
    metric("edge_outbox_dead_letters", "gauge", "Events in the dead-letter table.",
           [({}, ob["dead_letters"])])
    metric("edge_outbox_rejected_total", "counter",
           "Events the outbox refused to store (not encodable: NaN, wrong type), by prio.",
           [({"prio": p}, n) for p, n in (ob.get("rejected") or {}).items()])
    metric("edge_readings_rejected_total", "counter",
           "Readings the sink refused (the net below the drivers' own checks).",
           [({}, status.get("readings_rejected", 0))])
    metric("edge_gnss_time_rejected_total", "counter",
           "GNSS fixes refused as a time source (implausible or disagreeing).",
           [({}, status.get("gnss_time_rejected", 0))])
    drops = []
    for key, value in ob["drops"].items():
        reason, _, prio = key.rpartition(".")
        drops.append(({"reason": reason, "prio": prio}, value))
    metric("edge_outbox_dropped_total", "counter",
           "Events dropped, by reason and prio (persisted across restarts).", drops)
    up = status.get("uplink") or {}
    metric("edge_uplink_connected", "gauge", "1 while the uplink is connected.",
           [({}, 1 if up.get("connected") else 0)])
    metric("edge_uplink_connects_total", "counter", "Successful connections.",
           [({}, up.get("connects", 0))])
    metric("edge_uplink_batches_published_total", "counter", "Batches published.",
           [({}, up.get("batches_published", 0))])
    metric("edge_uplink_events_acked_total", "counter", "Events acknowledged and deleted.",
           [({}, up.get("events_acked", 0))])
    metric("edge_uplink_failures_total", "counter", "Uplink failures by code.",
           [({"code": k}, v) for k, v in (up.get("failures") or {}).items()])
    devices = status["devices"]
    for name, field, help_text, kind in (
        ("edge_device_polls_ok_total", "polls_ok", "Successful polls.", "counter"),
        ("edge_device_polls_failed_total", "polls_failed", "Failed polls.", "counter"),
        ("edge_device_overruns_total", "overruns", "Polls skipped: the last one ran over.",
         "counter"),
        ("edge_device_parse_errors_total", "parse_errors", "Undecodable frames.", "counter"),
        ("edge_device_bad_values_total", "bad_values",
         "Values refused where a reading is built (NaN, out of range, wrong type).", "counter"),
        ("edge_device_poll_latency_seconds", "latency_s", "Latency of the last poll.", "gauge"),
    ):
        metric(name, kind, help_text,
               [({"device": d, "kind": v["kind"]}, v.get(field, 0)) for d, v in devices.items()])
    metric("edge_device_online", "gauge", "1 online, 0.5 degraded, 0 offline.",
           [({"device": d}, {"online": 1, "degraded": 0.5}.get(v["state"], 0))
            for d, v in devices.items()])
    buses = status.get("buses") or {}
    for name, field, help_text in (
        ("edge_bus_requests_total", "requests", "Modbus transactions on the line."),
        ("edge_bus_timeouts_total", "timeouts", "Requests without an answer in time."),
        ("edge_bus_bad_frames_total", "bad_frames", "Replies dropped: bad CRC or noise."),
        ("edge_bus_wrong_unit_total", "wrong_unit", "Replies dropped: from another unit."),
        ("edge_bus_breaker_skips_total", "breaker_skips", "Polls skipped: slave not answering."),
        ("edge_bus_busy_seconds_total", "busy_s", "Time the line was held."),
    ):
        metric(name, "counter", help_text, [({"bus": b}, v.get(field, 0))
                                            for b, v in buses.items()])
    metric("edge_uplink_bytes_published_total", "counter", "Envelope bytes published.",
           [({}, up.get("bytes_published", 0))])
    metric("edge_commands_total", "counter", "Downlink commands by result.",
           [({"result": k}, v) for k, v in (status.get("commands") or {}).items()])
    metric("edge_time_synced", "gauge", "1 when the clock is trusted.",
           [({"quality": status["time_quality"]},
             1 if status["time_quality"] == "synced" else 0)])
    return "\n".join(lines) + "\n"


async def serve_metrics(status: StatusFn, *, host: str, port: int) -> Site:
    """Start the endpoint; return its site."""

    async def metrics(_request: Request) -> Reply:
        text = render(await status()) + rejected_exposition()
        return Reply(text=text, headers={"X-Content-Type-Options": "nosniff"})

    async def healthz(_request: Request) -> Reply:
        now = await status()
        healthy = any(d["state"] != "offline" for d in now["devices"].values()) or \
            not now["devices"]
        return Reply.json({"ok": healthy, "uplink": (now.get("uplink") or {})
                           .get("connected", False)}, status=200 if healthy else 503)

    return await serve([("GET", "/metrics", metrics), ("GET", "/healthz", healthz)],
                       host=host, port=port, name="metrics")
