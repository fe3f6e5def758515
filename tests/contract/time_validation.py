"""Time the reference receiver's schema validation of a 200-event batch (hil/receiver/schemas.py).

``python -m tests.contract.time_validation`` builds a batch of ``batch_max_events`` (200) events
from the captured events of docs/contract/examples (each kept as captured, with its own id and
seq), encoded as the gateway writes a body (compact JSON, raw UTF-8), and times with timeit:
the validation alone (``errors("batch", doc)``, what the receiver calls) and the parse plus
validation (``_contract_doc``, what a batch costs the receiver before storing). It prints the
best and the median of 7 repeats of 200 calls: the best is the cost, the median shows the
noise of a shared machine.
"""

from __future__ import annotations

import itertools
import json
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge.ids import uuid7
from hil.receiver.core import _contract_doc
from hil.receiver.schemas import errors

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "contract" / "examples"
BATCH_EVENTS = 200  # uplink.batch_max_events, the default
CALLS = 200
REPEATS = 7


def captured_batch(kinds: str = "reading") -> bytes:
    """A 200-event batch body of captured events (``kinds``: ``reading`` or ``all``)."""
    events = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(EXAMPLES.glob("event-*.json"))]
    pool = [e for e in events if kinds == "all" or e["type"] == kinds]
    envelope = json.loads((EXAMPLES / "events-envelope.json").read_text(encoding="utf-8"))
    batch = json.loads(envelope["body"])
    batch["events"] = [{**e, "id": str(uuid7()), "seq": 1000 + n}
                       for n, e in zip(range(BATCH_EVENTS), itertools.cycle(pool), strict=False)]
    return json.dumps(batch, ensure_ascii=False, separators=(",", ":")).encode()


def time_ms(fn: Callable[[], Any]) -> tuple[float, float]:
    """Best and median ms per call of ``fn``."""
    runs = sorted(t / CALLS * 1e3 for t in timeit.repeat(fn, number=CALLS, repeat=REPEATS))
    return runs[0], runs[len(runs) // 2]


def main() -> int:
    """Print the figures for a batch of readings and a batch of every captured event type."""
    for kinds in ("reading", "all"):
        raw = captured_batch(kinds)
        doc = json.loads(raw)
        problems = errors("batch", doc)
        assert problems == [], problems  # a valid batch: the cost of the common case
        for what, fn in (("validate", lambda d=doc: errors("batch", d)),
                         ("parse+validate", lambda r=raw: _contract_doc("batch", r, "x"))):
            best, median = time_ms(fn)
            print(f"{kinds:8s} {len(raw):6d} B  {what:15s} best {best:.2f} ms  "
                  f"median {median:.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
