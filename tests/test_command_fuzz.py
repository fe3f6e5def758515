"""Fuzz the whole command path (issue 19): envelope bytes in → an audited rejection, a failure
or an execution out; never an exception past ``CommandProcessor.handle``, never a hang.

Real outbox, real audit file, real replay file, real signatures. 3 k examples in ``make test``;
``make faults`` sets FUZZ_EXAMPLES=100000. Every example runs under a watchdog: a hang (a
coroutine that never finishes: ``asyncio.wait_for``; CPU-bound code: a SIGVTALRM timer on the
process's CPU time) fails the test instead of stalling it. Found on the code before the fix:
an unknown-kid envelope with a lone surrogate escape ended in UnicodeEncodeError.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.clock import TimeQuality
from edge.security.signing import Signer
from hil.commander import sign_command
from tests.fuzz_watchdog import cpu_deadline, watchdog_installed
from tests.test_command_hardening import HardHarness
from tests.test_commands import GW

pytestmark = pytest.mark.reliability

FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "3000"))
EXAMPLE_DEADLINE_S = 5.0  # generous for an fsync on a loaded SD card; a hang is far beyond
STATUSES = {"executed", "rejected", "failed", "unknown"}

JSON_SCALARS = st.none() | st.booleans() | st.integers() | \
    st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=40)
JSON = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=4) |
                    st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=12)
ACTIONS = ["light.set", "light.schedule", "speaker.play_tts", "speaker.play_clip",
           "speaker.stop", "device.read", "gps.set_interval", "agent.reload_config", "x"]
DEVICES = ["lamp-07", "speaker-01", "manhole-12", "gps-01", "nope", None]


def _stamp(offset_s: float) -> str:
    when = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=offset_s)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


@st.composite
def signed_bodies(draw: st.DrawFn) -> dict[str, Any]:
    """Plausible bodies: most fields right, some replaced by arbitrary JSON."""
    body: dict[str, Any] = {
        "cmd_id": draw(st.integers(0, 2**48 - 1).map(lambda n: f"0193f1c3-0000-7000-8000-{n:012x}")
                       | st.sampled_from(["0193f1c3-0000-7000-8000-000000000001", "x"])),
        "aud": draw(st.sampled_from([GW, GW, GW, "gw-other"])),
        "device": draw(st.sampled_from(DEVICES)),
        "action": draw(st.sampled_from(ACTIONS)),
        "params": draw(st.sampled_from([
            {"on": True}, {"on": False, "dim_pct": 150}, {"text": "hi", "volume": 20},
            {"text": "hi"}, {"on": True, "dim_pct": 30},
            {"text": "紧急", "priority": "emergency"}, {"steps": []}, {}]) |
            st.dictionaries(st.text(max_size=10), JSON, max_size=3)),
        "iat": draw(st.sampled_from([_stamp(0), _stamp(0), _stamp(-3600), _stamp(3600), "9999-12-31T23:59:59Z",
                                     "0001-01-01T00:00:00+23:59", "not a time"])),
        "exp": draw(st.sampled_from([_stamp(300), _stamp(-10), "9999-12-31T23:59:59Z", "x"])),
        # mostly a counter that grows like the platform's, so checks 4 and 5 are reached
        "ctr": time.time_ns() // 1000 if draw(st.integers(0, 3)) else
        draw(st.sampled_from([0, -1, 2**53 - 1, 2**63 - 1, 2**64]) | st.integers()),
    }
    if draw(st.integers(0, 3)) == 0:  # a quarter of them: some fields replaced by any JSON
        for key in draw(st.lists(st.sampled_from(sorted(body)), min_size=1, max_size=2)):
            body[key] = draw(JSON)
        if draw(st.booleans()):
            body[draw(st.text(max_size=8))] = draw(JSON)
    return body


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[tuple[HardHarness, asyncio.AbstractEventLoop]]:
    # On tmpfs when there is one: the same fsync calls, without 100 k waits for a disk
    shm = Path("/dev/shm")  # a private mkdtemp below it
    base = Path(tempfile.mkdtemp(dir=shm)) if shm.is_dir() else tmp_path
    loop = asyncio.new_event_loop()
    h = HardHarness(base)
    loop.run_until_complete(h.start())
    try:
        with watchdog_installed():
            yield h, loop
    finally:
        loop.run_until_complete(h.stop())
        loop.close()
        if base != tmp_path:
            shutil.rmtree(base, ignore_errors=True)


@pytest.mark.timeout(120 + FUZZ_EXAMPLES // 40)  # ~7 ms an example on a busy 2-core box
def test_fuzz_the_command_path(harness: tuple[HardHarness, asyncio.AbstractEventLoop]) -> None:
    h, loop = harness
    keys = [h.lighting, h.broadcast, h.emergency, h.unknown]
    kids = [Signer(k).kid for k in keys]
    seen: dict[str, int] = {}

    signed = st.builds(lambda i, body: Signer(keys[i]).envelope(
        json.dumps(body, ensure_ascii=False).encode("utf-8", "surrogatepass")),
        st.integers(0, len(keys) - 1), signed_bodies())
    valid = st.builds(lambda on, dim, text: sign_command(
        h.lighting, gateway=GW, device="lamp-07", action="light.set",
        params={"on": on, "dim_pct": dim})[1] if text is None else sign_command(
        h.broadcast, gateway=GW, device="speaker-01", action="speaker.play_tts",
        params={"text": text})[1], st.booleans(), st.integers(-5, 105),
        st.none() | st.text(max_size=210))
    envelopes = st.one_of(
        valid, valid,  # valid commands reach the journal, the replay file and the executor
        st.binary(max_size=9000),
        st.builds(lambda d: json.dumps(d).encode(), JSON),
        st.builds(lambda kid, alg, sig, body: json.dumps(
            {"kid": kid, "alg": alg, "sig": sig, "body": body}).encode(),
            st.sampled_from(kids) | JSON, st.sampled_from(["Ed25519", "none"]) | JSON,
            st.text(max_size=100) | JSON, st.text(max_size=300) | JSON),
        signed, signed, signed,  # most examples reach the checks behind the signature
        st.builds(lambda i, body, pos, bit: _flip(Signer(keys[i]).envelope(
            json.dumps(body).encode()), pos, bit),
            st.integers(0, len(keys) - 1), signed_bodies(), st.integers(0, 10_000),
            st.integers(0, 7)),
    )

    # hypothesis's deadline (D36) as well: a slow example is reported, shrunk and named
    @settings(max_examples=FUZZ_EXAMPLES, deadline=dt.timedelta(seconds=EXAMPLE_DEADLINE_S),
              database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                     HealthCheck.function_scoped_fixture])
    @given(raw=envelopes, quality=st.sampled_from(list(TimeQuality)),
           hour=st.integers(0, 23))
    def run(raw: bytes, quality: TimeQuality, hour: int) -> None:
        h.clock.q = quality
        h.now = dt.datetime(2026, 11, 26, hour, 0, tzinfo=dt.UTC)
        assert h.processor is not None
        with cpu_deadline(EXAMPLE_DEADLINE_S):  # a CPU-bound hang (tests/fuzz_watchdog.py)
            out = loop.run_until_complete(asyncio.wait_for(h.processor.handle(raw),
                                                           EXAMPLE_DEADLINE_S))
        assert out.status in STATUSES, out
        assert out.reason != "internal_error", out  # a bug reached the catch-all
        seen[f"{out.status}.{out.reason}"] = seen.get(f"{out.status}.{out.reason}", 0) + 1

    run()
    assert h.processor is not None
    assert "report_failed" not in h.processor.counts
    print(f"command path fuzz: {sum(seen.values())} examples: {dict(sorted(seen.items()))}")


def _flip(envelope: bytes, pos: int, bit: int) -> bytes:
    data = bytearray(envelope)
    data[pos % len(data)] ^= 1 << bit
    return bytes(data)
