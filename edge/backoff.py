"""Full-jitter backoff (design/reliability.md §3): plain capped exponentials still cluster."""

from __future__ import annotations

import random


def full_jitter(attempt: int, base_s: float, cap_s: float, *, floor_s: float = 0.0) -> float:
    """Return a delay drawn uniformly from [0, min(cap, max(floor, base·2^attempt))].

    ``floor_s`` widens the window of early attempts (a fleet that lost its broker together
    must not come back in the same second; design/reliability.md R9).
    """
    return random.uniform(0.0, min(cap_s, max(floor_s, base_s * 2.0 ** min(attempt, 30))))
