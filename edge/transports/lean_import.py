"""Import paho-mqtt without the standard library's ``urllib.request`` (D90).

paho's client module imports ``urllib.request`` at its top for one purpose: finding an
environment proxy for PySocks (``Client._get_proxy``), which returns before touching it when
PySocks is not installed. edge does not install PySocks (a gateway talks to its broker directly,
never through a proxy an environment variable names), so the import only costs memory:
``urllib.request`` brings ``http.client``, ``email``, ``tempfile`` and ``calendar``, 1.5 MiB of
a 40 MiB agent (bench w1). While paho is imported, ``sys.modules`` holds an empty placeholder
under that name; it is removed right after, so any later ``import urllib.request`` (aiohttp's
status page, a test) loads the real module. Where PySocks is installed, or the real module is
already loaded, nothing is replaced. tests/test_lean_import.py holds all of this.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
import types
from collections.abc import Iterator

PLACEHOLDER = "urllib.request"


@contextlib.contextmanager
def without_proxy_lookup() -> Iterator[None]:
    """Within the block, ``import urllib.request`` yields an empty module (see above)."""
    if PLACEHOLDER in sys.modules or importlib.util.find_spec("socks") is not None:
        yield
        return
    sys.modules[PLACEHOLDER] = types.ModuleType(PLACEHOLDER, "placeholder: edge D90")
    try:
        yield
    finally:
        del sys.modules[PLACEHOLDER]
