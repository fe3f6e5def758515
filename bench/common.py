"""Shared bench helpers: tables, JSON, RSS, a config and a private broker on loopback."""

from __future__ import annotations

import asyncio
import compileall
import json
import os
import resource
import shutil
import ssl
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from edge.errors import LinkError
from edge.security.keys import init_key
from edge.transports.mqtt import MqttLink

# the environment systemd/edge.service gives the agent (glibc arenas and thresholds: see the
# unit; tests/test_systemd.py holds the two equal)
EDGE_ENV = {"MALLOC_ARENA_MAX": "1", "MALLOC_MMAP_THRESHOLD_": "131072",
            "MALLOC_TRIM_THRESHOLD_": "131072"}


def agent_env() -> dict[str, str]:
    """The environment to run the agent in, with edge's bytecode compiled as on a gateway.

    A gateway runs edge from a wheel pip installed, and pip writes every module's bytecode at
    install (systemd/install.sh). From a checkout, under PYTHONDONTWRITEBYTECODE, the agent
    would compile each module at start instead: ~1 MiB more RSS than a gateway has (D87).
    """
    compileall.compile_dir(Path(__file__).resolve().parents[1] / "edge", quiet=1)
    return {**os.environ, **EDGE_ENV}


@dataclass
class Row:
    """One line of a benchmark table."""

    metric: str
    value: float | int | str
    unit: str = ""
    goal: str = ""
    met: bool | None = None


def report(name: str, rows: list[Row], data: dict[str, Any], *, as_json: bool) -> None:
    """Print the table, and the JSON object on the last line when asked."""
    width = max(len(r.metric) for r in rows)
    print(f"\n== bench {name}")
    for r in rows:
        value = f"{r.value:,.2f}" if isinstance(r.value, float) else f"{r.value:,}" \
            if isinstance(r.value, int) else r.value
        mark = "" if r.met is None else ("  ✔" if r.met else "  ✘ goal missed")
        goal = f"  (goal {r.goal})" if r.goal else ""
        print(f"  {r.metric:<{width}}  {value:>14} {r.unit:<12}{goal}{mark}")
    if as_json:
        print(json.dumps(data))


def rss_mb(pid: int | None = None) -> float:
    """Return the peak RSS (VmHWM) of ``pid`` (default: this process) in MiB."""
    if pid is None:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def current_rss_mb(pid: int) -> float:
    """Return the current RSS (VmRSS) of ``pid`` in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_s(pid: int) -> float:
    """Return user + system CPU seconds used by ``pid``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


@contextmanager
def workdir(prefix: str) -> Iterator[Path]:
    """A scratch folder on the same disk as the repo (so fsync costs are the real ones)."""
    base = Path(__file__).resolve().parents[1] / "var" / "bench"
    base.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def write_config(folder: Path, *, broker_port: int, devices: list[dict[str, Any]],
                 buses: list[dict[str, Any]], uplink: dict[str, Any] | None = None,
                 outbox: dict[str, Any] | None = None) -> Path:
    """Write a plain-MQTT loopback devices.yaml and a gateway key; return its path."""
    doc = {
        "gateway": {"id": "gw-320508-0007", "county_code": "320508", "time_source": "system",
                    "key_file": "keys/gateway.key", "state_dir": "state"},
        "uplink": {"host": "127.0.0.1", "port": broker_port, "tls": False, "keepalive_s": 10,
                   "boot_delay_max_s": 0, "reconnect_base_s": 0.2, "reconnect_cap_s": 2.0,
                   **(uplink or {})},
        "outbox": outbox or {},
        "buses": buses, "devices": devices,
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "devices.yaml"
    with path.open("w", encoding="utf-8") as fh:
        YAML().dump(doc, fh)
    if not (folder / "keys" / "gateway.key").exists():
        init_key(folder / "keys" / "gateway.key")
    return path


async def subscribe(port: int, client_id: str, topics: list[str],
                    tls: ssl.SSLContext | None = None, session_expiry_s: int = 0) -> MqttLink:
    """Return a link subscribed to ``topics``, retrying while the broker (re)starts.

    With ``session_expiry_s`` (and a persistent broker) nothing published while the subscriber
    reconnects is missed: loss figures must count only what the agents lost.
    """
    for _ in range(200):
        link = MqttLink(host="127.0.0.1", port=port, client_id=client_id, protocol="5",
                        keepalive_s=30, connect_timeout_s=5, tls=tls, inbound_max=10_000_000,
                        session_expiry_s=session_expiry_s)
        try:
            await link.connect()
        except LinkError:
            await link.close()
            await asyncio.sleep(0.05)
            continue
        for topic in topics:
            await link.subscribe(topic)
        return link
    raise RuntimeError(f"cannot subscribe to 127.0.0.1:{port}")


def wait_for(predicate: Any, timeout_s: float, step_s: float = 0.01) -> float:
    """Poll ``predicate`` until true; return seconds waited; raise TimeoutError."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout_s:
            raise TimeoutError
        time.sleep(step_s)
    return time.monotonic() - start
