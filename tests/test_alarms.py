"""Debounced alarms: raise after N, clear with hysteresis, never flap at the threshold."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.drivers.alarms import Debounced


def test_raises_after_n_consecutive_samples_and_clears_with_hysteresis() -> None:
    a = Debounced(threshold=15, clear_at=10, raise_after=3, clear_after=2)
    assert [a.update(v) for v in (20, 20)] == [None, None]
    assert a.update(20) == "raised"
    assert a.update(12) is None  # between the bounds: still active, no clear
    assert [a.update(v) for v in (5, 5)] == [None, "cleared"]


def test_value_hovering_at_the_threshold_does_not_flap() -> None:
    a = Debounced(threshold=15, clear_at=10, raise_after=2, clear_after=2)
    changes = [a.update(v) for v in [14.9, 15.0, 14.9, 15.1, 14.8, 15.0, 14.99] * 10]
    assert changes.count("raised") == 0 and changes.count("cleared") == 0


def test_low_value_alarm() -> None:
    a = Debounced(threshold=3.3, clear_at=3.5, raise_after=1, clear_after=1, below=True)
    assert a.update(3.2) == "raised"
    assert a.update(3.4) is None
    assert a.update(3.6) == "cleared"


def test_bad_hysteresis_is_refused() -> None:
    with pytest.raises(ValueError, match="below"):
        Debounced(threshold=10, clear_at=12)


@given(st.lists(st.floats(-90, 90, allow_nan=False), max_size=300))
def test_raises_and_clears_alternate(values: list[float]) -> None:
    a = Debounced(threshold=15, clear_at=10, raise_after=2, clear_after=2)
    changes = [c for c in (a.update(v) for v in values) if c]
    assert all(x != y for x, y in itertools.pairwise(changes))
    assert not changes or changes[0] == "raised"
