"""``python -m bench mqtt_links`` (issue 13): threads and memory of 20 connected MqttLinks.

One fresh process opens 20 links to a private mosquitto on loopback (as 20 MQTT devices of
southbound_mqtt do), concurrently; each subscribes, then publishes a QoS 1 message and waits for
its PUBACK, 20 rounds, so every link is known to work. After a second's rest it counts threads
(/proc/self/status ``Threads``; by name: paho's loop threads, the event loop's executor, which
``asyncio.to_thread`` connects use and keeps idle afterwards) and reads VmRSS, VmSize (each
thread reserves a stack) and open descriptors; once more after every link closed. The worker
runs with the agent's environment (``bench.common.EDGE_ENV``, systemd/edge.service).

``python -m bench.mqtt_links --rev REV`` also measures ``edge/transports/mqtt.py`` as it was at
git revision REV (loaded under another module name), side by side: D84's before → after.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import Row, agent_env, report, workdir
from edge.transports.mqtt import MqttLink
from hil.broker import Mosquitto, free_port

LINKS = 20
MESSAGES = 20  # QoS 1 publishes per link, one window at a time
REPO = Path(__file__).resolve().parents[1]


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _snapshot() -> dict[str, Any]:
    names = [t.name for t in threading.enumerate()]
    return {"threads": _status("Threads"),
            "paho_threads": sum(n.startswith("paho-mqtt-client") for n in names),
            "executor_threads": sum(n.startswith("asyncio") for n in names),
            "rss_kib": _status("VmRSS"), "vm_kib": _status("VmSize"),
            "fds": sum(1 for _ in Path("/proc/self/fd").iterdir())}


def _link_class(rev: str | None) -> Any:
    """Return MqttLink of the working tree, or of ``edge/transports/mqtt.py`` at ``rev``."""
    if rev is None:
        return MqttLink
    source = subprocess.run(["git", "show", f"{rev}:edge/transports/mqtt.py"], cwd=REPO,
                            check=True, capture_output=True, text=True).stdout
    name = "edge_transports_mqtt_at_rev"
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"{name}.py"
        path.write_text(source)
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # its dataclasses look their module up
        spec.loader.exec_module(module)
    return module.MqttLink


async def _measure(port: int, rev: str | None) -> dict[str, Any]:
    link_class = _link_class(rev)
    await asyncio.sleep(0)
    result: dict[str, Any] = {"idle": _snapshot()}
    links = [link_class(host="127.0.0.1", port=port, client_id=f"bench-links-{n}",
                        protocol="5", keepalive_s=30, connect_timeout_s=5.0, tls=None)
             for n in range(LINKS)]
    started = time.monotonic()
    async with asyncio.TaskGroup() as tg:
        for link in links:
            tg.create_task(link.connect())
    result["connect_s"] = time.monotonic() - started
    for n, link in enumerate(links):
        assert await link.subscribe(f"bench/links/{n}/cmd")
    for _ in range(MESSAGES):
        codes = await asyncio.gather(*(link.publish(f"bench/links/{n}/up", b"x" * 100)
                                       for n, link in enumerate(links)))
        assert all(code < 0x80 for code in codes), codes  # 0x10: no subscriber, delivered
    await asyncio.sleep(1.0)
    result["connected"] = _snapshot()
    for link in links:
        await link.close()
    await asyncio.sleep(0.2)
    result["closed"] = _snapshot()
    return result


def _worker(port: int, rev: str | None) -> dict[str, Any]:
    """Run one measurement in a fresh interpreter; return its JSON."""
    args = [sys.executable, "-m", "bench.mqtt_links", "--worker", str(port)]
    if rev is not None:
        args += ["--rev", rev]
    done = subprocess.run(args, cwd=REPO, check=False, capture_output=True, text=True,
                          env=agent_env())
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{done.stderr}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def _rows(label: str, m: dict[str, Any]) -> list[Row]:
    c, idle, closed = m["connected"], m["idle"], m["closed"]
    return [
        Row(f"{label}: threads, {LINKS} links up", c["threads"], "threads"),
        Row(f"{label}:   of them paho loop threads", c["paho_threads"], "threads"),
        Row(f"{label}:   of them idle executor workers", c["executor_threads"], "threads"),
        Row(f"{label}: threads before / after the links", f"{idle['threads']} / "
            f"{closed['threads']}", "threads"),
        Row(f"{label}: VmRSS, {LINKS} links up", round(c["rss_kib"] / 1024, 1), "MiB"),
        Row(f"{label}: VmRSS added by the links", round((c["rss_kib"] - idle["rss_kib"]) / 1024,
                                                        1), "MiB"),
        Row(f"{label}: VmSize added (thread stacks are address space)",
            round((c["vm_kib"] - idle["vm_kib"]) / 1024, 1), "MiB"),
        Row(f"{label}: descriptors added by the links", c["fds"] - idle["fds"], "fds"),
        Row(f"{label}: connect {LINKS} at once", round(m["connect_s"], 3), "s"),
    ]


def measure(revs: list[str]) -> dict[str, dict[str, Any]]:
    """Measure each git revision in ``revs`` and then the working tree, each in its own process."""
    with workdir("mqtt-links-") as folder:
        mq = Mosquitto(folder / "mosquitto", free_port(), None)
        mq.start()
        try:
            results = {rev: _worker(mq.port, rev) for rev in revs}
            results["now"] = _worker(mq.port, None)
        finally:
            mq.stop()
    return results


def run(*, quick: bool, as_json: bool, revs: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """Print the table (one block per revision, then the working tree)."""
    del quick  # a few seconds either way
    results = measure(list(revs))
    rows = [row for label, m in results.items() for row in _rows(label, m)]
    report("mqtt_links", rows, results, as_json=as_json)
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.mqtt_links")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--rev", action="append", default=[],
                        help="also measure edge/transports/mqtt.py at this git revision")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.worker is not None:
        rev = args.rev[0] if args.rev else None
        print(json.dumps(asyncio.run(_measure(args.worker, rev))))
    else:
        run(quick=False, as_json=args.json, revs=args.rev)
