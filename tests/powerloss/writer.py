"""Writer run under the plsim shim: appends, then records each committed seq in a marker file.

    python -m tests.powerloss.writer DIR SYNC COMMITS
"""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

from tests.outbox_util import ev, open_store


def main() -> None:
    folder, sync, commits = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    store = open_store(folder / "outbox.db", synchronous=sync)
    marker = os.open(folder / "marker", os.O_WRONLY | os.O_CREAT, 0o600)
    rng = random.Random(11)
    for n in range(commits):
        seqs = store.append([ev(rng.choice((0, 3, 3)), size=rng.randint(50, 400))
                             for _ in range(rng.randint(1, 30))]).seqs
        # the append returned: these events are acknowledged to whoever handed them over
        os.pwrite(marker, seqs[-1].to_bytes(8, "little"), n * 8)
    os._exit(0)  # no close: the store is left as a crash would leave it


if __name__ == "__main__":
    main()
