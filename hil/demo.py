"""The demo: broker, simulators, receiver and agent on devices.yaml, all on loopback.

mosquitto runs with TLS and client certificates, as a platform broker would, and the per-gateway
ACL of docs/scale.md (the certificate's CN is the user name; a gateway's CN is its id).

``python -m hil demo`` runs until Ctrl-C; ``--self-test`` tilts the cover itself, measures the
time from tilt to alarm at the receiver, levels it, waits for the clear and exits 0 or 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

from edge.config_file import LoadedConfig
from edge.kinds.gps import GpsDevice
from edge.security.keys import describe, init_key, load_key
from hil.broker import Mosquitto, gateway_acl, wait_listening
from hil.commander import ALL_ROLES, platform_key, register
from hil.pki import Pki, ensure_pki
from hil.receiver.core import Receiver, load_gateway_keys
from hil.receiver.service import run_mqtt
from hil.receiver.store import ReceiverStore
from hil.receiver.web import MapConfig, MapConfigError, load_map_config, serve, with_work_roads
from hil.sims.modbus_sim import SimUnit
from hil.sims.runner import SimPortError, SimSet
from hil.tilt import set_tilt_local

TILT_DEG = 40.0
WEB_PORT = 18080


def prepare(loaded: LoadedConfig) -> tuple[Pki, dict[str, str]]:
    """Create the demo PKI and the gateway key (once); return PKI and the key registry."""
    cfg = loaded.config
    tls = cfg.uplink.tls
    pki_dir = loaded.resolve(tls.ca_file).parent if tls is not False and tls.ca_file \
        else loaded.resolve("var/pki")
    # the gateway's certificate names it: the broker's ACL gives a CN its own topics only
    pki = ensure_pki(pki_dir, cns={"gateway": cfg.gateway.id})
    key_path = loaded.resolve(cfg.gateway.key_file)
    key = load_key(key_path) if key_path.exists() else init_key(key_path)
    registry = {cfg.gateway.id: describe(key)["public_key_hex"]}
    reg_path = loaded.resolve("var/receiver/gateways.json")
    reg_path.parent.mkdir(parents=True, exist_ok=True)
    reg_path.write_text(json.dumps(registry, indent=1))
    if cfg.gateway.platform_keys_file:  # the platform's command key, as provisioning would
        register(loaded.resolve(cfg.gateway.platform_keys_file),
                 platform_key(loaded.resolve("var/receiver/platform.key")), ALL_ROLES)
    return pki, registry


def client_tls(pki: Pki, name: str) -> ssl.SSLContext:
    """Return a client context for ``name``'s certificate, trusting only the demo CA."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_verify_locations(cafile=str(pki.cert("ca")))
    ctx.load_cert_chain(str(pki.cert(name)), str(pki.key(name)))
    return ctx


def demo_map_config(loaded: LoadedConfig) -> MapConfig:
    """Return the map's config: var/receiver/map.json plus the ``work:`` roads of devices.yaml.

    Raises MapConfigError (one line: the file, the key, what is allowed) for a bad file.
    """
    config = load_map_config(loaded.resolve("var/receiver/map.json"))
    roads = {road.id: road.line for device in loaded.config.devices
             if isinstance(device, GpsDevice) and device.work is not None
             for road in device.work.roads if road.line is not None}
    return with_work_roads(config, roads)


def say(line: str) -> None:
    """Print a timestamped demo line."""
    print(f"{time.strftime('%H:%M:%S')}  {line}", flush=True)


async def run_demo(loaded: LoadedConfig, *, self_test: bool, seconds: float | None) -> int:
    """Run the demo; return the exit code."""
    cfg = loaded.config
    # tiles, road centrelines and grid outlines, if the operator wrote them (D55)
    map_config = demo_map_config(loaded)
    pki, registry = prepare(loaded)
    workdir = loaded.resolve("var/demo")
    workdir.mkdir(parents=True, exist_ok=True)
    # the per-gateway ACL of docs/scale.md: another gateway's certificate can neither read
    # nor write this gateway's topics (issue 20 #11)
    broker = Mosquitto(workdir / "mosquitto", cfg.uplink.port, pki,
                       acl=gateway_acl(cfg.uplink.topic_prefix))
    sims = SimSet.for_config(cfg)
    store = ReceiverStore(workdir / "receiver.db")
    events: list[tuple[float, str]] = []

    def echo(line: str) -> None:
        events.append((time.monotonic(), line))
        say(f"[receiver] {line}")

    receiver = Receiver(store, load_gateway_keys(registry), echo=echo)
    started_ns = time.time_ns()
    agent: subprocess.Popen[bytes] | None = None
    try:
        problem = await _start_peers(broker, sims, cfg.uplink.port)
        if problem is not None:
            say(problem)
            return 1
        web_runner = await serve(store, port=WEB_PORT, map_config=map_config)
        say(f"receiver page: http://127.0.0.1:{WEB_PORT}/  (JSON: /api/state)")
        say(f"operators' map: http://127.0.0.1:{WEB_PORT}/map")
        ready = asyncio.Event()
        async with asyncio.TaskGroup() as tg:
            rx = tg.create_task(run_mqtt(receiver, host="127.0.0.1", port=cfg.uplink.port,
                                         tls=client_tls(pki, "receiver"),
                                         prefix=cfg.uplink.topic_prefix, ready=ready),
                                name="demo.receiver")
            async with asyncio.timeout(10):
                await ready.wait()
            log_path = workdir / "agent.log"
            with log_path.open("ab") as log:
                agent = subprocess.Popen(  # noqa: ASYNC220 - fork/exec, no waiting
                    [sys.executable, "-m", "edge.cli", "run", "--config", str(loaded.path),
                     "--boot-delay-s", "0"], stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True)
            say(f"agent started (pid {agent.pid}, log {log_path})")
            _instructions(loaded)
            code = await (_self_test(sims, events, store, started_ns) if self_test
                          else _wait(seconds, agent))
            rx.cancel()
        await web_runner.cleanup()
        return code
    finally:
        if agent is not None and agent.poll() is None:
            agent.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                agent.wait(timeout=15)
            if agent.poll() is None:
                agent.kill()
        await sims.stop()
        broker.stop()
        store.close()


async def _start_peers(broker: Mosquitto, sims: SimSet, port: int) -> str | None:
    """Start the broker and the simulators; return the one line to show if a port is taken."""
    try:
        broker.start()
    except RuntimeError as exc:
        return f"cannot start mosquitto on 127.0.0.1:{port}: {exc}"
    try:
        await sims.start()
    except SimPortError as exc:  # one line with the port, as the broker's clash (f14 #3)
        return str(exc)
    return None


def _instructions(loaded: LoadedConfig) -> None:
    cover = next((d.name for d in loaded.config.devices if d.kind == "manhole_tilt"), "?")
    py = Path(sys.executable)
    say("demo running. In another terminal:")
    say(f"   {py} -m hil tilt {cover} {TILT_DEG:g}    # lift the cover: alarm shows here")
    say(f"   {py} -m hil tilt {cover} 0     # put it back: the case closes")
    lamp = next((d.name for d in loaded.config.devices if d.kind == "streetlight"), None)
    if lamp:
        say(f"""   {py} -m hil command {lamp} light.set '{{"on": false}}'   # a signed command""")
    say("   .venv/bin/edge status   |   .venv/bin/edge check")
    say("Ctrl-C stops everything.")


async def _wait(seconds: float | None, agent: subprocess.Popen[bytes]) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    deadline = None if seconds is None else time.monotonic() + seconds
    while not stop.is_set():
        if agent.poll() is not None:
            say(f"the agent exited with code {agent.returncode}; see var/demo/agent.log")
            return 1
        if deadline is not None and time.monotonic() > deadline:
            break
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.5):
                await stop.wait()
    return 0


async def _wait_for(events: list[tuple[float, str]], needle: str, since: float,
                    timeout_s: float) -> float | None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for at, line in events:
            if at >= since and needle in line:
                return at - since
        await asyncio.sleep(0.01)
    return None


async def _self_test(sims: SimSet, events: list[tuple[float, str]], store: ReceiverStore,
                     started_ns: int) -> int:
    unit: SimUnit | None = next((u for n, u in sims.units.items() if n.startswith("manhole")),
                                None)
    if unit is None:
        say("self-test: no manhole sensor in the config")
        return 1
    # wait until the agent of this run is connected (its birth message reached the receiver)
    deadline = time.monotonic() + 45
    while not any(g["online"] and g["updated_ns"] >= started_ns for g in store.gateways()):
        if time.monotonic() > deadline:
            say("self-test FAILED: the gateway never came online")
            return 1
        await asyncio.sleep(0.1)
    t0 = time.monotonic()
    set_tilt_local(unit, TILT_DEG)
    raised = await _wait_for(events, "raised", t0, 10)
    t1 = time.monotonic()
    set_tilt_local(unit, 0.0)
    cleared = await _wait_for(events, "cleared", t1, 10)
    say(f"self-test: alarm raised {raised if raised is None else f'{raised:.2f} s'} after the "
        f"tilt, cleared {cleared if cleared is None else f'{cleared:.2f} s'} after levelling")
    ok = raised is not None and cleared is not None and raised <= 2.0 and cleared <= 2.0
    say("self-test PASSED" if ok else "self-test FAILED (goal: both within 2 s)")
    return 0 if ok else 1


def demo_main(config: Path, *, self_test: bool, seconds: float | None) -> int:
    """Entry point for ``python -m hil demo``."""
    from edge.config_loader import load_config  # noqa: PLC0415
    from edge.errors import ConfigError  # noqa: PLC0415

    try:
        loaded = load_config(config)
    except ConfigError as exc:
        print("\n".join(exc.problems), file=sys.stderr)
        return 2
    try:
        demo_map_config(loaded)  # checked before anything starts: one line, not a traceback
    except MapConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(run_demo(loaded, self_test=self_test, seconds=seconds))
    return 0


__all__ = ["demo_main", "prepare", "wait_listening"]
