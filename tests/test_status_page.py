"""The technicians' status page: auth, probe, and a real click in headless Chromium."""

from __future__ import annotations

import asyncio
import base64
import subprocess
import sys
from pathlib import Path

from aiohttp import ClientSession

from edge.agent import Agent
from edge.cli import EX_UNAVAILABLE
from edge.config_loader import load_config
from hil.broker import Mosquitto, free_port
from hil.sims.modbus_sim import ModbusTcpSim, tilt_unit
from hil.tilt import set_tilt_local
from tests.cdp import browser
from tests.cfg import tilt_device, write_config

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "var" / "test-artifacts"
PASSWORD = "cabinet-7f3a9c21d0"


def secret(path: Path, value: str) -> Path:
    path.write_text(value + "\n")
    path.chmod(0o600)
    return path


def with_page(path: Path, port: int, password_file: Path) -> None:
    path.write_text(path.read_text() + f"observability:\n  status_page_port: {port}\n"
                    f"  status_page_password_file: {password_file}\n")


async def test_status_page_probe_button_in_chromium(tmp_path: Path,
                                                    plain_broker: Mosquitto) -> None:
    sim_port, page_port = free_port(), free_port()
    unit = tilt_unit(tilt_x_deg=3.5)
    sim = ModbusTcpSim({80: unit}, sim_port)
    await sim.start()
    loaded = write_config(
        tmp_path, broker_port=plain_broker.port, pki=None,
        buses=[{"name": "covers", "type": "modbus_tcp", "host": "127.0.0.1", "port": sim_port}],
        devices=[tilt_device("manhole-12", "covers", 80)])
    with_page(loaded.path, page_port, secret(tmp_path / "page.pw", PASSWORD))
    agent = Agent(load_config(loaded.path), boot_delay_s=0)
    stop = asyncio.Event()
    run = asyncio.create_task(agent.run(stop))
    url = f"http://127.0.0.1:{page_port}"
    try:
        await asyncio.wait_for(agent.ready.wait(), 10)
        async with ClientSession() as http:
            async with http.get(url + "/") as resp:
                assert resp.status == 401  # no default password, no anonymous access
            auth = {"Authorization": "Basic " + base64.b64encode(
                f"tech:{PASSWORD}".encode()).decode()}
            async with http.get(url + "/", headers={"Authorization": "Basic dGVjaDp3cm9uZw=="}
                                ) as resp:
                assert resp.status == 401
            async with http.post(url + "/api/probe/manhole-12", headers=auth) as resp:
                assert resp.status == 403  # no X-Requested-With: a cross-site form post
        set_tilt_local(unit, 7.25)
        async with browser(tmp_path, basic_auth=("tech", PASSWORD)) as page:
            await page.call("Page.navigate", url=url + "/")
            await page.wait_for("!!document.querySelector('button[data-device=\"manhole-12\"]')")
            await page.wait_for("document.querySelector('#devices').innerText"
                                ".includes('online')")
            await page.evaluate("document.querySelector('button[data-device=\"manhole-12\"]')"
                                ".click()")
            probed = await page.wait_for(
                "(t => t.includes('tilt_x_deg') && t)(document.querySelector('#probe')"
                ".textContent)")
            text = await page.evaluate("document.body.innerText")
            await page.screenshot(ARTIFACTS / "status-page.png")
    finally:
        stop.set()
        await run
        await sim.stop()
    assert '"ok":true' in probed
    assert '"tilt_x_deg":7.25' in probed
    assert "manhole-12" in text
    assert "Outbox" in text
    assert "connected" in text
    assert (ARTIFACTS / "status-page.png").stat().st_size > 10_000


def test_a_placeholder_password_refuses_to_start(tmp_path: Path) -> None:
    loaded = write_config(tmp_path, broker_port=1, pki=None, devices=[], buses=[])
    with_page(loaded.path, free_port(), secret(tmp_path / "page.pw", "changeme"))
    result = subprocess.run([sys.executable, "-m", "edge.cli", "run", "--config",
                             str(loaded.path)], cwd=ROOT, capture_output=True, text=True,
                            timeout=30, check=False)
    assert result.returncode == EX_UNAVAILABLE
    assert "placeholder" in result.stderr
    assert "changeme" not in result.stderr  # the secret itself is never printed


def test_status_page_needs_a_password_file(tmp_path: Path) -> None:
    loaded = write_config(tmp_path, broker_port=1, pki=None, devices=[], buses=[])
    loaded.path.write_text(loaded.path.read_text() + "observability:\n  status_page_port: 9"
                           "\n")
    result = subprocess.run([sys.executable, "-m", "edge.cli", "check", "--config",
                             str(loaded.path)], cwd=ROOT, capture_output=True, text=True,
                            timeout=30, check=False)
    assert result.returncode == 2
    assert "status_page_password_file: required" in result.stderr
