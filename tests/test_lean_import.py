"""The agent imports paho without urllib.request (edge/transports/lean_import.py, D90)."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import subprocess
import sys
import textwrap
from typing import Any

import pytest

from edge.transports import lean_import


def _fresh(code: str) -> str:
    """Run ``code`` in a new interpreter (nothing imported yet); return its stdout."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_agent_loads_no_urllib_request_and_paho_finds_no_proxy() -> None:
    out = _fresh("""
        import sys
        import edge.agent, edge.cli
        print(sorted(m for m in ("urllib.request", "http.client", "email", "tempfile")
                     if m in sys.modules))
        import paho.mqtt.client as mqtt
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        client._host = "127.0.0.1"
        print(mqtt.socks, client._get_proxy())  # the only reader of urllib.request
    """)
    assert out.splitlines() == ["[]", "None None"]


def test_a_later_import_gets_the_real_module() -> None:
    out = _fresh("""
        import edge.transports.mqtt
        import urllib.request
        print(callable(urllib.request.getproxies), urllib.request.__doc__ != "placeholder: edge D90")
    """)
    assert out == "True True"


def test_within_the_block_the_name_is_a_placeholder_and_after_it_is_gone() -> None:
    out = _fresh("""
        import sys
        from edge.transports.lean_import import without_proxy_lookup
        with without_proxy_lookup():
            inside = sys.modules["urllib.request"].__doc__
        print(inside, "urllib.request" in sys.modules)
    """)
    assert out == "placeholder: edge D90 False"


def test_a_loaded_module_is_never_replaced() -> None:
    import urllib.request

    with lean_import.without_proxy_lookup():
        assert sys.modules["urllib.request"] is urllib.request
    assert sys.modules["urllib.request"] is urllib.request


def test_with_pysocks_installed_nothing_is_replaced(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, *args: Any) -> importlib.machinery.ModuleSpec | None:
        if name == "socks":  # PySocks present: paho would read env proxies through urllib
            return importlib.machinery.ModuleSpec("socks", None)
        return real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    saved = sys.modules.pop("urllib.request", None)
    try:
        with lean_import.without_proxy_lookup():
            assert "urllib.request" not in sys.modules
    finally:
        if saved is not None:
            sys.modules["urllib.request"] = saved
