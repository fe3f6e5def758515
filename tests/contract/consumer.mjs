// A platform consumer written from docs/contract/ alone (no Python): it verifies every batch,
// validates every message against the published schemas, tracks seq by the documented rules
// and sends valid and forged commands, checking the documented results. Any disagreement
// between the document and the gateway is a failure (exit 1) with the reasons on stdout.
//
//   node consumer.mjs info.json        (written by tests/test_contract.py)
//
// info.json: {host, port, prefix, gateway, ca, cert, key, gateway_public_key_hex,
//             platform_key_file, devices, schemas_dir, timeout_s, report_path}
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify,
  randomBytes } from "node:crypto";
import { readFileSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import Ajv2020 from "ajv/dist/2020.js";
import addFormats from "ajv-formats";
import mqtt from "mqtt";

const info = JSON.parse(readFileSync(process.argv[2], "utf8"));
const failures = [];
const fail = (what) => {
  if (failures.length < 50) failures.push(what.slice(0, 2000));
  else failures[49] = `... and more (${++dropped} not listed)`;
};
let dropped = 0;
const stats = { batches: 0, events: 0, duplicates: 0, out_of_order: 0, states: 0,
  retained_states: 0, schema_checked: 0, commands: {} };

// ---- schemas: every published file, compiled by Ajv (JSON Schema 2020-12, formats asserted)
// in Ajv's strict mode, exactly as docs/contract/README.md §Schemas says
const ajv = new Ajv2020({ strict: true, allErrors: true });
addFormats(ajv);
ajv.addVocabulary(["x-reasons", "x-actions", "x-roles", "x-status"]);
const byName = {};
for (const file of readdirSync(info.schemas_dir).filter((f) => f.endsWith(".schema.json"))) {
  const doc = JSON.parse(readFileSync(join(info.schemas_dir, file), "utf8"));
  ajv.addSchema(doc);
  byName[file.replace(".schema.json", "")] = doc.$id;
}
const validators = {};
function check(name, doc, where) {
  validators[name] ??= ajv.getSchema(byName[name]);
  stats.schema_checked += 1;
  if (!validators[name](doc)) {
    fail(`${where}: not valid against ${name}.schema.json: ${ajv.errorsText(validators[name].errors)}`);
    return false;
  }
  return true;
}

// ---- keys: raw Ed25519 keys as the contract gives them (hex), through node:crypto
const SPKI_PREFIX = Buffer.from("302a300506032b6570032100", "hex");
const gatewayRaw = Buffer.from(info.gateway_public_key_hex, "hex");
const gatewayKey = createPublicKey({ key: Buffer.concat([SPKI_PREFIX, gatewayRaw]),
  format: "der", type: "spki" });
const gatewayKid = createHash("sha256").update(gatewayRaw).digest("hex").slice(0, 16);
// the platform's signing key: a PKCS#8 PEM file (docs/contract/README.md §Platform keys)
const platformKey = createPrivateKey(readFileSync(info.platform_key_file));
const kidOf = (priv) => createHash("sha256")
  .update(createPublicKey(priv).export({ format: "der", type: "spki" }).subarray(12))
  .digest("hex").slice(0, 16);
const b64url = (buf) => buf.toString("base64url"); // unpadded, RFC 4648 §5
if (kidOf(platformKey) !== info.platform_kid) fail("platform.key's kid is not the registered one");

// The contract: verify sig over the exact UTF-8 bytes of body, before parsing body.
function openEnvelope(payload, where) {
  let env;
  try { env = JSON.parse(payload.toString("utf8")); } catch (e) {
    fail(`${where}: envelope is not JSON`); return null;
  }
  if (!check("envelope", env, where)) return null;
  if (env.kid !== gatewayKid) { fail(`${where}: kid ${env.kid} is not the gateway's ${gatewayKid}`); return null; }
  if (!verify(null, Buffer.from(env.body, "utf8"), gatewayKey, Buffer.from(env.sig, "base64url"))) {
    fail(`${where}: signature does not verify`); return null;
  }
  const body = JSON.parse(env.body);
  // non-ASCII travels raw, not \u-escaped (a re-serialisation would not give the signed
  // bytes anyway: 5.0 stays 5.0 on the wire, JSON.stringify writes 5)
  if (/[^\x00-\x7f]/.test(JSON.stringify(body)) && !/[^\x00-\x7f]/.test(env.body)) {
    fail(`${where}: non-ASCII characters are escaped in body`);
  }
  return body;
}

// ---- seq tracking (docs/contract/README.md §Seq)
const seen = new Map(); // seq -> event id
const ids = new Set();
const gaps = []; // [first, last] announced dropped
let maxSeq = 0;
const states = [];
const results = []; // command_result events

function onEvents(packet) {
  const where = `events batch #${stats.batches + 1}`;
  const body = openEnvelope(packet.payload, where);
  if (body === null) return;
  stats.batches += 1;
  if (!check("batch", body, where)) return;
  if (body.gw !== info.gateway) fail(`${where}: gw ${body.gw} on the topic of ${info.gateway}`);
  if (packet.retain) fail(`${where}: events are documented as not retained`);
  if (packet.qos !== 1) fail(`${where}: events are documented as QoS 1, got ${packet.qos}`);
  const up = packet.properties?.userProperties?.batch_id;
  if (up !== body.batch) fail(`${where}: user property batch_id ${up} != body batch ${body.batch}`);
  for (const event of body.events) {
    stats.events += 1;
    if (ids.has(event.id)) { stats.duplicates += 1; continue; } // dedup on (gw, id)
    ids.add(event.id);
    if (seen.has(event.seq)) fail(`seq ${event.seq} reused by ${event.id} and ${seen.get(event.seq)}`);
    if (event.seq < maxSeq) stats.out_of_order += 1; // documented: drained by priority
    maxSeq = Math.max(maxSeq, event.seq);
    seen.set(event.seq, event.id);
    if (event.type === "gap") gaps.push([event.data.first_seq, event.data.last_seq]);
    if (event.type === "command_result") results.push({ at: Date.now(), data: event.data, prio: event.prio });
  }
}

function onState(packet) {
  const where = `state #${stats.states + 1}`;
  const body = openEnvelope(packet.payload, where);
  if (body === null) return;
  stats.states += 1;
  if (packet.retain) stats.retained_states += 1;
  if (packet.qos !== 1) fail(`${where}: state is documented as QoS 1, got ${packet.qos}`);
  if (!check("gateway-state", body, where)) return;
  if (body.gw !== info.gateway) fail(`${where}: gw ${body.gw} on the topic of ${info.gateway}`);
  if (body.online && (body.seq_low === undefined || body.seq_high === undefined)) {
    fail(`${where}: an online state without the seq baseline`);
  }
  states.push({ at: Date.now(), body, retain: packet.retain });
}

// ---- commands, signed as the contract says
const pad = (n, w = 2) => String(n).padStart(w, "0");
function rfc3339(ms, offsetMin = 0) {
  // the documented forms: 'Z' or a numeric offset, with milliseconds
  const d = new Date(ms + offsetMin * 60000);
  const base = `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())}T`
    + `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}.${pad(d.getUTCMilliseconds(), 3)}`;
  if (offsetMin === 0) return `${base}Z`;
  const sign_ = offsetMin > 0 ? "+" : "-";
  const abs = Math.abs(offsetMin);
  return `${base}${sign_}${pad(Math.floor(abs / 60))}:${pad(abs % 60)}`;
}
function uuid7() {
  const b = randomBytes(16);
  const ms = BigInt(Date.now());
  for (let i = 0; i < 6; i += 1) b[i] = Number((ms >> BigInt(8 * (5 - i))) & 0xffn);
  b[6] = (b[6] & 0x0f) | 0x70;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = b.toString("hex");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}
let lastCtr = 0;
function ctrNow() { // documented: microseconds since the epoch, strictly increasing per kid
  lastCtr = Math.max(lastCtr + 1, Date.now() * 1000);
  return lastCtr;
}
function command({ device, action, params = {}, aud = info.gateway, iatMs = Date.now(),
  ttlS = 300, ctr = ctrNow(), offsetMin = 0, key = platformKey, iss = null }) {
  const body = { cmd_id: uuid7(), aud, device, action, params, iat: rfc3339(iatMs, offsetMin),
    exp: rfc3339(iatMs + ttlS * 1000, offsetMin), ctr };
  if (iss !== null) body.iss = iss; // README §7: the platform instance, its own counter
  const text = JSON.stringify(body);
  const env = { kid: kidOf(key), alg: "Ed25519", sig: b64url(sign(null, Buffer.from(text, "utf8"), key)),
    body: text };
  return { body, env: JSON.stringify(env) };
}

// ---- the run
const client = mqtt.connect(`mqtts://${info.host}:${info.port}`, {
  protocolVersion: 5, clientId: `contract-node-${process.pid}`, clean: true,
  ca: readFileSync(info.ca), cert: readFileSync(info.cert), key: readFileSync(info.key),
  rejectUnauthorized: true, reconnectPeriod: 0, connectTimeout: 5000,
});
const base = `${info.prefix}/${info.gateway}`;
client.on("message", (topic, payload, packet) => {
  try {
    if (topic === `${base}/events`) onEvents(packet);
    else if (topic === `${base}/state`) onState(packet);
    else fail(`message on an undocumented topic ${topic}`);
  } catch (e) { fail(`${topic}: ${e.stack}`); }
});
client.on("error", (e) => fail(`mqtt: ${e.message}`));

// A platform that joins late: it may not call seqs below its baseline lost. Its baseline is
// the seq_low of the first state it receives with the retain flag unset (README.md §4); the
// retained state it gets first may be older than its subscription.
const late = { seen: new Set(), gaps: [], baseline: null, retainedFirst: null, client: null, subscribed: false };
function joinLate() {
  late.client = mqtt.connect(`mqtts://${info.host}:${info.port}`, {
    protocolVersion: 5, clientId: `contract-node-late-${process.pid}`, clean: true,
    ca: readFileSync(info.ca), cert: readFileSync(info.cert), key: readFileSync(info.key),
    rejectUnauthorized: true, reconnectPeriod: 0, connectTimeout: 5000,
  });
  late.client.on("message", (topic, payload, packet) => {
    try {
      const env = JSON.parse(payload.toString("utf8"));
      if (!verify(null, Buffer.from(env.body, "utf8"), gatewayKey, Buffer.from(env.sig, "base64url"))) {
        fail("late joiner: a signature does not verify"); return;
      }
      const body = JSON.parse(env.body);
      if (topic.endsWith("/state")) {
        if (late.retainedFirst === null) late.retainedFirst = packet.retain;
        if (!packet.retain && body.online && late.baseline === null) late.baseline = body.seq_low;
        return;
      }
      for (const e of body.events) {
        late.seen.add(e.seq);
        if (e.type === "gap") late.gaps.push([e.data.first_seq, e.data.last_seq]);
      }
    } catch (e) { fail(`late joiner: ${e.message}`); }
  });
  late.client.on("connect", () => late.client.subscribe([`${base}/events`, `${base}/state`], { qos: 1 },
    (err) => { if (err) fail(`late joiner subscribe: ${err.message}`); else late.subscribed = true; }));
  late.client.on("error", (e) => fail(`late joiner mqtt: ${e.message}`));
}

const sleep = (ms) => new Promise((r) => { setTimeout(r, ms); });
async function until(pred, ms, what) {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`${what}: not within ${ms} ms`);
    await sleep(50);
  }
}
const publish = (env) => new Promise((resolve, reject) => {
  client.publish(`${base}/cmd`, env, { qos: 1 }, (err) => (err ? reject(err) : resolve()));
});

// expected results (docs/contract/README.md §Commands)
async function expect(name, sent, status, reason, { byId = true } = {}) {
  const since = Date.now();
  await publish(sent.env);
  // only results that arrived after this send: a replay has the same cmd_id as the original.
  // Unauthenticated rejections carry cmd_id null and echo it as cmd_id_unverified.
  const match = () => results.find((r) => r.at >= since && (byId
    ? r.data.cmd_id === sent.body.cmd_id
    : r.data.cmd_id === null && r.data.cmd_id_unverified === sent.body.cmd_id));
  try {
    await until(match, 10000, `the result of ${name}`);
  } catch (e) { fail(e.message); return; }
  const found = match();
  const got = found.data;
  stats.commands[name] = `${got.status}${got.reason ? `/${got.reason}` : ""}`;
  if (got.status !== status || (got.reason ?? null) !== reason) {
    fail(`${name}: expected ${status}/${reason}, got ${got.status}/${got.reason}`);
  }
  if (!check("command-result", got, `${name} result`)) return;
  const reasons = ajv.getSchema(byName["command-result"]).schema["x-reasons"];
  if (reason !== null && !Object.hasOwn(reasons, reason)) {
    fail(`${name}: reason ${reason} is not in the published catalogue`);
    return;
  }
  // README §8: rejections before a valid signature are prio 2; others (the first rejection of a
  // cmd_id for a replay reason too) prio 1
  const prio = reason !== null && !reasons[reason].authenticated ? 2 : 1;
  if (found.prio !== prio) fail(`${name}: result at prio ${found.prio}, documented ${prio}`);
}

async function main() {
  await new Promise((resolve, reject) => { client.once("connect", resolve); client.once("error", reject); });
  await new Promise((resolve, reject) => {
    client.subscribe([`${base}/events`, `${base}/state`], { qos: 1 }, (err) => (err ? reject(err) : resolve()));
  });
  console.log("READY"); // the test starts the agent now: this consumer sees it from seq 1
  await until(() => states.some((s) => s.body.online), 30000, "the birth");
  await until(() => stats.events > 0, 30000, "a batch");

  const lamp = Object.keys(info.devices).find((d) => info.devices[d] === "streetlight");
  const cover = Object.keys(info.devices).find((d) => info.devices[d] === "manhole_tilt");
  const ok = command({ device: lamp, action: "light.set", params: { on: true, dim_pct: 40 } });
  if (!check("command", ok.body, "a valid light.set")) return;
  await expect("valid light.set", ok, "executed", null);
  joinLate();
  // a late joiner asks for a fresh baseline (README §Sequence numbers: agent.state)
  await until(() => late.subscribed === true, 10000, "the late joiner's subscription");
  await expect("agent.state", command({ action: "agent.state" }), "executed", null);
  await until(() => late.baseline !== null, 6000, "a live state after agent.state");
  const offset = command({ device: cover, action: "device.read", offsetMin: 480 });
  check("command", offset.body, "device.read with +08:00");
  await expect("device.read, iat/exp at +08:00", offset, "executed", null);
  // documented tolerance on commands: padded and standard-alphabet signatures are accepted
  for (const [name, form] of [["padded sig", (b) => b.toString("base64url") + "=="],
    ["standard-alphabet sig", (b) => b.toString("base64")]]) {
    const tolerant = command({ device: cover, action: "device.read" });
    const doc = JSON.parse(tolerant.env);
    doc.sig = form(Buffer.from(doc.sig, "base64url"));
    await expect(name, { body: tolerant.body, env: JSON.stringify(doc) }, "executed", null);
  }
  await expect("replayed envelope", ok, "rejected", "duplicate");
  const rollback = command({ device: lamp, action: "light.set", params: { on: true }, ctr: ok.body.ctr - 1 });
  await expect("counter rollback", rollback, "rejected", "counter_rollback");
  const wrongAud = command({ device: lamp, action: "light.set", params: { on: true }, aud: "gw-320508-9999" });
  await expect("wrong aud", wrongAud, "rejected", "wrong_aud");
  const expired = command({ device: lamp, action: "light.set", params: { on: true },
    iatMs: Date.now() - 3600000, ttlS: 60 });
  await expect("expired", expired, "rejected", "expired");
  const future = command({ device: lamp, action: "light.set", params: { on: true },
    iatMs: Date.now() + 600000 });
  await expect("iat in the future", future, "rejected", "iat_in_future");
  const badParams = command({ device: lamp, action: "light.set", params: { on: true, dim_pct: 140 } });
  if (validators.command(badParams.body)) fail("the command schema accepts dim_pct 140");
  await expect("dim_pct 140", badParams, "rejected", "bad_params");
  const forged = command({ device: lamp, action: "light.set", params: { on: false } });
  const env = JSON.parse(forged.env);
  env.body = env.body.replace('"on":false', '"on":true');
  await expect("forged body", { body: forged.body, env: JSON.stringify(env) }, "rejected",
    "bad_signature", { byId: false });
  const stranger = generateKeyPairSync("ed25519").privateKey;
  const unknown = command({ device: lamp, action: "light.set", params: { on: true }, key: stranger });
  await expect("unknown kid", unknown, "rejected", "unknown_kid", { byId: false });
  // the body/params split (README §Validation): what the schema refuses outside /params is
  // bad_body, at or under /params bad_params; the gateway says the same
  const noDevice = command({ action: "light.set", params: { on: true } });
  if (validators.command(noDevice.body)) fail("the command schema accepts a light.set without device");
  await expect("light.set without device", noDevice, "rejected", "bad_body");
  const noParams = command({ device: lamp, action: "light.set" });
  delete noParams.body.params;
  const noParamsText = JSON.stringify(noParams.body);
  const noParamsEnv = JSON.stringify({ kid: kidOf(platformKey), alg: "Ed25519",
    sig: b64url(sign(null, Buffer.from(noParamsText, "utf8"), platformKey)), body: noParamsText });
  if (validators.command(noParams.body)) fail("the command schema accepts a light.set without params");
  await expect("light.set without params", { body: noParams.body, env: noParamsEnv }, "rejected",
    "bad_params");
  const noLamp = command({ device: "lamp-nowhere", action: "light.set", params: { on: true } });
  await expect("unknown device", noLamp, "rejected", "unknown_device");
  const named = results.find((r) => r.data.cmd_id === noLamp.body.cmd_id);
  if (!named?.data.detail.detail?.includes("lamp-nowhere")) fail("unknown_device does not name the device");
  const backwards = command({ device: lamp, action: "light.set", params: { on: true },
    iatMs: Date.now() + 30000, ttlS: -29 });
  await expect("exp before iat", backwards, "rejected", "bad_body");
  const epoch = command({ device: lamp, action: "light.set", params: { on: true } });
  const epochBody = { ...epoch.body, iat: Math.floor(Date.now() / 1000), exp: Math.floor(Date.now() / 1000) + 300 };
  if (validators.command(epochBody)) fail("the command schema accepts epoch integers as times");
  const epochText = JSON.stringify(epochBody);
  const epochEnv = JSON.stringify({ kid: kidOf(platformKey), alg: "Ed25519",
    sig: b64url(sign(null, Buffer.from(epochText, "utf8"), platformKey)), body: epochText });
  await expect("epoch integer times", { body: epochBody, env: epochEnv }, "rejected", "bad_body",
    { byId: false });

  // README §7 Counters: two platform instances sharing one key, each with its own `iss`, keep
  // a counter each per (kid, iss). Interleaved, each one's ctr below the other's last, both are
  // executed (neither locks the other out); a ctr below its own issuer's last is refused.
  const issBase = ctrNow(); // µs since the epoch: +10 … +40 stay within a day of the gateway's now
  const issuers = [["platform-a", 30], ["platform-b", 10], ["platform-a", 40], ["platform-b", 20]];
  for (const [iss, step] of issuers) {
    const sent = command({ device: cover, action: "device.read", iss, ctr: issBase + step });
    check("command", sent.body, `device.read from ${iss}`);
    await expect(`${iss} ctr +${step}`, sent, "executed", null);
  }
  // platform-a's last is +40: +35 is above platform-b's last (+20), below its own
  const issRollback = command({ device: cover, action: "device.read", iss: "platform-a",
    ctr: issBase + 35 });
  await expect("platform-a counter rollback", issRollback, "rejected", "counter_rollback");

  // seq: wait for a state that covers everything seen, then apply the documented rule
  const target = maxSeq;
  await until(() => states.some((s) => s.body.online && s.body.seq_high >= target
    && s.body.seq_low > target), 15000, `a heartbeat whose seq_low passes ${target}`);
  await sleep(500);
  const first = states.find((s) => s.body.online);
  const last = states.filter((s) => s.body.online).at(-1);
  const lost = [];
  for (let s = first.body.seq_low; s < last.body.seq_low; s += 1) {
    if (!seen.has(s) && !gaps.some(([a, b]) => a <= s && s <= b)) lost.push(s);
  }
  if (lost.length) fail(`seqs below seq_low ${last.body.seq_low} never received nor announced: ${lost.slice(0, 20)}`);
  stats.seq = { from: first.body.seq_low, to: last.body.seq_low - 1, received: seen.size, lost: lost.length, gaps };
  // the late joiner, by the same rule from its own baseline
  if (late.retainedFirst !== true) fail("late joiner: the first state was not the retained one");
  if (late.baseline === null) fail("late joiner: no live state received");
  else {
    const lateLost = [];
    for (let s = late.baseline; s < last.body.seq_low; s += 1) {
      if (!late.seen.has(s) && !late.gaps.some(([a, b]) => a <= s && s <= b)) lateLost.push(s);
    }
    if (lateLost.length) fail(`late joiner: seqs ${lateLost.slice(0, 20)} above its baseline ${late.baseline} never received`);
    stats.late = { baseline: late.baseline, received: late.seen.size, lost: lateLost.length };
  }
  late.client.end(true);
}

const timer = setTimeout(() => { fail(`timed out after ${info.timeout_s} s`); finish(); },
  info.timeout_s * 1000);
function finish() {
  clearTimeout(timer);
  // a file, written before exiting: a pipe may not be drained by then
  writeFileSync(info.report_path, JSON.stringify({ ok: failures.length === 0, failures, stats }));
  client.end(true);
  process.exit(failures.length === 0 ? 0 : 1);
}
main().catch((e) => fail(e.stack ?? String(e))).finally(finish);
