// The operators' map (hil/receiver/web.py /map). Every text that comes from a gateway or the
// store is set through textContent or createTextNode, never innerHTML: asset names, devices and
// grid codes are what a gateway sent (review 19 #4); the page's CSP also forbids inline script.
"use strict";

const POLL_MS = 1000;            // alarm to map within 2 s: the agent's part is < 1 s
const LIVE_TRACK_MS = 2 * 3600e3; // a truck's live tail
const LIVE_TRACK_MAX = 5000;
const HOLD_GAP_MS = 120e3;       // playback: further apart than this, hold, do not glide
const MAX_CELLS = 4000;          // area coverage cells drawn per report
const LIST_PER_GRID = 30;        // alarms listed per grid (the rest are counted)
const DETAIL_CHANGES = 12;       // "Recent values": this many changes of a device
const DETAIL_FETCH = 100;        // events read to find them (store.py MAP_MAX_VALUES)
const COLOURS = {ok: "#2ecc71", alarm: "#ff3b30", offline: "#8a94a3", degraded: "#e6c229", truck: "#3fa9ff",
  play: "#ffb020", covered: "#2ecc71", missed: "#ff3b30", unknown: "#59636f"};
const EARTH_M = 6371000;
const CLEAR_OF_LEGEND = {paddingTopLeft: [60, 60], paddingBottomRight: [220, 60]};          // edge/drivers/geo.py, so chainage matches the gateway's

const $ = (id) => document.getElementById(id);

// el("td", {class: "x"}, "text", child): children are nodes or text, attributes are properties
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else if (key.startsWith("data-")) node.setAttribute(key, String(value));
    else node[key] = value;
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child ?? "")));
  }
  return node;
}

function fill(tbody, rows) { tbody.replaceChildren(...rows); }
function clock(ms) { return new Date(ms).toLocaleTimeString("en-GB", {hour12: false}); }
function two(n) { return String(n).padStart(2, "0"); }
function stamp(ts) {  // "12-02 08:31:40" local time: operators read the time of day
  const ms = Date.parse(ts);
  if (!Number.isFinite(ms)) return String(ts ?? "");
  const d = new Date(ms);
  return `${two(d.getMonth() + 1)}-${two(d.getDate())} ${clock(ms)}`;
}
function finite(x) { return typeof x === "number" && Number.isFinite(x); }
function hasPlace(o) { return finite(o.lat) && finite(o.lon) && Math.abs(o.lat) <= 90 && Math.abs(o.lon) <= 180; }
function keyOf(o) { return JSON.stringify([o.gw, o.device]); }
function summary(event) {
  if (event.alarm) return `${event.alarm.kind} ${event.alarm.state} ${event.alarm.value ?? ""}`;
  const data = event.data || {};
  const show = (v) => typeof v === "number" ? String(Math.round(v * 1000) / 1000)
    : typeof v === "object" ? JSON.stringify(v) : String(v);
  return Object.entries(data).slice(0, 6).map(([k, v]) => `${k} ${show(v)}`).join(" · ")
    .slice(0, 120);
}

// ---- the map and what it draws without tiles ------------------------------------------------

const map = L.map("map", {zoomControl: false, attributionControl: true, worldCopyJump: false});
L.control.zoom({position: "topright"}).addTo(map);
// the coordinate grid and grid outlines stay under assets and tracks whenever they are redrawn
map.createPane("furniture").style.zIndex = "350";
map.attributionControl.setPrefix("Leaflet");
const layers = {
  graticule: L.layerGroup().addTo(map), grids: L.layerGroup().addTo(map),
  coverage: L.layerGroup().addTo(map), tracks: L.layerGroup().addTo(map),
  assets: L.layerGroup().addTo(map), trucks: L.layerGroup().addTo(map),
  playback: L.layerGroup().addTo(map),
};
let config = {tiles_url: null, roads: {}, grids: {}};
let fitted = false;

function graticule() {
  layers.graticule.clearLayers();
  const b = map.getBounds();
  const span = Math.max(b.getEast() - b.getWest(), 1e-6);
  const steps = [10, 5, 2, 1, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01, 0.005, 0.002, 0.001, 0.0005,
    0.0002, 0.0001];
  const step = steps.find((s) => span / s >= 6) ?? steps[steps.length - 1];
  const digits = Math.max(0, Math.ceil(-Math.log10(step)));
  const style = {color: "#22354d", weight: 1, interactive: false, pane: "furniture"};
  const south = Math.max(b.getSouth(), -85), north = Math.min(b.getNorth(), 85);
  for (let lon = Math.ceil(b.getWest() / step) * step; lon <= b.getEast(); lon += step) {
    L.polyline([[south, lon], [north, lon]], style).addTo(layers.graticule);
    label([north, lon], lon.toFixed(digits) + "°E", [2, 0]);
  }
  for (let lat = Math.ceil(south / step) * step; lat <= north; lat += step) {
    L.polyline([[lat, b.getWest()], [lat, b.getEast()]], style).addTo(layers.graticule);
    label([lat, b.getWest()], lat.toFixed(digits) + "°N", [0, -14]);
  }
  function label(at, text, offset) {
    const icon = L.divIcon({className: "graticule-label", html: el("span", {}, text),
      iconSize: null, iconAnchor: [-offset[0], -offset[1]]});
    L.marker(at, {icon, interactive: false, keyboard: false, pane: "furniture"})
      .addTo(layers.graticule);
  }
}

async function loadConfig() {
  try {
    config = await (await fetch("/api/map/config")).json();
  } catch (err) { /* the offline default */ }
  if (config.tiles_url) {
    // the attribution is the operator's own configuration; Leaflet sets it as HTML, so escape
    const text = document.createElement("span");
    text.textContent = config.tiles_attribution || "";
    L.tileLayer(config.tiles_url, {attribution: text.innerHTML, maxZoom: 20}).addTo(map);
  } else {
    map.getContainer().classList.add("offline-map");
    map.on("moveend zoomend", graticule);
  }
  map.setView([31.31, 120.63], 15);
  legend();
}

function legend() {
  const box = L.control({position: "bottomright"});
  box.onAdd = () => el("div", {class: "legend"},
    ...[["ok", "asset normal"], ["alarm", "open alarm"], ["degraded", "degraded"],
      ["offline", "offline"],
      ["truck", "truck (live track)"], ["play", "playback"]].flatMap(([c, t]) => [
      el("i", {style: `background:${COLOURS[c]}`}), t, el("br")]),
    ...[["covered", "swept"], ["missed", "missed"], ["unknown", "no fixes"]].flatMap(([c, t]) => [
      el("i", {class: "line", style: `background:${COLOURS[c]}`}), t, el("br")]));
  box.addTo(map);
}

// ---- grid cells: configured outlines, or the box around each grid's assets -----------------

let gridKey = "";
function drawGrids(assets) {
  const boxes = new Map();
  for (const a of assets) {
    if (!a.grid || !hasPlace(a)) continue;
    const b = boxes.get(a.grid) || L.latLngBounds([a.lat, a.lon], [a.lat, a.lon]);
    boxes.set(a.grid, b.extend([a.lat, a.lon]));
  }
  const key = JSON.stringify([...boxes.entries()].map(([g, b]) => [g, b.toBBoxString()]));
  if (key === gridKey) return;
  gridKey = key;
  layers.grids.clearLayers();
  const style = {color: "#4f7db3", weight: 1.5, dashArray: "6 4", fill: true, fillOpacity: 0.04,
    interactive: false, pane: "furniture"};
  const outlined = new Set();
  for (const [code, ring] of Object.entries(config.grids || {})) {
    if (!Array.isArray(ring) || ring.length < 3) continue;
    const poly = L.polygon(ring, style).addTo(layers.grids);
    gridLabel(poly.getBounds().getNorthWest(), code);
    outlined.add(code);
  }
  for (const [code, bounds] of boxes) {
    if (outlined.has(code)) continue;
    // ~40 m around the grid's assets: where the grid is, not its legal outline
    const pad = 0.00036;
    const box = L.latLngBounds([bounds.getSouth() - pad, bounds.getWest() - pad * 1.2],
      [bounds.getNorth() + pad, bounds.getEast() + pad * 1.2]);
    L.rectangle(box, style).addTo(layers.grids);
    gridLabel(box.getNorthWest(), code);
  }
}
function gridLabel(at, code) {
  const icon = L.divIcon({className: "grid-label", html: el("span", {}, "grid " + code),
    iconSize: null, iconAnchor: [0, 16]});
  L.marker(at, {icon, interactive: false, keyboard: false, pane: "furniture"}).addTo(layers.grids);
}

// ---- assets ----------------------------------------------------------------------------------

const assetMarkers = new Map();
// a district at zoom 15 has thousands of assets: small dots there, full markers close up;
// an alarm is always full size
function assetRadius(state) { return state === "alarm" ? 10 : map.getZoom() >= 17 ? 7 : map.getZoom() >= 15 ? 4 : 2.5; }
map.on("zoomend", () => { for (const m of assetMarkers.values()) m.setRadius(assetRadius(m.edgeState)); });
function drawAssets(assets) {
  const seen = new Set();
  for (const a of assets) {
    if (!hasPlace(a)) continue;
    const key = keyOf(a);
    seen.add(key);
    let m = assetMarkers.get(key);
    if (!m) {
      m = L.circleMarker([a.lat, a.lon], {radius: 7, weight: 2, color: "#0d1520",
        fillOpacity: 0.95}).addTo(layers.assets);
      m.on("click", () => openDetail(a.gw, a.device));
      assetMarkers.set(key, m);
    }
    m.setLatLng([a.lat, a.lon]);
    if (m.edgeState !== a.state || m.edgeName !== a.name) {
      m.edgeState = a.state;
      m.edgeName = a.name;
      const alarm = a.state === "alarm";
      m.setStyle({fillColor: COLOURS[a.state] || COLOURS.ok,
        color: alarm ? COLOURS.alarm : "#e8f4ff", weight: alarm ? 3 : 1});
      m.setRadius(assetRadius(a.state));
      m.unbindTooltip();
      m.bindTooltip(el("span", {}, a.name || a.device), {direction: "top", offset: [0, -8],
        permanent: alarm, className: "asset-tip" + (alarm ? " alarm" : "")});
      if (alarm) m.bringToFront();
    }
    const path = m.getElement();
    if (path) {
      path.setAttribute("data-device", a.device);
      path.setAttribute("data-gw", a.gw);
      path.setAttribute("data-state", a.state);
      path.classList.toggle("asset-alarm", a.state === "alarm");
    }
  }
  for (const [key, m] of assetMarkers) {
    if (!seen.has(key)) { m.remove(); assetMarkers.delete(key); }
  }
}

function drawAlarms(cases, assets) {
  const where = new Map(assets.map((a) => [keyOf(a), a]));
  const byGrid = new Map();
  for (const c of cases) {
    const grid = c.grid || where.get(keyOf(c))?.grid || "no grid";
    if (!byGrid.has(grid)) byGrid.set(grid, []);
    byGrid.get(grid).push(c);
  }
  const groups = [...byGrid.entries()].sort((x, y) => y[1].length - x[1].length);
  const list = $("alarm-list");
  if (!groups.length) { list.replaceChildren(el("p", {class: "empty"}, "no open alarms")); return; }
  list.replaceChildren(...groups.map(([grid, items]) => el("div", {class: "grid-group",
    "data-grid": grid},
  el("div", {class: "grid-head"}, el("span", {}, "grid " + grid), el("b", {}, items.length)),
  ...items.slice(0, LIST_PER_GRID).map((c) => {
    const button = el("button", {class: "alarm-item", type: "button", "data-case": c.case_no},
      el("span", {class: "when"}, stamp(c.opened_ts)),
      el("span", {class: "kind"}, `#${c.case_no} ${c.kind}`), el("br"),
      `${c.asset_name || ""} · ${c.device || ""}` + (finite(c.value) ? ` · ${c.value}` : ""));
    button.addEventListener("click", () => {
      if (hasPlace(c)) map.setView([c.lat, c.lon], Math.max(map.getZoom(), 17));
      if (c.device) openDetail(c.gw, c.device);
    });
    return button;
  }),
  ...(items.length > LIST_PER_GRID ? [el("p", {class: "empty"},
    `+ ${items.length - LIST_PER_GRID} more in this grid`)] : []))));
}

// a fast-polled device repeats itself (a cover read 6 times a second: 12 rows were 2 s):
// a run of identical consecutive events is one row, "×n since" its oldest
function changes(values, max) {  // values newest first
  const runs = [];
  for (const e of values) {
    const key = JSON.stringify([e.type, e.data ?? null, e.alarm ?? null]);
    const last = runs[runs.length - 1];
    if (last && last.key === key) { last.count += 1; last.oldest = e.ts; continue; }
    if (runs.length === max) break;
    runs.push({key, event: e, count: 1, oldest: e.ts});
  }
  return runs;
}

async function openDetail(gw, device) {
  const q = new URLSearchParams({gw, device, values: String(DETAIL_FETCH)});
  const d = await (await fetch("/api/map/device?" + q)).json();
  const asset = latest.assets.find((a) => a.gw === gw && a.device === device) || {};
  $("detail").hidden = false;
  $("detail").dataset.device = device;
  $("detail-title").textContent = asset.name || device;
  $("detail-meta").replaceChildren(`${device} · ${asset.code || ""} · grid ${asset.grid || "?"}`,
    el("br"), `gateway ${gw}` + (hasPlace(asset) ? ` · ${asset.lat.toFixed(5)}, ${asset.lon.toFixed(5)}` : ""));
  fill($("detail-values").tBodies[0], changes(d.values, DETAIL_CHANGES).map((run) => el("tr",
    {"data-count": run.count}, el("td", {}, stamp(run.event.ts)), el("td", {}, run.event.type),
    el("td", {}, summary(run.event), run.count > 1
      ? el("small", {class: "repeats"}, ` ×${run.count} since ${stamp(run.oldest)}`) : ""))));
  fill($("detail-cases").tBodies[0], d.cases.length ? d.cases.map((c) => el("tr",
    {class: c.state}, el("td", {}, c.case_no), el("td", {}, c.kind), el("td", {}, c.state),
    el("td", {}, stamp(c.opened_ts)), el("td", {}, c.closed_ts ? stamp(c.closed_ts) : "")))
    : [el("tr", {}, el("td", {colSpan: 5}, "no cases"))]);
}
$("detail-close").addEventListener("click", () => { $("detail").hidden = true; });

// ---- trucks: live position and tail ----------------------------------------------------------

// fixes further apart than HOLD_GAP_MS are an outage (a restart, a tunnel, no fix): the line is
// broken there, never a straight chord across streets the truck may not have driven
function segmentsOf(points) {  // points: [ms, lat, lon, ...] oldest first -> [[[lat, lon], ...]]
  const out = [];
  let prevMs = null;
  for (const p of points) {
    if (prevMs === null || p[0] - prevMs > HOLD_GAP_MS) out.push([]);
    out[out.length - 1].push([p[1], p[2]]);
    prevMs = p[0];
  }
  return out;
}

const trucks = new Map();  // key -> {marker, line, points: [[ms, lat, lon]], lastMs}
async function drawVehicles(vehicles, nowMs) {
  for (const v of vehicles) {
    const key = keyOf(v);
    const ms = Math.floor(v.ts_ns / 1e6);
    let t = trucks.get(key);
    if (!t) {
      t = {marker: L.circleMarker([v.lat, v.lon], {radius: 8, weight: 3, color: "#e8f4ff",
        fillColor: COLOURS.truck, fillOpacity: 1}).addTo(layers.trucks),
      line: L.polyline([], {color: COLOURS.truck, weight: 3, opacity: 0.7}).addTo(layers.tracks),
      points: [], lastMs: 0};
      t.marker.bindTooltip(el("span", {}, v.name || v.device), {direction: "right",
        permanent: true, offset: [10, 0], className: "asset-tip"});
      trucks.set(key, t);
      const q = new URLSearchParams({gw: v.gw, device: v.device,
        start_ms: String(nowMs - LIVE_TRACK_MS), end_ms: String(nowMs + 60e3)});
      try {
        const track = await (await fetch("/api/map/track?" + q)).json();
        t.points = track.points.map((p) => [p[0], p[1], p[2]]);
        t.line.setLatLngs(segmentsOf(t.points));
        t.lastMs = track.points.length ? track.points[track.points.length - 1][0] : 0;
      } catch (err) { /* the live tail starts now */ }
      addTruckOption(v);
    }
    if (ms > t.lastMs) {
      t.points.push([ms, v.lat, v.lon]);
      if (t.points.length > LIVE_TRACK_MAX) t.points = t.points.slice(-LIVE_TRACK_MAX);
      t.line.setLatLngs(segmentsOf(t.points));
      t.lastMs = ms;
    }
    t.marker.setLatLng([v.lat, v.lon]);
    const path = t.marker.getElement();
    if (path) { path.setAttribute("data-truck", v.device); path.setAttribute("data-gw", v.gw); }
  }
}

// ---- playback of a truck's day (轨迹回放) ------------------------------------------------

const pb = {points: [], marker: null, route: null, done: null, day: null, timer: null, at: 0};
function addTruckOption(v) {
  const value = JSON.stringify([v.gw, v.device]);
  if ([...$("pb-truck").options].some((o) => o.value === value)) return;
  $("pb-truck").append(el("option", {value}, `${v.name || v.device} (${v.device})`));
}
function localDay(date) {
  const d = date || new Date();
  return `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, "0")}-${String(d.getDate()).padStart(2, "0")}`;
}
$("pb-day").value = localDay();

async function loadPlayback() {
  if (!$("pb-truck").value || !$("pb-day").value) return;
  const [gw, device] = JSON.parse($("pb-truck").value);
  const [y, mo, d] = $("pb-day").value.split("-").map(Number);
  const start = new Date(y, mo - 1, d).getTime();
  const q = new URLSearchParams({gw, device, start_ms: String(start),
    end_ms: String(start + 86400e3)});
  const track = await (await fetch("/api/map/track?" + q)).json();
  stopPlay();
  pb.points = track.points;
  layers.playback.clearLayers();
  pb.marker = null;
  if (!pb.points.length) {
    $("pb-readout").textContent = "no positions that day";
    $("pb-slider").disabled = $("pb-play").disabled = true;
    return;
  }
  pb.route = L.polyline(segmentsOf(pb.points), {color: COLOURS.play, weight: 2, opacity: 0.35,
    dashArray: "4 4"}).addTo(layers.playback);
  pb.done = L.polyline([], {color: COLOURS.play, weight: 4}).addTo(layers.playback);
  pb.marker = L.circleMarker([pb.points[0][1], pb.points[0][2]], {radius: 9, weight: 3,
    color: "#fff", fillColor: COLOURS.play, fillOpacity: 1}).addTo(layers.playback);
  const slider = $("pb-slider");
  slider.min = String(pb.points[0][0]);
  slider.max = String(pb.points[pb.points.length - 1][0]);
  slider.value = slider.min;
  slider.disabled = $("pb-play").disabled = false;
  map.fitBounds(L.latLngBounds(pb.points.map((p) => [p[1], p[2]])), {animate: false, ...CLEAR_OF_LEGEND});
  showAt(pb.points[0][0]);
}

// where the truck was at ms: the fix's position, linearly between two fixes less than
// HOLD_GAP_MS apart; across a longer outage it stays where it was last seen
function positionAt(ms) {
  const p = pb.points;
  if (!p.length) return null;
  if (ms <= p[0][0]) return {lat: p[0][1], lon: p[0][2], index: 0, speed: p[0][3]};
  let lo = 0, hi = p.length - 1;
  if (ms >= p[hi][0]) return {lat: p[hi][1], lon: p[hi][2], index: hi, speed: p[hi][3]};
  while (hi - lo > 1) { const mid = (lo + hi) >> 1; if (p[mid][0] <= ms) lo = mid; else hi = mid; }
  const [t0, la0, lo0, s0] = p[lo], [t1, la1, lo1] = p[hi];
  if (t1 - t0 > HOLD_GAP_MS) return {lat: la0, lon: lo0, index: lo, speed: s0, held: true};
  const f = (ms - t0) / (t1 - t0);
  return {lat: la0 + (la1 - la0) * f, lon: lo0 + (lo1 - lo0) * f, index: lo, speed: s0};
}

function showAt(ms) {
  const at = positionAt(ms);
  if (!at) return;
  pb.at = ms;
  pb.marker.setLatLng([at.lat, at.lon]);
  const done = segmentsOf(pb.points.slice(0, at.index + 1));
  done[done.length - 1].push([at.lat, at.lon]);
  pb.done.setLatLngs(done);
  const out = $("pb-readout");
  out.dataset.ms = String(ms);
  out.dataset.lat = at.lat.toFixed(6);
  out.dataset.lon = at.lon.toFixed(6);
  out.textContent = `${clock(ms)}  ${at.lat.toFixed(5)}, ${at.lon.toFixed(5)}` +
    (finite(at.speed) ? `  ${at.speed.toFixed(0)} km/h` : "") + (at.held ? "  (no fixes)" : "");
}

function stopPlay() { clearInterval(pb.timer); pb.timer = null; $("pb-play").textContent = "▶"; }
$("pb-load").addEventListener("click", loadPlayback);
$("pb-slider").addEventListener("input", () => { showAt(Number($("pb-slider").value)); });
$("pb-play").addEventListener("click", () => {
  if (pb.timer) { stopPlay(); return; }
  $("pb-play").textContent = "❚❚";
  const tickMs = 100;
  pb.timer = setInterval(() => {
    const slider = $("pb-slider");
    const next = Math.min(Number(slider.max), pb.at + tickMs * Number($("pb-speed").value));
    slider.value = String(next);
    showAt(next);
    if (next >= Number(slider.max)) stopPlay();
  }, tickMs);
});

// ---- work coverage (work_coverage events: edge.model.WireWorkCoverage) -----------------------

let coverageKey = "";
async function drawCoverage(ids) {
  const key = JSON.stringify(ids);
  if (key === coverageKey) return;
  const reports = ids.length ? await (await fetch("/api/map/coverage")).json() : [];
  coverageKey = key;
  layers.coverage.clearLayers();
  const list = $("coverage-list");
  if (!reports.length) { list.replaceChildren(el("p", {class: "empty"}, "no coverage reports")); return; }
  list.replaceChildren(...reports.map((r) => {
    const data = r.data || {};
    const shift = data.shift || {};
    const roads = Array.isArray(data.roads) ? data.roads : [];
    // a device.read during the shift (from_read): the coverage so far, not the shift's report
    const running = shift.state === "in_progress";
    return el("div", {class: "truck-cov" + (running ? " in-progress" : ""), "data-device": r.device,
      "data-state": shift.state || ""},
    el("b", {}, (r.asset && r.asset.name) || r.device),
    el("div", {class: "meta"}, `${stamp(shift.start)} – ${stamp(shift.end)} · ` +
        (running ? `in progress (read ${stamp(r.ts)})` : shift.state || "") +
        (data.clock === "untrusted" ? " · clock untrusted" : "")),
    ...roads.map((road) => { drawRoad(road, running); return roadBar(road); }));
  }));
}

function stretches(road) {
  const out = [];
  for (const state of ["covered", "unknown", "missed"]) {
    for (const s of Array.isArray(road[state]) ? road[state] : []) {
      if (Array.isArray(s) && finite(s[0]) && finite(s[1]) && s[1] > s[0]) out.push([s[0], s[1], state]);
    }
  }
  return out.sort((x, y) => x[0] - y[0]);
}

function roadBar(road) {
  const size = road.shape === "area" ? road.cells : road.length_m;
  const bar = el("div", {class: "bar"});
  for (const [a, b, state] of stretches(road)) {
    if (!finite(size) || size <= 0) break;
    const span = el("span", {class: "cov-" + state, title: `${state} ${a}–${b}`});
    span.style.width = `${(100 * (b - a)) / size}%`;
    span.style.marginLeft = "0";
    bar.append(span);
  }
  const pct = finite(road.covered_pct) ? road.covered_pct.toFixed(1) : "?";
  return el("div", {class: "road", "data-road": road.id},
    el("div", {class: "name"}, el("span", {}, road.id),
      el("span", {}, `${pct} % swept` + (finite(road.missed_pct) && road.missed_pct > 0
        ? ` · ${road.missed_pct.toFixed(1)} % missed` : ""))), bar);
}

function drawRoad(road, running) {
  if (road.shape === "area" && road.grid) { drawCells(road); return; }
  const geometry = (config.roads || {})[road.id];
  const line = geometry && Array.isArray(geometry.line) ? geometry.line : null;
  if (!line || line.length < 2) return;  // no centreline configured: the bar only
  // chainage as the gateway measures it: great-circle metres per edge (docs/work-coverage.md)
  const chain = [0];
  for (let i = 1; i < line.length; i++) chain.push(chain[i - 1] + greatCircleM(line[i - 1], line[i]));
  const at = (m) => {
    let i = 1;
    while (i < line.length - 1 && chain[i] < m) i++;
    const seg = chain[i] - chain[i - 1] || 1;
    const f = Math.min(1, Math.max(0, (m - chain[i - 1]) / seg));
    return [line[i - 1][0] + (line[i][0] - line[i - 1][0]) * f, line[i - 1][1] + (line[i][1] - line[i - 1][1]) * f];
  };
  for (const [a, b, state] of stretches(road)) {
    const points = [at(a)];
    for (let i = 0; i < line.length; i++) if (chain[i] > a && chain[i] < b) points.push(line[i]);
    points.push(at(b));
    L.polyline(points, {color: COLOURS[state], weight: 7, opacity: 0.85, lineCap: "butt",
      dashArray: running ? "10 5" : null})
      .bindTooltip(el("span", {}, `${road.id}: ${state} ${Math.round(a)}–${Math.round(b)} m` +
        (running ? " (shift in progress)" : "")))
      .addTo(layers.coverage);
  }
}

function greatCircleM(a, b) {  // edge/drivers/geo.py distance_m
  const rad = Math.PI / 180;
  const h = Math.sin((b[0] - a[0]) * rad / 2) ** 2 +
    Math.cos(a[0] * rad) * Math.cos(b[0] * rad) * Math.sin((b[1] - a[1]) * rad / 2) ** 2;
  return 2 * EARTH_M * Math.asin(Math.sqrt(h));
}

function drawCells(road) {
  const g = road.grid;
  if (![g.origin_lat, g.origin_lon, g.cell_m, g.cols].every(finite) || g.cols < 1) return;
  const k = Math.PI / 180 * EARTH_M;
  const dLat = g.cell_m / k, dLon = g.cell_m / (k * Math.cos(g.origin_lat * Math.PI / 180));
  let drawn = 0;
  for (const [a, b, state] of stretches(road)) {
    for (let i = Math.floor(a); i < b && drawn < MAX_CELLS; i++, drawn++) {
      const row = Math.floor(i / g.cols), col = i % g.cols;
      const south = g.origin_lat + row * dLat, west = g.origin_lon + col * dLon;
      L.rectangle([[south, west], [south + dLat, west + dLon]], {stroke: false,
        fillColor: COLOURS[state], fillOpacity: 0.55, interactive: false}).addTo(layers.coverage);
    }
  }
}

// ---- polling ---------------------------------------------------------------------------------

let latest = {assets: [], open_cases: [], vehicles: [], work_coverage: []};
let latestTag = null;
async function refresh() {
  // "no-cache": the browser revalidates with If-None-Match; an unchanged state is a 304
  const resp = await fetch("/api/map", {cache: "no-cache"});
  if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
  const nowMs = Date.now();
  $("status").textContent = "live · updated " + clock(nowMs);
  $("status").classList.remove("bad");
  const tag = resp.headers.get("ETag");
  if (tag !== null && tag === latestTag) return;
  const s = await resp.json();
  latest = s;
  drawGrids(s.assets);
  drawAssets(s.assets);
  drawAlarms(s.open_cases, s.assets);
  await drawVehicles(s.vehicles, nowMs);
  await drawCoverage(s.work_coverage);
  $("kpi-assets").textContent = String(s.assets.length);
  $("kpi-alarms").textContent = String(s.open_total);
  $("kpi-alarms").parentElement.classList.toggle("quiet", s.open_total === 0);
  $("kpi-trucks").textContent = String(s.vehicles.length);
  $("kpi-offline").textContent = String(s.assets.filter((a) => a.state === "offline").length);
  if (!fitted) {
    const places = [...s.assets, ...s.vehicles].filter(hasPlace).map((o) => [o.lat, o.lon]);
    for (const layer of layers.coverage.getLayers()) {
      const b = layer.getBounds();
      places.push([b.getSouth(), b.getWest()], [b.getNorth(), b.getEast()]);
    }
    if (places.length) { map.fitBounds(L.latLngBounds(places), {maxZoom: 18, animate: false, ...CLEAR_OF_LEGEND}); fitted = true; }
  }
  latestTag = tag;  // drawn: the same state again can be skipped
}

async function poll() {
  for (;;) {
    try { await refresh(); } catch (err) {
      $("status").textContent = "receiver unreachable: " + err;
      $("status").classList.add("bad");
    }
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

// tests and operators' scripts read the state from here (never from the DOM's HTML)
window.edgeMap = {map, positionAt, showAt, playback: pb, loadPlayback, trucks,
  ready: loadConfig().then(() => { poll(); })};
