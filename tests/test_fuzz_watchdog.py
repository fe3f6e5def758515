"""The fuzzers' hang detector fires on a CPU-bound loop (else every fuzzer's "0 hangs" is hollow)."""

from __future__ import annotations

import pytest

from tests.fuzz_watchdog import HangError, cpu_deadline, watchdog_installed


def _spin_for_ever() -> None:
    while True:
        pass


def test_a_cpu_bound_loop_is_stopped_at_its_deadline() -> None:
    with watchdog_installed(), cpu_deadline(0.05), pytest.raises(HangError):
        _spin_for_ever()


def test_a_quick_example_is_left_alone() -> None:
    with watchdog_installed(), cpu_deadline(1.0):
        total = sum(range(1000))
    assert total == 499_500
