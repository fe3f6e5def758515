"""Fuzz the reference receiver's inputs (issue 19 "Also": the same hostile-payload treatment
for the receiver as for the command path).

Bytes on ``{gw}/events`` and ``{gw}/state`` → stored, a duplicate, or a named rejection. Never an
exception past ``Receiver.handle``, never the catch-all (``rejected.malformed``, which logs a
traceback: a message that reaches it found a bug), never a case from unsigned data, never a
hang. Most examples are signed by the gateway's key, so they get past the signature to the
schema, the store and the case logic. 10 k examples in ``make test`` (FUZZ_EXAMPLES), 100 k in
``make faults``; the per-example deadline is hypothesis's plus a CPU-time watchdog.
"""

from __future__ import annotations

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

from edge.security.signing import Signer
from hil.receiver.core import Receiver
from hil.receiver.store import ReceiverStore
from tests.fuzz_watchdog import cpu_deadline, watchdog_installed
from tests.test_receiver import GW, STATE, TOPIC, alarm, batch, reading, setup, state_doc

pytestmark = pytest.mark.reliability

FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "3000"))
EXAMPLE_DEADLINE_S = 5.0  # a message takes ~1 ms; an fsync on a loaded box more; a hang far more

JSON_SCALARS = st.none() | st.booleans() | st.integers() | \
    st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=30)
JSON = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=4) |
                    st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=12)


def _mutate(doc: Any, path: list[int], value: Any) -> Any:
    """Replace one member of a JSON document, chosen by ``path``, with ``value``."""
    if not path or not isinstance(doc, dict | list) or not doc:
        return value
    keys = sorted(doc) if isinstance(doc, dict) else list(range(len(doc)))
    key = keys[path[0] % len(keys)]
    out = dict(doc) if isinstance(doc, dict) else list(doc)
    out[key] = _mutate(doc[key], path[1:], value)
    return out


def _dumps(doc: Any) -> bytes:
    return json.dumps(doc, ensure_ascii=False).encode("utf-8", "surrogatepass")



@pytest.fixture
def rig(tmp_path: Path) -> Iterator[tuple[Receiver[ReceiverStore], Signer]]:
    # on tmpfs when there is one: the same commits, without 10 k waits for a disk
    shm = Path("/dev/shm")
    base = Path(tempfile.mkdtemp(dir=shm)) if shm.is_dir() else tmp_path
    try:
        with watchdog_installed():
            yield setup(base)
    finally:
        if base != tmp_path:
            shutil.rmtree(base, ignore_errors=True)


@pytest.mark.timeout(120 + FUZZ_EXAMPLES // 50)
def test_fuzz_the_receivers_inputs(rig: tuple[Receiver[ReceiverStore], Signer]) -> None:
    rx, signer = rig
    valid_batch = json.loads(json.loads(batch(signer, [(reading(), 1), (alarm("raised"), 2)]))
                             ["body"])
    valid_state = state_doc()
    mutated_batch = st.builds(_mutate, st.just(valid_batch),
                              st.lists(st.integers(0, 50), max_size=4), JSON)
    mutated_state = st.builds(_mutate, st.just(valid_state),
                              st.lists(st.integers(0, 50), max_size=3), JSON)
    signed = st.builds(lambda doc: signer.envelope(_dumps(doc)),
                       mutated_batch | mutated_state | JSON)
    payloads = st.one_of(
        st.binary(max_size=4000),
        st.builds(_dumps, JSON),
        st.builds(_dumps, mutated_state),  # plain (unsigned) states
        st.builds(lambda kid, alg, sig, body: _dumps(
            {"kid": kid, "alg": alg, "sig": sig, "body": body}),
            st.just(signer.kid) | JSON, st.sampled_from(["Ed25519", "none"]) | JSON,
            st.text(max_size=90) | JSON, st.text(max_size=300) | JSON),
        signed, signed, signed)  # most examples reach the schema, the store and the cases
    topics = st.sampled_from([TOPIC, TOPIC, STATE, "edge/v1/gw-other/events",
                              f"edge/v1/{GW}/cmd", "x"])
    seen: dict[str, int] = {}

    @settings(max_examples=FUZZ_EXAMPLES, deadline=dt.timedelta(seconds=EXAMPLE_DEADLINE_S),
              database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(topic=topics, payload=payloads)
    def run(topic: str, payload: bytes) -> None:
        cases_before = len(rx.store.cases())
        with cpu_deadline(EXAMPLE_DEADLINE_S):
            out = rx.handle(topic, payload)
        kind = out.rejected.split(":")[0] if out.rejected else "accepted"
        seen[kind] = seen.get(kind, 0) + 1
        assert not out.rejected.startswith("malformed"), (out, payload[:300])
        if out.opened:  # only the gateway's signed word opens a case
            assert json.loads(payload).get("sig"), payload[:300]
        else:
            assert len(rx.store.cases()) == cases_before

    started = time.monotonic()
    run()
    counters = rx.store.counters()
    assert counters.get("rejected.malformed", 0) == 0, counters
    # and it still works: a fresh valid alarm opens its case
    fresh = alarm("raised", alarm_id=f"x:cover_open:{time.time_ns()}")
    assert rx.handle(TOPIC, batch(signer, [(fresh, 10**12)])).opened
    print(f"receiver fuzz: {sum(seen.values())} examples in {time.monotonic() - started:.0f} s: "
          f"{dict(sorted(seen.items()))}")
