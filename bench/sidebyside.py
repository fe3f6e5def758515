"""edge and thingsboard-gateway 3.8.x side by side, in one run, on one simulator and one broker.

100 devices × 10 registers at 1 Hz each: the simulator serves units 1-100 to edge (PZEM-004T
meters, one 10-register read per poll) and units 101-200 to tbgw (one wide-range read of the
same ten registers). Both publish over TLS with a client certificate to the same mosquitto.
Measured: readings delivered per CPU-second of each agent, peak RSS, and — with ``outage_s`` —
loss through a broker outage (reads the simulator answered minus distinct readings delivered).

Everything runs inside a network namespace that has only loopback (``unshare -n``): tbgw
contacts an update server at start and hourly. ``run_inner`` is what runs in there.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import agent_env, cpu_s, rss_mb, subscribe, workdir, write_config
from bench.tbgw_setup import tbgw_python
from bench.tbgw_setup import write_config as write_tbgw_config
from edge.transports.mqtt import MqttLink
from hil.broker import Mosquitto, free_port
from hil.demo import client_tls
from hil.pki import Pki, ensure_pki

DEVICES = 100
ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Counts:
    """Distinct readings delivered to the broker, per agent."""

    edge: set[int] = field(default_factory=set)  # event seq
    tbgw: set[tuple[str, int]] = field(default_factory=set)  # (device, ts)

    def handle(self, topic: str, payload: bytes) -> None:
        """Count one message from either agent."""
        if topic.endswith("/events"):
            body = json.loads(json.loads(payload)["body"])
            self.edge.update(e["seq"] for e in body["events"] if e["type"] == "reading")
        elif topic == "v1/gateway/telemetry":
            for device, entries in json.loads(payload).items():
                for entry in entries if isinstance(entries, list) else [entries]:
                    self.tbgw.add((device, int(entry.get("ts", 0))))


async def _answer_session_limits(link: MqttLink, topic: str, payload: bytes) -> None:
    """Play ThingsBoard's part: tbgw sends nothing until its session limits arrive."""
    if json.loads(payload).get("method") != "getSessionLimits":
        return
    unlimited = "0:0,"
    reply = {"rateLimits": {"messages": unlimited, "telemetryMessages": unlimited,
                            "telemetryDataPoints": unlimited},
             "maxInflightMessages": 100, "maxPayloadSize": 65536}
    await link.publish(topic.replace("/request/", "/response/"), json.dumps(reply).encode())


async def _pump(link: MqttLink, counts: Counts) -> None:
    while True:
        item = await link.inbound.get()
        if item.topic.startswith("v1/devices/me/rpc/request/"):
            await _answer_session_limits(link, item.topic, item.payload)
        else:
            counts.handle(item.topic, item.payload)


async def _subscribe(port: int, pki: Pki, counts: Counts) -> tuple[MqttLink, asyncio.Task[None]]:
    link = await subscribe(port, "bench-sbs", ["edge/v1/+/events", "v1/gateway/telemetry",
                                               "v1/devices/me/rpc/request/+"],
                           tls=client_tls(pki, "receiver"), session_expiry_s=3600)
    return link, asyncio.create_task(_pump(link, counts), name="bench.sbs.pump")


def _edge_config(folder: Path, broker_port: int, sim_port: int, pki: Pki) -> Path:
    devices = [{"name": f"lamp-{u:03d}", "kind": "streetlight", "transport": "modbus_tcp",
                "bus": "sim", "unit_id": u, "model": "pzem004t", "poll_interval_s": 1.0,
                "asset": {"code": f"320508011800{u:04d}", "class": "0118",
                          "grid": "320508001002003", "name": f"lamp {u}"}}
               for u in range(1, DEVICES + 1)]
    tls = {"ca_file": str(pki.cert("ca")), "cert_file": str(pki.cert("gateway")),
           "key_file": str(pki.key("gateway"))}
    return write_config(folder, broker_port=broker_port, devices=devices,
                        buses=[{"name": "sim", "type": "modbus_tcp", "host": "127.0.0.1",
                                "port": sim_port, "timeout_s": 1.0}],
                        uplink={"tls": tls, "reconnect_base_s": 0.5, "reconnect_cap_s": 5.0})


async def measure(folder: Path, *, seconds: float, outage_s: float) -> dict[str, Any]:
    """Run both agents; return their figures (inside the namespace)."""
    pki = ensure_pki(folder / "pki", clients=("gateway", "receiver", "tbgw"))
    broker = Mosquitto(folder / "mq", free_port(), pki, persistence=True)
    broker.start()
    sim_port = free_port()
    sim = subprocess.Popen(  # noqa: ASYNC220 - fork/exec, no waiting
        [sys.executable, "-m", "bench.sim_server", str(sim_port), "pzem004t", str(2 * DEVICES)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT)
    assert sim.stdout is not None
    sim.stdout.readline()  # ready
    counts = Counts()
    link, pump = await _subscribe(broker.port, pki, counts)
    edge_cfg = _edge_config(folder / "edge", broker.port, sim_port, pki)
    tb_cfg = write_tbgw_config(folder / "tbgw", broker_port=broker.port, sim_port=sim_port,
                               units=range(DEVICES + 1, 2 * DEVICES + 1), poll_ms=1000, pki=pki)
    edge = subprocess.Popen(  # noqa: ASYNC220
        [sys.executable, "-m", "edge.cli", "run", "--config", str(edge_cfg), "--log-level",
         "WARNING"], stderr=subprocess.DEVNULL, env=agent_env())
    tb_out = (folder / "tbgw.out").open("wb")
    tbgw = subprocess.Popen(  # noqa: ASYNC220
        [str(tbgw_python()), "-m", "thingsboard_gateway.tb_gateway"], cwd=tb_cfg,
        env={**os.environ, "TB_GW_CONFIG_DIR": f"{tb_cfg}/"}, stdout=tb_out,
        stderr=subprocess.STDOUT)
    try:
        warm_deadline = time.monotonic() + 60
        while (len(counts.edge) < DEVICES or len(counts.tbgw) < DEVICES) and \
                time.monotonic() < warm_deadline:  # noqa: ASYNC110 - counts grow in a task
            await asyncio.sleep(0.2)
        if len(counts.tbgw) < DEVICES:
            tail = (folder / "tbgw.out").read_text(errors="replace")[-1500:]
            raise RuntimeError(f"tbgw delivered {len(counts.tbgw)} readings in 60 s:\n{tail}")
        await asyncio.sleep(3.0)  # both past their start-up work
        cpu0 = {"edge": cpu_s(edge.pid), "tbgw": cpu_s(tbgw.pid)}
        n0 = {"edge": len(counts.edge), "tbgw": len(counts.tbgw)}
        await asyncio.sleep(seconds)
        cpu1 = {"edge": cpu_s(edge.pid), "tbgw": cpu_s(tbgw.pid)}
        n1 = {"edge": len(counts.edge), "tbgw": len(counts.tbgw)}
        result: dict[str, Any] = {
            f"{k}_readings_per_cpu_s": (n1[k] - n0[k]) / max(cpu1[k] - cpu0[k], 1e-9)
            for k in ("edge", "tbgw")}
        result |= {f"{k}_readings_per_s": (n1[k] - n0[k]) / seconds for k in ("edge", "tbgw")}
        result |= {f"{k}_cpu_pct": 100 * (cpu1[k] - cpu0[k]) / seconds for k in ("edge", "tbgw")}
        if outage_s > 0:
            pump.cancel()
            await link.close()
            broker.stop()
            await asyncio.sleep(outage_s)
            broker.start()
            link, pump = await _subscribe(broker.port, pki, counts)
            await asyncio.sleep(outage_s / 2)  # polling goes on after the outage too
        # stop the source, then give both time to deliver what they hold
        sim.send_signal(signal.SIGTERM)
        out, _ = sim.communicate(timeout=30)
        answered = json.loads(out.decode().strip().splitlines()[-1])
        edge_reads = sum(v for k, v in answered.items() if int(k) <= DEVICES)
        tb_reads = sum(v for k, v in answered.items() if int(k) > DEVICES)
        # both deliver what they hold: edge's outbox is durable, so wait for all of it; tbgw
        # may still be reconnecting, so late is not lost until it has been quiet for 20 s
        settle_deadline = time.monotonic() + max(90.0, 3 * outage_s)
        quiet_since, last = time.monotonic(), -1
        while time.monotonic() < settle_deadline:
            await asyncio.sleep(2.0)
            if len(counts.tbgw) != last:
                quiet_since, last = time.monotonic(), len(counts.tbgw)
            if len(counts.edge) >= edge_reads and (len(counts.tbgw) >= tb_reads or
                                                   time.monotonic() - quiet_since >= 20):
                break
        result |= {"edge_rss_mb": rss_mb(edge.pid), "tbgw_rss_mb": rss_mb(tbgw.pid),
                   "edge_lost": max(0, edge_reads - len(counts.edge)),
                   "tbgw_lost": max(0, tb_reads - len(counts.tbgw)),
                   "edge_answered": edge_reads, "tbgw_answered": tb_reads,
                   "edge_delivered": len(counts.edge), "tbgw_delivered": len(counts.tbgw),
                   "seconds": seconds, "outage_s": outage_s}
        return result
    finally:
        for proc in (edge, tbgw):
            proc.terminate()
        for proc in (edge, tbgw):
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        if sim.poll() is None:
            sim.kill()
        tb_out.close()
        pump.cancel()
        await link.close()
        broker.stop()


def run_in_namespace(*, seconds: float, outage_s: float) -> dict[str, Any]:
    """Run ``measure`` inside a loopback-only network namespace; return its figures."""
    tbgw_python()  # install outside: inside there is no network, on purpose
    unshare = shutil.which("unshare")
    if unshare is None or os.geteuid() != 0:
        raise SystemExit("the side-by-side needs root and unshare(1) for a loopback-only "
                         "network namespace (tbgw calls an update server)")
    inner = (f"ip link set lo up && exec {sys.executable} -m bench.sidebyside --inner "
             f"--seconds {seconds} --outage-s {outage_s}")
    proc = subprocess.run([unshare, "-n", "--", "sh", "-c", inner], cwd=ROOT, check=False,
                          stdout=subprocess.PIPE, timeout=seconds + 3 * outage_s + 400)
    lines = proc.stdout.decode(errors="replace").strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"side-by-side failed ({proc.returncode}): {lines[-5:]}")
    return json.loads(lines[-1])  # type: ignore[no-any-return]


def main() -> None:
    """``python -m bench.sidebyside --inner``: the part that runs in the namespace."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--inner", action="store_true", required=True)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--outage-s", type=float, default=0)
    args = parser.parse_args()
    with workdir("sbs-") as folder:
        result = asyncio.run(measure(folder, seconds=args.seconds, outage_s=args.outage_s))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
