"""The receiver's web page and JSON API (aiohttp), bound to loopback.

``/`` shows gateways (online/offline, outbox depth), open cases and recent events and refreshes
itself every 2 s; ``/api/state`` is the same as JSON; ``/open311/v2/requests.json`` exports
open cases as Open311 GeoReport v2 service requests — off unless enabled, because coordinates
of underground utilities may be sensitive (design/devices.md §1.6, reliability.md S13).
"""

from __future__ import annotations

import html
from typing import Any

from aiohttp import web

from hil.receiver.store import ReceiverStore

STORE_KEY: web.AppKey[ReceiverStore] = web.AppKey("store", ReceiverStore)
OPEN311_KEY: web.AppKey[bool] = web.AppKey("open311", bool)

PAGE = """<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8"><title>edge reference receiver</title>
<style>
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.3em} h2{font-size:1.1em;margin-top:1.2em}
table{border-collapse:collapse;min-width:40em} td,th{border-bottom:1px solid #ddd;padding:.3em .6em;text-align:left}
.online{color:#11772d;font-weight:bold} .offline{color:#b00020;font-weight:bold}
.alarm{background:#fff0f0} #updated{color:#888;font-size:.85em}
</style></head><body>
<h1>edge reference receiver <span id="updated"></span></h1>
<h2>Gateways</h2><table id="gateways"><thead><tr><th>gateway</th><th>state</th>
<th>outbox depth</th><th>version</th></tr></thead><tbody></tbody></table>
<h2>Open cases</h2><table id="cases"><thead><tr><th>#</th><th>alarm</th><th>asset</th>
<th>value</th><th>opened</th><th>alarm_id</th></tr></thead><tbody></tbody></table>
<h2>Recent events</h2><table id="events"><thead><tr><th>seq</th><th>type</th><th>device</th>
<th>ts</th><th>detail</th></tr></thead><tbody></tbody></table>
<script>
function esc(s){return String(s??"").replace(/[&<>"]/g,c=>({"&":"&amp;","<":"&lt;",">":"&gt;",'"':"&quot;"}[c]))}
function rows(id, list, f){document.querySelector("#"+id+" tbody").innerHTML=list.map(f).join("")}
async function refresh(){
  try{
    const s = await (await fetch("/api/state")).json();
    rows("gateways", s.gateways, g=>`<tr><td>${esc(g.gw)}</td><td class="${g.online?"online":"offline"}">${g.online?"online":"offline"}</td><td>${esc((g.state.outbox||{}).depth)}</td><td>${esc(g.state.version)}</td></tr>`);
    rows("cases", s.open_cases, c=>`<tr class="alarm"><td>${c.case_no}</td><td>${esc(c.kind)}</td><td>${esc(c.asset_name)} (${esc(c.asset_code)})</td><td>${esc(c.value)}</td><td>${esc(c.opened_ts)}</td><td>${esc(c.alarm_id)}</td></tr>`);
    rows("events", s.recent_events, e=>`<tr class="${e.type=="alarm"?"alarm":""}"><td>${e.seq}</td><td>${esc(e.type)}</td><td>${esc(e.device)}</td><td>${esc(e.ts)}</td><td>${esc(e.alarm?e.alarm.kind+" "+e.alarm.state:JSON.stringify(e.data).slice(0,80))}</td></tr>`);
    document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
  }catch(err){document.getElementById("updated").textContent = "offline: " + err}
}
refresh(); setInterval(refresh, 2000);
</script></body></html>"""


def state(store: ReceiverStore, *, events: int = 30) -> dict[str, Any]:
    """Return what the page shows."""
    gateways = store.gateways()
    return {
        "gateways": gateways,
        "open_cases": store.cases("open"),
        "recent_events": store.events(events),
        "counters": store.counters(),
        "seq_gaps": {g["gw"]: store.seq_gaps(g["gw"]) for g in gateways},
    }


def open311(store: ReceiverStore) -> list[dict[str, Any]]:
    """Return open cases as GeoReport v2 service requests (devices.md §1.6 mapping)."""
    out = []
    for case in store.cases("open"):
        out.append({
            "service_request_id": str(case["case_no"]),
            "status": "open",
            "service_code": case["event_class"] or case["class"],
            "description": html.escape(f"{case['kind']} value {case['value']}")[:4000],
            "requested_datetime": case["opened_ts"],
            "lat": case["lat"], "long": case["lon"],
            "attribute": {"asset_code": case["asset_code"], "alarm_id": case["alarm_id"]},
        })
    return out


async def _page(_request: web.Request) -> web.Response:
    return web.Response(text=PAGE, content_type="text/html")


async def _state(request: web.Request) -> web.Response:
    return web.json_response(state(request.app[STORE_KEY]))


async def _cases(request: web.Request) -> web.Response:
    wanted = request.query.get("state")
    return web.json_response(request.app[STORE_KEY].cases(wanted))


async def _open311(request: web.Request) -> web.Response:
    if not request.app[OPEN311_KEY]:
        raise web.HTTPNotFound(text="Open311 export is off (--open311 to enable)")
    return web.json_response(open311(request.app[STORE_KEY]))


def make_app(store: ReceiverStore, *, open311_enabled: bool = False) -> web.Application:
    """Return the aiohttp application."""
    app = web.Application()
    app[STORE_KEY] = store
    app[OPEN311_KEY] = open311_enabled
    app.router.add_get("/", _page)
    app.router.add_get("/api/state", _state)
    app.router.add_get("/api/cases", _cases)
    app.router.add_get("/open311/v2/requests.json", _open311)
    return app


async def serve(store: ReceiverStore, *, port: int, host: str = "127.0.0.1",
                open311_enabled: bool = False) -> web.AppRunner:
    """Start serving; return the runner (``await runner.cleanup()`` stops it)."""
    runner = web.AppRunner(make_app(store, open311_enabled=open311_enabled), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
