"""Full-jitter backoff (design/reliability.md §3): plain capped exponentials still cluster."""

from __future__ import annotations

import random


def full_jitter(attempt: int, base_s: float, cap_s: float) -> float:
    """Return a delay drawn uniformly from [0, min(cap, base·2^attempt)]."""
    return random.uniform(0.0, min(cap_s, base_s * 2.0 ** min(attempt, 30)))
