"""The operators' map (/map) in real headless Chromium: an alarm from the simulator reaches it
through the agent, mosquitto and the receiver within 2 s; playback puts a recorded truck at the
right place at the right time; gateway text is only ever text; the API is bounded."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import math
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from edge.agent import Agent
from edge.clock import TimeQuality
from edge.drivers.geo import EARTH_M, distance_m
from edge.ids import uuid7
from edge.model import (
    Alarm,
    Asset,
    Event,
    EventType,
    encode_batch,
    encode_event,
)
from edge.security.signing import Ed25519PrivateKey, Signer, raw_public_key
from edge.wire import WireWorkCoverage
from hil.broker import Mosquitto, free_port
from hil.pki import Pki
from hil.receiver.core import Receiver, Store, load_gateway_keys
from hil.receiver.service import run_mqtt
from hil.receiver.store import MAP_MAX_VALUES, ReceiverStore
from hil.receiver.web import MapConfig, MapStore, WebStore, load_map_config, map_state, serve
from hil.sims.modbus_sim import ModbusTcpSim, tilt_unit
from hil.tilt import set_tilt_local
from tests.cdp import Page, browser
from tests.cfg import tilt_device, write_config
from tests.helpers import receiver_for, wait_until
from tests.pg import pg_dsn, pg_server_dsn  # noqa: F401 - fixtures
from tests.test_e2e import receiver_tls

GW = "gw-320508-0007"
ARTIFACTS = Path(__file__).resolve().parents[1] / "var" / "test-artifacts"
HOSTILE = '<img src=x onerror="document.title=\'pwned\'">井盖 & "quotes"'
TRUCK_ASSET = Asset("3205080801000031", "0801", "320508001002003", "环卫车 苏E·12345", None, None)


class Gateway:
    """A signing gateway feeding a Receiver directly (the MQTT path has its own test)."""

    def __init__(self, store: Store) -> None:
        self.key = Ed25519PrivateKey.generate()
        self.receiver = Receiver(store, load_gateway_keys(
            {GW: raw_public_key(self.key.public_key()).hex()}))
        self.seq = 0

    def send(self, *events: Event) -> None:
        wire = []
        for event in events:
            self.seq += 1
            wire.append(encode_event(event, self.seq))
        body = encode_batch(GW, self.seq, time.time_ns(), wire)
        outcome = self.receiver.handle(f"edge/v1/{GW}/events", Signer(self.key).envelope(body))
        assert not outcome.rejected, outcome.rejected


def reading(device: str, asset: Asset, values: dict[str, Any], ts_ns: int | None = None) -> Event:
    return Event(EventType.READING, 3, ts_ns or time.time_ns(), TimeQuality.SYNCED,
                 device=device, asset=asset, data=values)


def cover(name: str, code_tail: int, lat: float, lon: float,
          grid: str = "320508001002003") -> Asset:
    return Asset(f"32050801060{code_tail:05d}", "0106", grid, name, lat, lon)


def position(ts_ns: int, lat: float, lon: float, speed_kmh: float = 12.0) -> Event:
    return Event(EventType.POSITION, 2, ts_ns, TimeQuality.SYNCED, device="truck-3",
                 asset=TRUCK_ASSET, data={"lat": lat, "lon": lon, "speed_kmh": speed_kmh,
                                          "course_deg": 90.0, "mode": "A"})


CATCH_ERRORS = ("window.pageErrors = [];"
                "addEventListener('error', e => pageErrors.push(String(e.message)));"
                "addEventListener('unhandledrejection', e => pageErrors.push(String(e.reason)));")


async def open_map(page: Page, port: int) -> None:
    await page.call("Page.addScriptToEvaluateOnNewDocument", source=CATCH_ERRORS)
    await page.call("Page.navigate", url=f"http://127.0.0.1:{port}/map")
    await page.wait_for("window.edgeMap !== undefined && document.readyState === 'complete'")
    await page.evaluate("window.edgeMap.ready")


async def no_page_errors(page: Page) -> None:
    assert await page.evaluate("window.pageErrors") == []


async def screenshot(page: Page, name: str) -> Path:
    await no_page_errors(page)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / name
    shot.unlink(missing_ok=True)
    await page.screenshot(shot)
    return shot


# ---- alarm to map, end to end ----------------------------------------------------------------

async def test_alarm_from_the_simulator_is_on_the_map_within_2_s(
        tmp_path: Path, broker: Mosquitto, pki: Pki) -> None:
    modbus_port = free_port()
    unit = tilt_unit()
    sim = ModbusTcpSim({80: unit}, modbus_port)
    await sim.start()
    loaded = write_config(
        tmp_path, broker_port=broker.port, pki=pki,
        buses=[{"name": "covers", "type": "modbus_tcp", "host": "127.0.0.1",
                "port": modbus_port, "timeout_s": 0.5}],
        devices=[tilt_device("manhole-1", "covers", 80)])
    store, receiver = receiver_for(loaded, tmp_path / "receiver.db")
    # a second asset in another grid, so the map has something besides the alarm
    Gateway(store).send(reading("lamp-9", cover("路灯 九号", 9, 31.3112, 120.6290,
                                                "320508001002004"), {"on": True}))
    web_port = free_port()
    runner = await serve(store, port=web_port)
    stop = asyncio.Event()
    agent = Agent(loaded, boot_delay_s=0)
    ready = asyncio.Event()
    try:
        async with asyncio.TaskGroup() as tg, browser(tmp_path) as page:
            rx = tg.create_task(run_mqtt(receiver, host="127.0.0.1", port=broker.port,
                                         tls=receiver_tls(pki), ready=ready), name="test.rx")
            await asyncio.wait_for(ready.wait(), 10)
            run = tg.create_task(agent.run(stop), name="test.agent")
            await wait_until(lambda: store.seq_count(GW)[0] >= 3, 15)
            await open_map(page, web_port)
            marker = 'document.querySelector(\'path[data-device="manhole-1"]\')'
            await page.wait_for(f"{marker} !== null", 10)
            assert await page.evaluate(f"{marker}.getAttribute('data-state')") == "ok"

            set_tilt_local(unit, 38.5)
            tilted = time.monotonic()
            await page.wait_for(f"{marker}.getAttribute('data-state') === 'alarm' && "
                                "document.querySelector('#alarm-list .alarm-item') !== null", 5)
            took_s = time.monotonic() - tilted
            print(f"tilt -> red marker and alarm list on the map: {took_s:.2f} s")
            assert took_s < 2.0, f"the alarm took {took_s:.2f} s to reach the map"
            listed = await page.evaluate(
                "document.querySelector('#alarm-list .grid-group').textContent")
            assert "cover_open" in listed
            assert "320508001002003" in listed  # listed under its grid
            assert "路灯井盖 测试" in listed
            assert await page.evaluate("document.getElementById('kpi-alarms').textContent") == "1"

            # a click on the marker opens its recent values and its case history
            await page.evaluate(f"{marker}.dispatchEvent(new MouseEvent('click', "
                                "{bubbles: true}))")
            await page.wait_for("!document.getElementById('detail').hidden && "
                                "document.querySelector('#detail-cases tbody tr.open') !== null")
            detail = await page.evaluate("document.getElementById('detail').textContent")
            assert "cover_open" in detail
            assert "manhole-1" in detail
            shot = await screenshot(page, "receiver-map-alarm.png")
            assert shot.stat().st_size > 20_000

            set_tilt_local(unit, 0.0)
            await page.wait_for(f"{marker}.getAttribute('data-state') === 'ok'", 5)
            await page.wait_for("document.querySelector('#alarm-list .alarm-item') === null")
            stop.set()
            await run
            rx.cancel()
    finally:
        stop.set()
        await runner.cleanup()
        await sim.stop()
        store.close()


# ---- playback --------------------------------------------------------------------------------

def _day_start_ns() -> int:
    """Today 08:00 local time (Chromium runs in the same time zone as the test)."""
    today = dt.datetime.now().astimezone().replace(hour=8, minute=0, second=0, microsecond=0)
    return int(today.timestamp()) * 1_000_000_000


async def test_playback_puts_the_truck_at_the_right_place_at_the_right_time(
        tmp_path: Path) -> None:
    store = ReceiverStore(tmp_path / "rx.db")
    gateway = Gateway(store)
    start_ns = _day_start_ns()
    # east along a street, a fix every 10 s for 10 min, then a 20 min outage (it reappears
    # 55 m north), then north
    fixes = [(start_ns + i * 10_000_000_000, 31.3100, 120.6280 + i * 0.0001) for i in range(60)]
    later = start_ns + 30 * 60_000_000_000
    fixes += [(later + i * 10_000_000_000, 31.3105 + i * 0.0001, 120.6339) for i in range(30)]
    # out of order, as a gateway draining its backlog would send them
    for chunk in (fixes[45:], fixes[:45]):
        gateway.send(*(position(t, lat, lon) for t, lat, lon in chunk))
    port = free_port()
    runner = await serve(store, port=port)
    try:
        async with browser(tmp_path) as page:
            await open_map(page, port)
            await page.wait_for("document.getElementById('pb-truck').options.length === 1")
            await page.evaluate("document.getElementById('pb-load').click()")
            await page.wait_for("!document.getElementById('pb-slider').disabled")
            assert await page.evaluate("window.edgeMap.playback.points.length") == 90
            # the day's route is broken at the 20 min outage, not joined by a chord
            assert await page.evaluate(
                "window.edgeMap.playback.route.getLatLngs().map(p => p.length)") == [60, 30]

            async def at(ms: int) -> tuple[float, float, float]:
                await page.evaluate(f"(() => {{const s = document.getElementById('pb-slider');"
                                    f"s.value = '{ms}'; s.dispatchEvent(new Event('input'));}})()")
                out = await page.evaluate(
                    "(() => { const m = window.edgeMap.playback.marker;"
                    " const p = window.edgeMap.map.latLngToContainerPoint(m.getLatLng());"
                    " const r = m.getElement().getBoundingClientRect();"
                    " const c = window.edgeMap.map.getContainer().getBoundingClientRect();"
                    " const d = document.getElementById('pb-readout').dataset;"
                    " return [Number(d.lat), Number(d.lon), Math.hypot("
                    "  r.left + r.width / 2 - c.left - p.x, r.top + r.height / 2 - c.top - p.y)];"
                    "})()")
                return float(out[0]), float(out[1]), float(out[2])

            start_ms = start_ns // 1_000_000
            # exactly at a fix: that fix
            lat, lon, off_px = await at(start_ms + 200_000)
            assert (lat, lon) == pytest.approx((31.3100, 120.6300), abs=1e-7)
            assert off_px < 1.5  # the drawn marker is where the data says
            # half-way between two fixes 10 s apart: half-way
            lat, lon, _ = await at(start_ms + 205_000)
            assert (lat, lon) == pytest.approx((31.3100, 120.63005), abs=1e-7)
            # in the outage: where it was last seen, not gliding across 20 minutes
            lat, lon, _ = await at(start_ms + 15 * 60_000)
            assert (lat, lon) == pytest.approx((31.3100, 120.6339), abs=1e-7)
            assert "no fixes" in await page.evaluate(
                "document.getElementById('pb-readout').textContent")
            # after the outage, on the northward leg
            lat, lon, off_px = await at(start_ms + 30 * 60_000 + 100_000)
            assert (lat, lon) == pytest.approx((31.3115, 120.6339), abs=1e-7)
            assert off_px < 1.5
            readout = await page.evaluate("document.getElementById('pb-readout').textContent")
            assert readout.startswith("08:31:40")
            # play runs the day on: at 1800 times, a tenth of a second is three minutes of track
            await at(start_ms)
            await page.evaluate("document.getElementById('pb-speed').value = '1800';"
                                "document.getElementById('pb-play').click()")
            await page.wait_for("Number(document.getElementById('pb-readout').dataset.ms) >= "
                                f"{start_ms + 180_000}", 5)
            await page.evaluate("document.getElementById('pb-play').click()")  # pause
            paused = await page.evaluate("document.getElementById('pb-readout').dataset.ms")
            await asyncio.sleep(0.3)
            assert await page.evaluate(
                "document.getElementById('pb-readout').dataset.ms") == paused
            await at(start_ms + 30 * 60_000 + 100_000)
            shot = await screenshot(page, "receiver-map-playback.png")
            assert shot.stat().st_size > 20_000
            # the live marker sits at the newest fix (sent first, but newest by time)
            live = await page.evaluate(
                "(() => { const p = document.querySelector('path[data-truck=\"truck-3\"]');"
                " return p !== null; })()")
            assert live
    finally:
        await runner.cleanup()
    vehicles = store.map_vehicles()
    assert (vehicles[0]["lat"], vehicles[0]["lon"]) == pytest.approx((31.3134, 120.6339))
    store.close()


# ---- text from gateways stays text ---------------------------------------------------------

async def test_hostile_names_are_shown_as_text_never_markup(tmp_path: Path) -> None:
    store = ReceiverStore(tmp_path / "rx.db")
    gateway = Gateway(store)
    asset = cover(HOSTILE, 1, 31.3105, 120.6302)
    gateway.send(reading("<b>dev</b>", asset, {"<script>x</script>": "<i>v</i>"}),
                 Event(EventType.ALARM, 0, time.time_ns(), TimeQuality.SYNCED,
                       device="<b>dev</b>", asset=asset,
                       alarm=Alarm("cover_open<svg onload=alert(1)>", "raised", "a:1", 1,
                                   38.5, 15.0, "deg")))
    port = free_port()
    runner = await serve(store, port=port)
    try:
        async with browser(tmp_path) as page:
            await open_map(page, port)
            await page.wait_for("document.querySelector('#alarm-list .alarm-item') !== null")
            await page.evaluate("document.querySelector('#alarm-list .alarm-item').click()")
            await page.wait_for("document.querySelector('#detail-values tbody tr') !== null")
            await no_page_errors(page)
            found = await page.evaluate(
                "[document.title, document.querySelectorAll('#side img, #side b:not(.x) b,"
                " #side script, #side svg, #side i, .leaflet-tooltip img').length,"
                " document.getElementById('alarm-list').textContent,"
                " document.getElementById('detail').textContent,"
                " [...document.querySelectorAll('.leaflet-tooltip')].map(t => t.textContent)]")
    finally:
        await runner.cleanup()
        store.close()
    title, injected, alarms, detail, tooltips = found
    assert title == "edge · city assets map"
    assert injected == 0
    assert HOSTILE in alarms
    assert "cover_open<svg onload=alert(1)>" in alarms
    assert "<b>dev</b>" in detail
    assert "<i>v</i>" in detail
    assert HOSTILE in tooltips


async def test_the_map_page_allows_no_inline_script_and_only_its_tile_server(
        tmp_path: Path) -> None:
    store = ReceiverStore(tmp_path / "rx.db")
    port = free_port()
    tiles = MapConfig(tiles_url="https://tiles.city.example:8443/{z}/{x}/{y}.png",
                      tiles_attribution="<b>city</b> tiles")
    runner = await serve(store, port=port, map_config=tiles)
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/map") as resp:
                csp = resp.headers["Content-Security-Policy"]
                page = await resp.text()
            async with http.get(f"http://127.0.0.1:{port}/static/leaflet/leaflet.js") as resp:
                assert resp.status == 200
                assert "Leaflet 1.9.4" in (await resp.text())[:200]
            async with http.get(f"http://127.0.0.1:{port}/static/leaflet/LICENSE") as resp:
                assert "BSD 2-Clause" in await resp.text()
            async with http.get(f"http://127.0.0.1:{port}/static/map.html") as resp:
                assert resp.headers["Content-Security-Policy"] == csp  # same page, same rules
            for path in ("/static/../store.py", "/static/%2e%2e/store.py", "/static/"):
                async with http.get(f"http://127.0.0.1:{port}{path}") as resp:
                    assert resp.status in {403, 404}, path
    finally:
        await runner.cleanup()
        store.close()
    assert "script-src 'self';" in csp
    assert "img-src 'self' data: https://tiles.city.example:8443;" in csp
    assert "<script>" not in page  # every script is a file under /static
    assert "cdn" not in page.lower()
    with pytest.raises(ValueError, match="tiles_url"):
        MapConfig(tiles_url="javascript:alert(1)//{z}{x}{y}")
    with pytest.raises(ValueError, match="tiles_url"):
        MapConfig(tiles_url="https://tiles.example/no-placeholders.png")


async def test_tiles_from_the_configured_server_else_an_offline_grid(tmp_path: Path) -> None:
    store = ReceiverStore(tmp_path / "rx.db")
    Gateway(store).send(reading("manhole-1", cover("井盖 一号", 1, 31.3105, 120.6302), {}))
    config = tmp_path / "map.json"
    config.write_text(json.dumps({"tiles_url": "http://127.0.0.1:9/{z}/{x}/{y}.png",
                                  "tiles_attribution": "<b>city</b>"}))
    port = free_port()
    runner = await serve(store, port=port, map_config=load_map_config(config))
    offline_port = free_port()
    offline = await serve(store, port=offline_port)  # no tiles configured
    try:
        async with browser(tmp_path) as page:
            await open_map(page, port)
            await page.wait_for("document.querySelector('img.leaflet-tile') !== null")
            src = await page.evaluate("document.querySelector('img.leaflet-tile').src")
            assert src.startswith("http://127.0.0.1:9/")
            assert await page.evaluate(
                "document.querySelector('.leaflet-control-attribution').textContent"
                ".includes('<b>city</b>')")
            await open_map(page, offline_port)
            await page.wait_for("document.querySelector('.graticule-label') !== null")
            await page.wait_for("document.querySelector('.grid-label') !== null")
            assert await page.evaluate("document.querySelector('img.leaflet-tile')") is None
            assert "grid 320508001002003" in await page.evaluate(
                "document.querySelector('.grid-label').textContent")
            await screenshot(page, "receiver-map-offline.png")
    finally:
        await offline.cleanup()
        await runner.cleanup()
        store.close()


# ---- work coverage ---------------------------------------------------------------------------

def coverage_event(ts_ns: int) -> Event:
    """A ``work_coverage`` report as edge.model.WireWorkCoverage describes it."""
    line = {"id": "ganjiang-e", "shape": "line", "length_m": 200.0, "covered_pct": 60.0,
            "unknown_pct": 10.0, "missed_pct": 30.0, "first_pass": None, "last_pass": None,
            "covered": [[0.0, 120.0]], "unknown": [[120.0, 140.0]], "missed": [[140.0, 200.0]],
            "truncated": False}
    area = {"id": "plaza-1", "shape": "area", "cells": 6.0, "covered_pct": 50.0,
            "unknown_pct": 0.0, "missed_pct": 50.0, "first_pass": None, "last_pass": None,
            "covered": [[0.0, 3.0]], "unknown": [], "missed": [[3.0, 6.0]], "truncated": False,
            "grid": {"origin_lat": 31.3120, "origin_lon": 120.6290, "cell_m": 5.0, "cols": 3,
                     "rows": 2}}
    data = {"shift": {"start": "2026-12-01T22:00:00.000Z", "end": "2026-12-02T06:00:00.000Z",
                      "state": "ended"}, "clock": "trusted", "min_speed_kmh": 2.0,
            "max_speed_kmh": 20.0, "segment_m": 5.0, "max_gap_s": 10.0, "fixes": 100,
            "working_fixes": 80, "gaps": 1, "gap_s": 20.0, "roads": [line, area]}
    WireWorkCoverage.model_validate(data)  # the shape the gateway sends (edge/model.py)
    return Event(EventType.WORK_COVERAGE, 1, ts_ns, TimeQuality.SYNCED, device="truck-3",
                 asset=TRUCK_ASSET, data=data)


async def test_work_coverage_colours_covered_and_missed_stretches(tmp_path: Path) -> None:
    store = ReceiverStore(tmp_path / "rx.db")
    gateway = Gateway(store)
    gateway.send(position(time.time_ns(), 31.3100, 120.6300))
    gateway.send(coverage_event(time.time_ns()))
    # an L: east to a junction, then north, 200 m in all by the gateway's own measure
    k_m = EARTH_M * math.pi / 180  # metres per degree of latitude
    east_m = distance_m(31.3100, 120.6280, 31.3100, 120.6290)
    corner, end = [31.3100, 120.6290], [31.3100 + (200 - east_m) / k_m, 120.6290]
    roads = {"ganjiang-e": {"line": [[31.3100, 120.6280], corner, end]}}
    port = free_port()
    runner = await serve(store, port=port, map_config=MapConfig(roads=roads))
    try:
        async with browser(tmp_path) as page:
            await open_map(page, port)
            await page.wait_for("document.querySelector('#coverage-list .road') !== null")
            drawn = await page.evaluate(
                "(() => { const out = {line: {}, cells: {}};"
                " window.edgeMap.map.eachLayer(l => {"
                "  if (l instanceof L.Rectangle && l.options.stroke === false) {"
                "   out.cells[l.options.fillColor] = (out.cells[l.options.fillColor] || 0) + 1;"
                "  } else if (l instanceof L.Polyline && l.options.weight === 7) {"
                "   out.line[l.options.color] = l.getLatLngs().map(p => [p.lat, p.lng]); } });"
                " return out; })()")
            bars = await page.evaluate(
                "[...document.querySelectorAll('#coverage-list .road')].map(r =>"
                " [r.dataset.road, r.textContent,"
                "  [...r.querySelectorAll('.bar span')].map(s => [s.className, s.style.width])])")
            await screenshot(page, "receiver-map-coverage.png")
    finally:
        await runner.cleanup()
        store.close()
    green, red, grey = "#2ecc71", "#ff3b30", "#59636f"
    # covered to 120 m (round the corner), unknown to 140 m, missed to the end
    at_120 = [31.3100 + (120 - east_m) / k_m, 120.6290]
    at_140 = [31.3100 + (140 - east_m) / k_m, 120.6290]
    line = drawn["line"]
    assert set(line) == {green, grey, red}
    assert line[green] == [pytest.approx([31.3100, 120.6280]), pytest.approx(corner),
                           pytest.approx(at_120, abs=1e-8)]
    assert line[grey] == [pytest.approx(at_120, abs=1e-8), pytest.approx(at_140, abs=1e-8)]
    assert line[red] == [pytest.approx(at_140, abs=1e-8), pytest.approx(end, abs=1e-8)]
    assert drawn["cells"] == {green: 3, red: 3}
    assert bars[0][0] == "ganjiang-e"
    assert "60.0 % swept" in bars[0][1]
    assert "30.0 % missed" in bars[0][1]
    assert [c for c, _ in bars[0][2]] == ["cov-covered", "cov-unknown", "cov-missed"]
    assert [w for _, w in bars[0][2]] == ["60%", "10%", "30%"]


def read_result(ts_ns: int, covered_to_m: float) -> Event:
    """An executed ``device.read`` of the truck during its shift (edge/drivers/gps.py probe)."""
    report = coverage_event(ts_ns).data
    report = {**report, "shift": {**report["shift"], "state": "in_progress"},
              "roads": [{**report["roads"][0], "covered_pct": covered_to_m / 2,
                         "unknown_pct": 0.0, "missed_pct": 0.0,
                         "covered": [[0.0, covered_to_m]], "unknown": [], "missed": []}]}
    return Event(EventType.COMMAND_RESULT, 0, ts_ns, TimeQuality.SYNCED, device="truck-3",
                 data={"cmd_id": str(uuid7()), "action": "device.read", "status": "executed",
                       "reason": None, "detail": {"values": {"sentences": 3,
                                                             "work_coverage": report}}})


async def test_coverage_read_during_the_shift_is_on_the_map_marked_in_progress(
        tmp_path: Path) -> None:
    # issue 18 re-test #7: a device.read's running coverage did not appear on the map
    store = ReceiverStore(tmp_path / "rx.db")
    gateway = Gateway(store)
    gateway.send(position(time.time_ns(), 31.3100, 120.6300))
    gateway.send(coverage_event(time.time_ns()))  # last night's shift, ended
    gateway.send(read_result(time.time_ns(), 80.0))
    reports = store.map_work_coverage()
    assert len(reports) == 1 and reports[0]["from_read"] is True
    assert reports[0]["data"]["shift"]["state"] == "in_progress"
    roads = {"ganjiang-e": {"line": [[31.3100, 120.6280], [31.3100, 120.6301]]}}
    port = free_port()
    runner = await serve(store, port=port, map_config=MapConfig(roads=roads))
    try:
        async with browser(tmp_path) as page:
            await open_map(page, port)
            await page.wait_for("document.querySelector('#coverage-list .road') !== null")
            shown = await page.evaluate(
                "(() => { const c = document.querySelector('#coverage-list .truck-cov');"
                " const dashed = []; window.edgeMap.map.eachLayer(l => {"
                "  if (l instanceof L.Polyline && l.options.weight === 7)"
                "   dashed.push(l.options.dashArray); });"
                " return [c.className, c.dataset.state, c.textContent, dashed]; })()")
            await no_page_errors(page)
            # the shift's own report arrives: it replaces the reading
            gateway.send(coverage_event(time.time_ns()))
            await page.wait_for("document.querySelector('#coverage-list .truck-cov')"
                                ".dataset.state === 'ended'", 5)
    finally:
        await runner.cleanup()
        store.close()
    klass, state, text, dashed = shown
    assert "in-progress" in klass and state == "in_progress"
    assert "in progress" in text and "40.0 % swept" in text
    assert dashed == ["10 5"]


# ---- the API is bounded ----------------------------------------------------------------------

async def test_map_api_answers_are_bounded_and_bad_arguments_are_400(tmp_path: Path) -> None:
    store = ReceiverStore(tmp_path / "rx.db")
    assert map_state(store)["assets"] == []
    typed: MapStore = store  # mypy: the SQLite store is a MapStore (pg_store.py must be too)
    del typed
    gateway = Gateway(store)
    asset = cover("井盖", 1, 31.31, 120.63)
    now = time.time_ns()
    gateway.send(*(reading("manhole-1", asset, {"tilt_deg": float(i)}, now + i)
                   for i in range(MAP_MAX_VALUES + 20)))
    # positions over two days: one request gets at most one day of them
    day_ns = 86_400 * 1_000_000_000
    gateway.send(*(position(now - day_ns + i * 3_600_000_000_000, 31.31, 120.63)
                   for i in range(48)))
    # positions without a usable place or time are kept as events, not drawn (the store's
    # own check: the receiver's schema may refuse them first)
    unusable: list[dict[str, Any]] = [{"lat": "31.3", "lon": 120.6}, {"lat": 95.0, "lon": 1.0},
                                      {"lat": True, "lon": 120.6}, {"lon": 120.6}]
    with store.transaction():
        assert store.add_events(GW, [
            json.loads(encode_event(Event(EventType.POSITION, 2, now, TimeQuality.SYNCED,
                                          device="truck-3", data=data), 10_000 + i))
            for i, data in enumerate(unusable)]) == [True] * 4
    port = free_port()
    runner = await serve(store, port=port)
    base = f"http://127.0.0.1:{port}"
    start_ms = (now - day_ns) // 1_000_000
    try:
        async with aiohttp.ClientSession() as http:
            async def get(path: str, **query: str) -> tuple[int, Any]:
                async with http.get(base + path, params=query) as resp:
                    body = await resp.json() if resp.status == 200 else await resp.text()
                    return resp.status, body

            status, body = await get("/api/map/device", gw=GW, device="manhole-1",
                                     values="100000")
            assert status == 200
            assert len(body["values"]) == MAP_MAX_VALUES
            assert body["values"][0]["data"]["tilt_deg"] == MAP_MAX_VALUES + 19.0  # newest
            status, body = await get("/api/map/track", gw=GW, device="truck-3",
                                     start_ms=str(start_ms), end_ms=str(start_ms + 86_400_000))
            assert status == 200
            assert len(body["points"]) == 24  # one a hour, one day
            for query, why in (
                    ({"start_ms": str(start_ms), "end_ms": str(start_ms + 86_400_001)}, "day"),
                    ({"start_ms": "10", "end_ms": "10"}, "empty"),
                    ({"start_ms": "x", "end_ms": "10"}, "not a number"),
                    ({"start_ms": "1e30", "end_ms": "10"}, "not an integer"),
                    ({"start_ms": str(10**30), "end_ms": str(10**30 + 1)}, "too large"),
                    ({"end_ms": "10"}, "missing")):
                status, _ = await get("/api/map/track", gw=GW, device="truck-3", **query)
                assert status == 400, why
            status, _ = await get("/api/map/device", gw=GW, device="x" * 300)
            assert status == 400
            status, _ = await get("/api/map/device", gw=GW)
            assert status == 400
            status, body = await get("/api/map")
            assert status == 200
            assert [a["device"] for a in body["assets"]] == ["manhole-1"]
            assert [v["device"] for v in body["vehicles"]] == ["truck-3"]
            # polled every second: an unchanged state is a 304, a new event a new state
            async with http.get(base + "/api/map") as resp:
                tag = resp.headers["ETag"]
            async with http.get(base + "/api/map", headers={"If-None-Match": tag}) as resp:
                assert resp.status == 304
            gateway.send(reading("manhole-1", asset, {"tilt_deg": 99.0}))
            async with http.get(base + "/api/map", headers={"If-None-Match": tag}) as resp:
                assert resp.status == 200
                assert resp.headers["ETag"] != tag
    finally:
        await runner.cleanup()
        store.close()


@pytest.mark.parametrize("doc", [
    '{"tiles": "https://t.example/{z}/{x}/{y}.png"}',  # a typo is an error, not a silent default
    '{"tiles_url": 42}',
    '{"tiles_url": "ftp://t.example/{z}/{x}/{y}.png"}',
    '{"roads": {"r1": {"line": [[31.3, NaN], [31.3, 120.6]]}}}',
    '{"roads": {"r1": {"line": [[31.3]]}}}',
    '{"grids": {"g": [[31.3, 120.6, 5]]}}',
    "[]",
    "{",
])
def test_a_bad_map_config_file_is_refused(tmp_path: Path, doc: str) -> None:
    path = tmp_path / "map.json"
    path.write_text(doc)
    with pytest.raises(ValueError):
        load_map_config(path)


def test_a_missing_map_config_is_the_offline_default(tmp_path: Path) -> None:
    assert load_map_config(tmp_path / "none.json") == MapConfig()


async def test_asset_state_is_alarm_then_offline_then_degraded_then_ok(tmp_path: Path) -> None:
    store = ReceiverStore(tmp_path / "rx.db")
    gateway = Gateway(store)
    names = ("ok-1", "degraded-1", "offline-1", "alarm-1")
    for i, name in enumerate(names):
        gateway.send(reading(name, cover(name, i, 31.31 + i * 1e-4, 120.63), {"tilt_deg": 1.0}))

    def state_of(name: str, detail: str) -> Event:
        return Event(EventType.STATE, 2, time.time_ns(), TimeQuality.SYNCED, device=name,
                     asset=cover(name, names.index(name), 31.31, 120.63),
                     data={"state": detail, "detail": "test"})

    gateway.send(state_of("degraded-1", "degraded"), state_of("offline-1", "offline"),
                 state_of("alarm-1", "offline"),
                 Event(EventType.ALARM, 0, time.time_ns(), TimeQuality.SYNCED, device="alarm-1",
                       asset=cover("alarm-1", 3, 31.31, 120.63),
                       alarm=Alarm("comm_lost", "raised", "alarm-1:comm_lost:1", 1)))
    port = free_port()
    runner = await serve(store, port=port)
    try:
        async with aiohttp.ClientSession() as http:
            async def states() -> dict[str, str]:
                async with http.get(f"http://127.0.0.1:{port}/api/map") as resp:
                    return {a["device"]: a["state"] for a in (await resp.json())["assets"]}

            assert await states() == {"ok-1": "ok", "degraded-1": "degraded",
                                      "offline-1": "offline", "alarm-1": "alarm"}
            # the gateway's last will: every asset behind it is offline, an alarm stays an alarm
            gateway.receiver.handle(f"edge/v1/{GW}/state", b'{"online": false}')
            assert await states() == {"ok-1": "offline", "degraded-1": "offline",
                                      "offline-1": "offline", "alarm-1": "alarm"}
    finally:
        await runner.cleanup()
        store.close()


async def test_a_truck_moves_live_and_its_track_grows(tmp_path: Path) -> None:
    store = ReceiverStore(tmp_path / "rx.db")
    gateway = Gateway(store)
    now = time.time_ns()
    gateway.send(*(position(now - (30 - i) * 10_000_000_000, 31.3100, 120.6280 + i * 1e-4)
                   for i in range(30)))
    port = free_port()
    runner = await serve(store, port=port)
    truck = "document.querySelector('path[data-truck=\"truck-3\"]')"
    try:
        async with browser(tmp_path) as page:
            await open_map(page, port)
            await page.wait_for(f"{truck} !== null")
            tail = ("(() => { let n = 0; window.edgeMap.map.eachLayer(l => {"
                    " if (l instanceof L.Polyline && l.options.color === '#3fa9ff')"
                    "  n = l.getLatLngs().flat().length; }); return n; })()")
            assert await page.evaluate(tail) == 30  # the last 2 h, fetched at load
            gateway.send(position(time.time_ns(), 31.3101, 120.6310))
            moved = time.monotonic()
            await page.wait_for(
                "(() => { const t = window.edgeMap.map; let at = null; t.eachLayer(l => {"
                " if (l instanceof L.CircleMarker && l.getElement() &&"
                "  l.getElement().getAttribute('data-truck') === 'truck-3') at = l.getLatLng();"
                " }); return at !== null && Math.abs(at.lng - 120.6310) < 1e-9; })()", 5)
            assert time.monotonic() - moved < 2.0
            assert await page.evaluate(tail) == 31
            await no_page_errors(page)
    finally:
        await runner.cleanup()
        store.close()


LIVE_PARTS = ("(() => { let parts = null; window.edgeMap.map.eachLayer(l => {"
              " if (l instanceof L.Polyline && l.options.color === '#3fa9ff') {"
              "  const ll = l.getLatLngs();"
              "  parts = (ll.length && Array.isArray(ll[0]) ? ll : [ll]).map(p => p.length); } });"
              " return parts; })()")


async def test_the_live_track_is_broken_across_an_outage(tmp_path: Path) -> None:
    # issue 18 re-test #6: a demo restart drew a straight chord across the city
    store = ReceiverStore(tmp_path / "rx.db")
    gateway = Gateway(store)
    now = time.time_ns()
    s_ns = 1_000_000_000
    before = [position(now - 20 * 60 * s_ns + i * 10 * s_ns, 31.3100, 120.6280 + i * 1e-4)
              for i in range(10)]
    after = [position(now - 5 * 60 * s_ns + i * 10 * s_ns, 31.3150 + i * 1e-4, 120.6400)
             for i in range(10)]
    gateway.send(*after, *before)  # a backlog arrives in any order
    port = free_port()
    runner = await serve(store, port=port)
    try:
        async with browser(tmp_path) as page:
            await open_map(page, port)
            await page.wait_for("document.querySelector('path[data-truck=\"truck-3\"]') !== null")
            assert await page.evaluate(LIVE_PARTS) == [10, 10]
            # live: 210 s after the last fix (> the 120 s playback hold) is a new part
            gateway.send(position(time.time_ns(), 31.3200, 120.6500))
            await page.wait_for(f"JSON.stringify({LIVE_PARTS}) === '[10,10,1]'", 5)
            # the next fix 10 s on joins it
            gateway.send(position(time.time_ns() + 10 * s_ns, 31.3201, 120.6500))
            await page.wait_for(f"JSON.stringify({LIVE_PARTS}) === '[10,10,2]'", 5)
            await no_page_errors(page)
    finally:
        await runner.cleanup()
        store.close()


async def test_recent_values_are_the_last_changes_of_a_fast_polled_device(
        tmp_path: Path) -> None:
    # issue 18 re-test #9: 12 identical readings of a cover polled 6 times a second were 2 s
    store = ReceiverStore(tmp_path / "rx.db")
    gateway = Gateway(store)
    asset = cover("井盖 快读", 7, 31.3100, 120.6300)
    t0 = time.time_ns() - 60_000_000_000
    values = [1.0, 2.0, 3.0, *[4.0] * 30, 5.0, *[6.0] * 40]
    for i, v in enumerate(values):  # one batch each: received in this order
        gateway.send(reading("cover-7", asset, {"tilt_deg": v}, t0 + i * 150_000_000))
    port = free_port()
    runner = await serve(store, port=port)
    try:
        async with browser(tmp_path) as page:
            await open_map(page, port)
            marker = "document.querySelector('path[data-device=\"cover-7\"]')"
            await page.wait_for(f"{marker} !== null")
            await page.evaluate(f"{marker}.dispatchEvent(new MouseEvent('click', {{bubbles: true}}))")
            await page.wait_for("document.querySelector('#detail-values tbody tr') !== null")
            rows = await page.evaluate(
                "[...document.querySelectorAll('#detail-values tbody tr')].map(r =>"
                " [Number(r.dataset.count), r.cells[2].textContent])")
            await no_page_errors(page)
    finally:
        await runner.cleanup()
        store.close()
    assert [n for n, _ in rows] == [40, 1, 30, 1, 1, 1]
    assert [text.split(" \u00d7")[0] for _, text in rows] == [
        "tilt_deg 6", "tilt_deg 5", "tilt_deg 4", "tilt_deg 3", "tilt_deg 2", "tilt_deg 1"]
    assert "\u00d740 since" in rows[0][1]


# ---- the same map on the PostgreSQL store ----------------------------------------------------

async def test_the_map_runs_on_the_postgresql_store(tmp_path: Path,
                                                   pg_dsn: str) -> None:  # noqa: F811
    from hil.receiver.pg_store import PgReceiverStore

    store = PgReceiverStore(pg_dsn)
    typed: WebStore = store  # mypy: the whole web app takes the PostgreSQL store
    del typed
    gateway = Gateway(store)
    now = time.time_ns()
    asset = cover("井盖 一号", 1, 31.3105, 120.6302)
    gateway.send(reading("manhole-1", asset, {"tilt_deg": 1.0}, now - 1_000_000_000),
                 reading("manhole-2", cover("井盖 二号", 2, 31.3107, 120.6311), {}, now),
                 *(position(now - (20 - i) * 10_000_000_000, 31.3100, 120.6280 + i * 1e-4)
                   for i in range(20)))
    port = free_port()
    runner = await serve(store, port=port)
    marker = 'document.querySelector(\'path[data-device="manhole-1"]\')'
    try:
        async with browser(tmp_path) as page:
            await open_map(page, port)
            await page.wait_for(f"{marker} !== null && "
                                "document.querySelector('path[data-truck=\"truck-3\"]') !== null")
            gateway.send(Event(EventType.ALARM, 0, time.time_ns(), TimeQuality.SYNCED,
                               device="manhole-1", asset=asset,
                               alarm=Alarm("cover_open", "raised", "mh1:cover_open:1", 1, 38.5,
                                           15.0, "deg")))
            await page.wait_for(f"{marker}.getAttribute('data-state') === 'alarm'", 3)
            await page.evaluate(f"{marker}.dispatchEvent(new MouseEvent('click', "
                                "{bubbles: true}))")
            await page.wait_for("document.querySelector('#detail-cases tbody tr.open') !== null")
            await page.evaluate("document.getElementById('pb-load').click()")
            await page.wait_for("window.edgeMap.playback.points.length === 20")
            await no_page_errors(page)
    finally:
        await runner.cleanup()
        store.close()


async def test_an_alarm_storm_and_a_huge_coverage_report_stay_bounded(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("hil.receiver.web.MAP_MAX_OPEN_CASES", 40)
    store = ReceiverStore(tmp_path / "rx.db")
    gateway = Gateway(store)
    now = time.time_ns()
    storm = []
    for i in range(50):  # a district loses its LoRa gateway: 50 covers comm_lost at once
        asset = cover(f"井盖 {i}", i, 31.3100 + i * 1e-4, 120.6300)
        storm += [reading(f"mh-{i}", asset, {}, now),
                  Event(EventType.ALARM, 1, now, TimeQuality.SYNCED, device=f"mh-{i}",
                        asset=asset, alarm=Alarm("comm_lost", "raised", f"mh-{i}:comm_lost", 1))]
    gateway.send(*storm)
    huge = coverage_event(now)
    road = huge.data["roads"][1]
    road.update(cells=1e9, covered=[[0.0, 5e8]], missed=[[5e8, 1e9]])  # a hostile report
    road["grid"] = {**road["grid"], "cols": 30_000, "rows": 30_000}
    gateway.send(huge)
    port = free_port()
    runner = await serve(store, port=port)
    try:
        async with browser(tmp_path) as page:
            await open_map(page, port)
            await page.wait_for("document.querySelector('#coverage-list .road') !== null")
            found = await page.evaluate(
                "(() => { let cells = 0; window.edgeMap.map.eachLayer(l => {"
                " if (l instanceof L.Rectangle && l.options.stroke === false) cells++; });"
                " return [cells, document.querySelectorAll('#alarm-list .alarm-item').length,"
                " document.getElementById('alarm-list').textContent,"
                " document.getElementById('kpi-alarms').textContent,"
                " document.querySelectorAll('path[data-state=\"alarm\"]').length]; })()")
            await no_page_errors(page)
    finally:
        await runner.cleanup()
        store.close()
    cells, listed, text, kpi, red = found
    assert cells == 4000  # MAX_CELLS: the rest of a billion is not drawn
    assert listed == 30  # LIST_PER_GRID of the 40 sent
    assert "+ 10 more in this grid" in text
    assert kpi == "50"  # the count is of all open cases
    assert red == 50  # and every one of them colours its asset


def test_a_coverage_read_is_in_progress_on_the_postgresql_store_too(
        pg_dsn: str) -> None:  # noqa: F811
    """Issue 18 re-test #7 on PostgreSQL: the running shift's read counts when newer."""
    from hil.receiver.pg_store import PgReceiverStore

    store = PgReceiverStore(pg_dsn)
    try:
        gateway = Gateway(store)
        gateway.send(coverage_event(time.time_ns()))  # the last shift, ended
        gateway.send(read_result(time.time_ns(), 80.0))
        reports = store.map_work_coverage()
        assert len(reports) == 1 and reports[0]["from_read"] is True
        assert reports[0]["data"]["shift"]["state"] == "in_progress"
        gateway.send(coverage_event(time.time_ns()))  # the shift's own report replaces it
        assert store.map_work_coverage()[0].get("from_read") is not True
    finally:
        store.close()
