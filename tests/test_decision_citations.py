"""Comments cite docs/decisions.md by number; the numbers must exist, be unique and fit.

Review finding 16: numbers collided in parallel work, and comments cited the wheelhouse (D65)
for the GNSS rules, the map (D55) for the UUIDv7 batch id, work coverage (D56) for the state
heartbeat.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEADING = re.compile(r"^## D(\d+)\. ", re.MULTILINE)
CITATION = re.compile(r"\bD(\d{1,3})\b")
# a line that names one of these and cites a decision must cite one whose text names it too
TOPICS = ("UUIDv7", "heartbeat", "GNSS", "time_source_suspect", "Leaflet", "wheel", "baseline")


def _sections() -> dict[int, str]:
    text = (ROOT / "docs" / "decisions.md").read_text(encoding="utf-8")
    starts = [(int(m.group(1)), m.start()) for m in HEADING.finditer(text)]
    ends = [s for _, s in starts[1:]] + [len(text)]
    return {n: text[s:e] for (n, s), e in zip(starts, ends, strict=True)}


def test_decision_numbers_are_unique() -> None:
    text = (ROOT / "docs" / "decisions.md").read_text(encoding="utf-8")
    numbers = [int(n) for n in HEADING.findall(text)]
    assert [n for n, c in Counter(numbers).items() if c > 1] == []


def test_every_cited_decision_exists_and_is_about_the_topic_it_is_cited_for() -> None:
    sections = _sections()
    wrong = []
    for folder in ("edge", "hil", "tests"):
        for path in sorted((ROOT / folder).rglob("*")):
            if path.suffix not in (".py", ".sql", ".sh", ".mjs", ".js") or \
                    "node_modules" in path.parts or path.name == Path(__file__).name:
                continue
            for no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if "decisions.md" not in line and not re.search(r"[(,;]\s*D\d+[),]", line):
                    continue
                for cited in map(int, CITATION.findall(line)):
                    where = f"{path.relative_to(ROOT)}:{no}: D{cited}"
                    if cited not in sections:
                        wrong.append(f"{where} does not exist")
                        continue
                    missing = [t for t in TOPICS
                               if t.lower() in line.lower() and
                               t.lower() not in sections[cited].lower()]
                    if missing:
                        wrong.append(f"{where} is not about {missing}")
    assert wrong == []
