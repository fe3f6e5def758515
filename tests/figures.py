"""Reliability figures (lost, duplicated, corrupt, recovered-in): each R-test records one line,
printed again in a section at the end of the run (design/reliability.md §4)."""

from __future__ import annotations

FIGURES: list[str] = []


def figure(rid: str, text: str) -> None:
    """Record (and print) one test's figure, e.g. ``figure("R4", "0 lost, 3 duplicates")``."""
    line = f"{rid}: {text}"
    FIGURES.append(line)
    print(line)
