"""devices.yaml validation: golden invalid cases, each asserting file:line and field."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from edge.config import DEVICE_MODELS
from edge.config_loader import load_config, parse_config
from edge.drivers import DRIVERS
from edge.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
CASES = sorted(p for p in (ROOT / "tests" / "config_cases").iterdir() if p.is_dir())
LINE = re.compile(r"^devices\.yaml:(\d+): (YAML syntax|\S+?):")


def test_there_are_at_least_15_cases() -> None:
    assert len(CASES) >= 15


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_invalid_config_reports_file_line_and_field(case: Path) -> None:
    expected = (case / "expected.err").read_text(encoding="utf-8").splitlines()
    with pytest.raises(ConfigError) as info:
        load_config(case / "devices.yaml")
    assert info.value.problems == expected
    text = (case / "devices.yaml").read_text(encoding="utf-8").splitlines()
    for problem in info.value.problems:
        match = LINE.match(problem)
        assert match, f"not file:line: field: {problem}"
        line_no = int(match.group(1))
        assert 1 <= line_no <= len(text)
        field = match.group(2).rsplit(".", 1)[-1].split("[")[0]
        if match.group(2) != "YAML syntax":
            # the line named is the field's own line, or the line of the block holding it
            assert field in text[line_no - 1] or text[line_no - 1].lstrip().startswith("- "), \
                f"line {line_no} ({text[line_no - 1]!r}) does not show {field!r}"


def test_shipped_devices_yaml_is_valid_and_has_every_kind() -> None:
    loaded = load_config(ROOT / "devices.yaml")
    assert {d.kind for d in loaded.config.devices} == set(DEVICE_MODELS)


def test_registry_lists_the_same_kinds_as_the_config_union() -> None:
    assert set(DRIVERS) == set(DEVICE_MODELS)


def test_all_errors_are_reported_at_once() -> None:
    text = (ROOT / "devices.yaml").read_text(encoding="utf-8")
    text = text.replace("unit_id: 80 ", "unit_id: 0 ").replace("keepalive_s: 30", "keepalive_s: 99")
    with pytest.raises(ConfigError) as info:
        parse_config(text, Path("devices.yaml"))
    assert len(info.value.problems) == 2


def test_tls_false_is_allowed_for_loopback_only() -> None:
    text = (ROOT / "devices.yaml").read_text(encoding="utf-8")
    start, end = text.index("  tls:\n"), text.index("  topic_prefix")
    loopback = text[:start] + "  tls: false\n" + text[end:]
    parse_config(loopback, Path("devices.yaml"))  # accepted; `edge check` warns
    remote = loopback.replace("host: 127.0.0.1\n  port: 18883", "host: 10.1.2.3\n  port: 8883")
    with pytest.raises(ConfigError, match="loopback"):
        parse_config(remote, Path("devices.yaml"))
