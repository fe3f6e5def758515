"""A writer process for crash tests: appends and acks, reporting each commit on stdout.

    python -m tests.outbox_writer DB [normal|full]

Each line is printed only after the commit it reports returned: ``C first last`` for stored
events, ``a seq,...`` before an ack (it may commit), ``A seq,...`` after it committed.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

from tests.outbox_util import ev, open_store


def main() -> None:
    path = Path(sys.argv[1])
    sync = sys.argv[2].upper() if len(sys.argv) > 2 else "FULL"
    # a quota far above what 100 kills write: this measures crash safety, not the quota policy
    # (evictions are announced by gap events and tested in test_outbox.py)
    store = open_store(path, synchronous=sync, quota_bytes=8 << 30)
    out = sys.stdout
    out.write(f"S {store._next_seq}\n")
    out.flush()
    rng = random.Random()
    while True:
        batch = [ev(rng.choice((0, 1, 2, 3, 3, 3)), size=rng.randint(50, 250))
                 for _ in range(rng.randint(1, 100))]
        seqs = store.append(batch).seqs
        out.write(f"C {seqs[0]} {seqs[-1]}\n")
        out.flush()
        if rng.random() < 0.3:
            leased = store.lease(rng.randint(1, 80))
            if leased:
                acked = [x.seq for x in leased]
                # intent first: an ack the kill interrupts may or may not have committed
                out.write("a " + ",".join(map(str, acked)) + "\n")
                out.flush()
                store.ack(acked)
                out.write("A " + ",".join(map(str, acked)) + "\n")
                out.flush()


if __name__ == "__main__":
    main()
