"""The published contract (docs/contract, edge/contract/schemas) against the running gateway.

* the examples in docs/contract/examples are real captured messages: each validates against
  the published schemas and each signed one verifies with the captured key;
* a fresh capture from a running demo stack validates too (the examples cannot go stale);
* a platform consumer in Node.js (tests/contract/consumer.mjs: mqtt, Ajv, node:crypto),
  written from the document alone, runs against the demo stack: every batch verified, every
  message validated, seq tracked by the documented rule, valid and forged commands sent and
  their documented results checked. If the document and the gateway disagree, it fails.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from edge.contract import SCHEMA_FILES, schema
from edge.security.signing import kid_of, open_envelope, public_key_from_raw
from hil.receiver.schemas import errors, validator
from tests.contract.capture import capture
from tests.contract.stack import demo_stack, write_info
from tests.figures import FIGURES

ROOT = Path(__file__).resolve().parents[1]
CONTRACT = ROOT / "docs" / "contract"
EXAMPLES = CONTRACT / "examples"
NODE_DIR = ROOT / "tests" / "contract"
SCHEMAS_DIR = ROOT / "edge" / "contract" / "schemas"
NODE_TIMEOUT_S = 50.0
ALWAYS_CAPTURED = {
    "events-envelope.json", "events-envelope-alarm.json", "state-birth.json",
    "state-alarm-active.json", "state-goodbye.json", "command-envelope.json", "keys.json",
    "event-reading.json", "event-alarm-raised.json", "event-alarm-cleared.json",
    "event-command_result-executed-light.set.json",
    "event-command_result-executed-device.read.json",
    "event-command_result-rejected-bad_signature.json",
    "event-command_result-rejected-wrong_aud.json",
    "event-command_result-rejected-bad_params.json",
    "event-command_result-rejected-expired.json",
    "event-command_result-rejected-duplicate.json",
    "event-command_result-rejected-unknown_kid.json",
    "event-command_result-rejected-bad_body.json",
    "event-command_result-rejected-unsafe.json",
    "event-state-offline.json", "event-state-online.json",
}
# the summary needs the gateway's 60 s window to end: captured by the command line (committed),
# not in every run (tests.contract.capture --no-suppressed)
COMMITTED_ONLY = {"event-command_result-rejected-suppressed.json"}


def _body_schema(name: str) -> str | None:
    """The schema of an example's signed body, by its file name."""
    if name.startswith("events-envelope"):
        return "batch"
    if name.startswith("state-"):
        return "state"
    if name.startswith("command-"):
        return "command"
    return None


def check_examples(folder: Path) -> dict[str, int]:
    """Validate every example in ``folder``; return how many of each kind were checked."""
    keys = json.loads((folder / "keys.json").read_text(encoding="utf-8"))
    gw_key = public_key_from_raw(bytes.fromhex(keys["gateway"]["public_key_hex"]))
    pf_key = public_key_from_raw(bytes.fromhex(keys["platform"]["public_key_hex"]))
    assert kid_of(gw_key) == keys["gateway"]["kid"]
    counts = {"event": 0, "envelope": 0}
    for path in sorted(folder.glob("*.json")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        if path.name.startswith("event-"):
            assert errors("event", doc) == [], path.name
            counts["event"] += 1
            continue
        body_schema = _body_schema(path.name)
        if body_schema is None:
            continue
        assert errors("envelope", doc) == [], path.name
        key = pf_key if body_schema == "command" else gw_key
        raw = json.dumps(doc, ensure_ascii=False).encode()
        _kid, body = open_envelope(raw, {kid_of(key): key})  # raises unless it verifies
        assert errors(body_schema, json.loads(body)) == [], path.name
        counts["envelope"] += 1
    return counts


# ---- the schemas themselves -------------------------------------------------------------


def test_every_schema_is_2020_12_and_compiles() -> None:
    for name in SCHEMA_FILES:
        doc = schema(name)
        assert doc["$schema"] == "https://json-schema.org/draft/2020-12/schema", name
        assert doc["$id"].endswith(SCHEMA_FILES[name]), name
        validator(name)  # compiles, every $ref resolves


def test_schemas_refuse_what_the_contract_forbids() -> None:
    env = json.loads((EXAMPLES / "events-envelope.json").read_text(encoding="utf-8"))
    assert errors("envelope", env) == []
    assert errors("envelope", {**env, "enc": "zlib"}), "v1 must refuse an enc it does not know"
    assert errors("envelope", {**env, "sig": env["sig"] + "=="}), "sig is unpadded"
    assert errors("envelope", {**env, "sig": env["sig"].replace("-", "+")}) or \
        "-" not in env["sig"]
    v2 = {**env, "enc": "zstd", "body": base64.urlsafe_b64encode(b"x").decode().rstrip("=")}
    assert errors("envelope_v2", v2) == []
    assert errors("envelope_v2", {**v2, "enc": "brotli"})
    event = json.loads((EXAMPLES / "event-reading.json").read_text(encoding="utf-8"))
    assert errors("event", event) == []
    assert errors("event", {**event, "ts": "2026-11-26T03:12:45Z"}), "ts has milliseconds"
    assert errors("event", {**event, "ts": "2026-11-26 03:12:45.120Z"})
    assert errors("event", {**event, "ts": 1764126765})
    assert errors("event", {**event, "type": "alarm"}), "an alarm has an alarm block"
    assert errors("event", {**event, "extra": 1})
    command = json.loads(json.loads((EXAMPLES / "command-envelope.json").read_text(
        encoding="utf-8"))["body"])
    assert errors("command", command) == []
    assert errors("command", {**command, "iat": 1764126765}), "epoch integers are refused"
    assert errors("command", {**command, "iat": "2026-11-26T03:12:45"}), "a zone is required"
    assert errors("command", {**command, "iat": "2026-11-26T11:12:45.5+08:00"}) == []
    assert errors("command", {**command, "params": {"on": True, "dim_pct": 101}})
    assert errors("command", {**command, "ctr": 2**53})


def test_command_schema_is_the_gateways_catalogue() -> None:
    """Actions, roles, kinds, params, times and issuers as edge/commands/processor.py checks them."""
    from edge.commands.processor import (
        COMMAND_TIME_PATTERN,
        ISS_PATTERN,
        action_catalogue,
        role_catalogue,
    )

    published = schema("command")
    assert published["x-roles"] == role_catalogue()
    catalogue = action_catalogue()
    assert published["properties"]["action"]["enum"] == list(catalogue)
    for action, entry in catalogue.items():
        shown = published["x-actions"][action]
        assert (shown["role"], shown["kinds"]) == (entry["role"], entry["kinds"]), action
        assert shown["device"] == entry["device"], action
        rule = next(r for r in published["allOf"]
                    if r["if"]["properties"]["action"].get("const") == action)
        params = rule["then"]["properties"]["params"]
        model = entry["params"]
        assert set(params.get("properties", {})) == set(model.get("properties", {})), action
        assert set(params.get("required", [])) == set(model.get("required", [])), action
        for name, prop in params.get("properties", {}).items():
            for bound in ("minimum", "maximum", "minLength", "maxLength", "pattern", "default",
                          "minItems", "maxItems", "enum"):
                assert prop.get(bound) == model["properties"][name].get(bound), \
                    f"{action}.{name}.{bound}"
    steps = next(r for r in published["allOf"] if r["if"]["properties"]["action"].get("const")
                 == "light.schedule")["then"]["properties"]["params"]["properties"]["steps"]
    step_model = catalogue["light.schedule"]["params"]["$defs"]["LightStep"]
    for name, prop in steps["items"]["properties"].items():
        for bound in ("minimum", "maximum", "pattern", "default", "type"):
            assert prop.get(bound) == step_model["properties"][name].get(bound), name
    assert set(steps["items"]["required"]) == set(step_model["required"])
    assert schema("defs")["$defs"]["command_time"]["pattern"] == COMMAND_TIME_PATTERN
    assert published["properties"]["iss"]["pattern"] == ISS_PATTERN


def test_command_result_schema_is_the_gateways_catalogue() -> None:
    from edge.commands.processor import FOLLOW_UP_STATUSES, STATUSES, reason_catalogue

    published = schema("command_result")
    assert published["x-reasons"] == reason_catalogue()
    assert set(published["properties"]["status"]["enum"]) == \
        set(STATUSES) | set(FOLLOW_UP_STATUSES)
    source = "".join(p.read_text(encoding="utf-8")
                     for p in sorted((ROOT / "edge" / "commands").glob("*.py")))
    used = set(re.findall(r'_reject\(\s*"([a-z_]+)"', source))
    assert used, "the reasons are found in the source"
    assert used - set(published["x-reasons"]) == set(), "reasons the contract does not list"


def test_work_coverage_schema_is_the_models() -> None:
    from edge.wire import WireWorkCoverage

    published = {k: v for k, v in schema("work_coverage").items() if k not in ("$schema", "$id")}
    # after a change of the model: write its model_json_schema(by_alias=True) into the file,
    # keeping $schema and $id, and say so in docs/contract/CHANGELOG.md
    assert published == WireWorkCoverage.model_json_schema(by_alias=True), \
        "edge/contract/schemas/work-coverage.schema.json differs from edge.wire.WireWorkCoverage"


# ---- captured examples --------------------------------------------------------------------


def test_committed_examples_are_valid_and_signed() -> None:
    counts = check_examples(EXAMPLES)
    assert counts["event"] >= 10
    assert counts["envelope"] >= 5


@pytest.mark.slow
async def test_fresh_capture_from_a_running_agent_is_valid(tmp_path: Path) -> None:
    fresh_dir = tmp_path / "examples"
    from tests.contract.capture import write

    async with asyncio.timeout(90):
        docs = await capture(tmp_path / "stack", suppressed=False)
    write(fresh_dir, docs)
    check_examples(fresh_dir)
    # the kinds every run produces (others, such as a device state change, depend on timing)
    assert set(docs) >= ALWAYS_CAPTURED, f"not captured: {ALWAYS_CAPTURED - set(docs)}"
    assert {p.name for p in EXAMPLES.glob("*.json")} >= ALWAYS_CAPTURED | COMMITTED_ONLY


# ---- the second-language consumer ---------------------------------------------------------


def _node() -> tuple[str, str]:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        if os.environ.get("CI"):
            pytest.fail("CI must install nodejs and npm (make test-deps): the contract's "
                        "second-language consumer cannot be skipped there")
        pytest.skip("node/npm not installed (make test-deps)")
    return node, npm


@pytest.fixture(scope="session")
def node_consumer() -> str:
    """``npm ci`` once (package-lock.json pinned), return the node binary."""
    node, npm = _node()
    stamp = NODE_DIR / "node_modules" / ".package-lock.json"
    lock = NODE_DIR / "package-lock.json"
    if not stamp.exists() or stamp.stat().st_mtime < lock.stat().st_mtime:
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, check=True,
                       timeout=300, capture_output=True)
    return node


@pytest.mark.slow
async def test_node_consumer_agrees_with_the_gateway(tmp_path: Path, node_consumer: str) -> None:
    started = time.monotonic()
    async with demo_stack(tmp_path / "stack", start_agent=False) as stack:
        report_path = tmp_path / "report.json"
        info = stack.info() | {"schemas_dir": str(SCHEMAS_DIR), "timeout_s": NODE_TIMEOUT_S,
                               "report_path": str(report_path)}
        info_path = write_info(stack, tmp_path / "info.json")
        info_path.write_text(json.dumps(info), encoding="utf-8")
        proc = await asyncio.create_subprocess_exec(
            node_consumer, str(NODE_DIR / "consumer.mjs"), str(info_path), cwd=NODE_DIR,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            assert proc.stdout is not None
            async with asyncio.timeout(15):
                line = await proc.stdout.readline()
            assert line.strip() == b"READY", line
            stack.start_agent()  # the consumer is subscribed: it sees the gateway from seq 1
            async with asyncio.timeout(NODE_TIMEOUT_S + 10):
                out, err = await proc.communicate()
        finally:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        assert report_path.exists(), f"no report: {out.decode()[-2000:]} {err.decode()[-2000:]}"
        report: dict[str, Any] = json.loads(report_path.read_text(encoding="utf-8"))
        rejected = {k: v for k, v in stack.store.counters().items() if k.startswith("rejected.")}
    assert report["ok"], "\n".join(report["failures"]) + "\n" + err.decode()[-3000:]
    stats = report["stats"]
    FIGURES.append(f"contract: Node consumer verified {stats['batches']} batches "
                   f"({stats['events']} events, {stats['duplicates']} duplicates) and "
                   f"{stats['states']} states, validated {stats['schema_checked']} documents, "
                   f"{stats['out_of_order']} events arrived below the highest seq, "
                   f"{stats['seq']['lost']} lost (a late joiner from seq_low {stats['late']['baseline']}: "
                   f"{stats['late']['lost']} lost), {len(stats['commands'])} commands answered as "
                   f"documented, in {time.monotonic() - started:.1f} s")
    assert stats["batches"] > 0
    assert stats["states"] > 0
    assert stats["seq"]["lost"] == 0
    assert stats["late"]["lost"] == 0  # the late joiner, from its documented baseline
    # incl. agent.state, no device/params, exp < iat, and two issuers (iss) sharing one key
    assert len(stats["commands"]) == 23
    # the reference receiver validated the same stream with the same schemas
    assert rejected == {}
    assert time.monotonic() - started < 60


# ---- the AsyncAPI and OpenAPI documents ---------------------------------------------------


def _yaml(name: str) -> Any:
    from ruamel.yaml import YAML

    return YAML(typ="safe").load((CONTRACT / name).read_text(encoding="utf-8"))


def _resolve(ref: str, doc: Any, base: Path) -> Any:
    """Return what ``ref`` points at: in ``doc`` (``#/...``) or in a file beside ``base``."""
    file, _, pointer = ref.partition("#")
    target: Any = doc
    if file:
        path = (base / file).resolve()
        assert path.exists(), f"$ref to a missing file: {ref}"
        target = json.loads(path.read_text(encoding="utf-8"))
    for raw in (p for p in pointer.split("/") if p):
        part = raw.replace("~1", "/").replace("~0", "~")
        target = target[int(part)] if isinstance(target, list) else target[part]
    return target


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        here = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return here + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def test_every_ref_of_the_documents_resolves() -> None:
    for name in ("asyncapi.yaml", "openapi.yaml"):
        doc = _yaml(name)
        refs = _refs(doc)
        assert refs, name
        for ref in refs:
            _resolve(ref, doc, CONTRACT)


def test_asyncapi_messages_examples_are_their_schemas() -> None:
    """Each message's examples are valid envelopes whose body is valid for the message."""
    doc = _yaml("asyncapi.yaml")
    names = {v: k for k, v in SCHEMA_FILES.items()}
    checked = 0
    for key, message in doc["components"]["messages"].items():
        payload = Path(message["payload"]["schema"]["$ref"]).name
        if message.get("x-status") == "reserved":
            continue  # not emitted: test_envelope_v2_is_reserved_in_both_documents
        body = Path(message["x-signed-body"]["$ref"]).name
        assert message.get("examples"), key
        for example in message["examples"]:
            envelope = _resolve(example["payload"]["$ref"], doc, CONTRACT)
            assert errors(names[payload], envelope) == []
            assert errors(names[body], json.loads(envelope["body"])) == []
            checked += 1
    assert checked >= 6


def test_envelope_v2_is_reserved_in_both_documents() -> None:
    """v2 is specified (envelope-v2.schema.json) and marked reserved: on no channel, no request."""
    asyncapi, openapi = _yaml("asyncapi.yaml"), _yaml("openapi.yaml")
    reserved = {k: m for k, m in asyncapi["components"]["messages"].items()
                if m.get("x-status") == "reserved"}
    assert list(reserved) == ["batchV2"]
    message = reserved["batchV2"]
    assert Path(message["payload"]["schema"]["$ref"]).name == "envelope-v2.schema.json"
    assert "examples" not in message  # nothing to capture: no gateway emits it
    assert "do not emit" in message["summary"]
    on_channels = [m["$ref"] for c in asyncapi["channels"].values()
                   for m in c["messages"].values()]
    assert "#/components/messages/batchV2" not in on_channels
    schema_v2 = openapi["components"]["schemas"]["envelopeV2"]
    assert Path(schema_v2["$ref"]).name == "envelope-v2.schema.json"
    assert schema_v2["x-status"] == "reserved"
    (item,) = openapi["paths"].values()
    body = item["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert Path(body).name == "envelope.schema.json"  # gateways of this version POST v1 only
    assert schema("envelope_v2")["x-status"] == "reserved"


def test_versions_agree() -> None:
    from edge.contract import CONTRACT_VERSION

    assert _yaml("asyncapi.yaml")["info"]["version"] == CONTRACT_VERSION
    assert _yaml("openapi.yaml")["info"]["version"] == CONTRACT_VERSION
    changelog = (CONTRACT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert re.search(r"^## (\S+)", changelog, re.MULTILINE)[1] == CONTRACT_VERSION  # type: ignore[index]
    assert f"(version {CONTRACT_VERSION})" in (CONTRACT / "README.md").read_text(encoding="utf-8")
    readme = (CONTRACT.parent.parent / "README.md").read_text(encoding="utf-8")
    assert f"(version {CONTRACT_VERSION})" in readme
    for name in ("asyncapi.yaml", "openapi.yaml"):  # their header comments say it too
        head = (CONTRACT / name).read_text(encoding="utf-8").splitlines()[0]
        assert f"(contract {CONTRACT_VERSION})" in head, name


def test_documents_are_valid_asyncapi_3_and_openapi_3_1(tmp_path: Path,
                                                        node_consumer: str) -> None:
    """Checked against the official meta-schemas (@asyncapi/specs, OpenAPI 3.1, from npm)."""
    paths = []
    for name in ("asyncapi", "openapi"):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(_yaml(f"{name}.yaml")), encoding="utf-8")
        paths.append(str(path))
    done = subprocess.run([node_consumer, str(NODE_DIR / "lint-docs.mjs"), *paths],
                          cwd=NODE_DIR, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]


def test_the_schema_files_ship_in_the_package() -> None:
    """package-data names every schema file: `edge schema` works from a wheel, not only here."""
    import fnmatch
    import tomllib

    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    globs = data["tool"]["setuptools"]["package-data"]["edge.contract"]
    files = sorted(p.name for p in SCHEMAS_DIR.iterdir() if p.is_file())
    assert files == sorted(SCHEMA_FILES.values())
    assert all(any(fnmatch.fnmatch(f"schemas/{f}", g) for g in globs) for f in files)


# ---- the HTTPS uplink against openapi.yaml --------------------------------------------------


async def test_https_requests_are_what_openapi_yaml_says(tmp_path: Path, pki: Any) -> None:
    """The gateway's POSTs: path, headers and body as the OpenAPI document describes them."""
    import ssl

    from aiohttp import web

    from edge.buffer.async_outbox import AsyncOutbox
    from edge.buffer.gaps import make_gap_factory
    from edge.buffer.store import Outbox
    from edge.clock import Clock, TimeQuality
    from edge.config import UplinkConfig
    from edge.config_loader import validate
    from edge.model import Event, EventType
    from edge.security.signing import Ed25519PrivateKey, Signer
    from edge.uplink.https import HttpsUplink
    from hil.broker import free_port

    api = _yaml("openapi.yaml")
    (path_template, item), = api["paths"].items()
    post = item["post"]
    body_schema = Path(post["requestBody"]["content"]["application/json"]["schema"]["$ref"]).name
    names = {v: k for k, v in SCHEMA_FILES.items()}
    required_headers = [p["name"] for p in post["parameters"] if p["in"] == "header"]
    gw = "gw-320508-0007"
    seen: list[tuple[str, dict[str, str], bytes]] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append((request.path, dict(request.headers), await request.read()))
        return web.json_response({"accepted": 1, "duplicates": 0})

    app = web.Application()
    app.router.add_post(path_template, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(pki.cert("broker"), pki.key("broker"))
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=server_tls).start()
    outbox = AsyncOutbox(Outbox(tmp_path / "o.db", gap_factory=make_gap_factory(Clock("system"))),
                         commit_max_wait_s=0.001)
    await outbox.open()
    config = validate(UplinkConfig, {
        "kind": "https", "host": "127.0.0.1", "port": port, "boot_delay_max_s": 0,
        "base_url": f"https://127.0.0.1:{port}", "tls": {"ca_file": str(pki.cert("ca"))},
        "batch_max_events": 10})
    key = Ed25519PrivateKey.generate()
    uplink = HttpsUplink(config, gateway_id=gw, signer=Signer(key), outbox=outbox,
                         base_dir=tmp_path, token="s3cret")
    tasks = [asyncio.create_task(outbox.run()), asyncio.create_task(uplink.run())]
    try:
        await outbox.put_many([Event(EventType.READING, 3, time.time_ns(), TimeQuality.SYNCED,
                                     device="d", data={"n": i, "名": "路灯"}) for i in range(25)])
        async with asyncio.timeout(10):
            while sum(len(json.loads(json.loads(b)["body"])["events"]) for _p, _h, b in seen) < 25:
                await asyncio.sleep(0.02)
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await outbox.close()
        await runner.cleanup()
    assert len(seen) >= 3
    for path, headers, raw in seen:
        assert path == path_template.replace("{gw}", gw)
        assert headers["Content-Type"] == "application/json"
        assert headers["Authorization"] == "Bearer s3cret"
        assert all(h in headers for h in required_headers)
        envelope = json.loads(raw)
        assert errors(names[body_schema], envelope) == []
        _kid, body = open_envelope(raw, {kid_of(key.public_key()): key.public_key()})
        batch = json.loads(body)
        assert errors("batch", batch) == []
        assert headers["Idempotency-Key"] == batch["batch"]
        assert "路灯".encode() in body  # non-ASCII raw in the signed bytes


# ---- the reference receiver refuses what the published schemas refuse -----------------------


def _signed_batch(signer: Any, body: bytes) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(signer.envelope(body))
    return doc


@pytest.mark.parametrize("case", ["enc", "padded sig", "standard sig", "extra member",
                                  "nan in body", "ts without ms", "undocumented member",
                                  "batch of another gateway"])
def test_the_receiver_refuses_what_the_contract_refuses(tmp_path: Path, case: str) -> None:
    from edge.clock import TimeQuality
    from edge.model import Event, EventType, encode_batch, encode_event
    from edge.security.signing import Ed25519PrivateKey, Signer, raw_public_key
    from hil.receiver.core import Receiver, load_gateway_keys
    from hil.receiver.store import ReceiverStore

    gw = "gw-320508-0007"
    key = Ed25519PrivateKey.generate()
    signer = Signer(key)
    store = ReceiverStore(tmp_path / "rx.db")
    rx = Receiver(store, load_gateway_keys({gw: raw_public_key(key.public_key()).hex()}))
    for n in range(1000):  # a signature with a "-" or "_": its standard form differs
        event = encode_event(Event(EventType.READING, 3, time.time_ns(), TimeQuality.SYNCED,
                                   device="d", data={"v": 1.5, "n": n}), 1)
        body = encode_batch(gw, "01a23424-0e1f-736c-bb51-244f2301d2b3", time.time_ns(), [event])
        good = _signed_batch(signer, body)
        if "-" in good["sig"] or "_" in good["sig"]:
            break
    topic = f"edge/v1/{gw}/events"
    try:
        assert rx.handle(topic, json.dumps(good).encode()).accepted == 1  # the control
        raw = base64.urlsafe_b64decode(good["sig"] + "==")
        envelope = {
            "enc": {**good, "enc": "zlib"},
            "padded sig": {**good, "sig": good["sig"] + "=="},
            "standard sig": {**good, "sig": base64.b64encode(raw).decode().rstrip("=")},
            "extra member": {**good, "note": "x"},
        }.get(case)
        if envelope is None:
            changed = {
                "nan in body": body.replace(b'"v":1.5', b'"v":NaN'),
                "ts without ms": re.sub(rb'"ts":"([^".]*)\.\d{3}Z"', rb'"ts":"\1Z"', body),
                "undocumented member": body.replace(b'"v":1,', b'"v":1,"zone":"cn",'),
                "batch of another gateway": body.replace(gw.encode(), b"gw-320508-0008", 1),
            }[case]
            assert changed != body, case
            envelope = _signed_batch(signer, changed)
        out = rx.handle(topic, json.dumps(envelope).encode())
        assert out.rejected, case
        assert out.accepted == 0
        counters = store.counters()
        assert sum(v for k, v in counters.items() if k.startswith("rejected.")) == 1
    finally:
        store.close()


def test_hil_command_checks_with_the_published_schema(tmp_path: Path, pki: Any,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """The platform stand-in refuses, before sending, what the contract refuses."""
    from hil.__main__ import main
    from tests.contract.stack import _config

    loaded = _config(tmp_path, pki, 1)  # port 1: nothing is sent
    assert main(["--config", str(loaded.path), "command", "lamp-07", "light.set",
                 '{"on": true, "dim_pct": 140}']) == 2
    assert "dim_pct" in capsys.readouterr().err


@pytest.mark.parametrize("name", [
    "envelope", "envelope-v2", "batch", "event", "gateway-state", "command", "command-result",
    "work-coverage", "defs", "command-result.schema.json",
    "envelope_v2", "state", "command_result", "work_coverage"])  # the 1.1.0 names: aliases
def test_edge_schema_accepts_the_file_names_the_contract_lists(name: str, capsys: Any) -> None:
    """Issue 20 re-test #6: `edge schema command-result` (the listed file) said "no schema"."""
    from edge.cli import main
    from edge.contract import SCHEMA_FILES, schema_text

    assert main(["schema", name]) == 0
    files = {f.removesuffix(".schema.json"): f for f in SCHEMA_FILES.values()}
    file = SCHEMA_FILES.get(name) or files.get(name) or name
    assert capsys.readouterr().out == schema_text(file)
    assert main(["schema", "gateway_state"]) == 2  # neither a file nor a 1.1.0 name
