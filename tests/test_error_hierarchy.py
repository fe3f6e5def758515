"""One error hierarchy (house style rule 5): every EdgeError lives in edge/errors.py, drawn.

Review finding 17: ``PlatformKeysError`` (and ``KeyFileError``, ``SecretError``) were defined
beside their callers, missing from the drawn tree, so their ``code``/``retryable`` were not
where an operator or a retry policy looks.
"""

from __future__ import annotations

import importlib
import pkgutil

import edge
from edge import errors


def _all_subclasses(cls: type[errors.EdgeError]) -> set[type[errors.EdgeError]]:
    found: set[type[errors.EdgeError]] = set()
    for sub in cls.__subclasses__():
        found |= {sub, *_all_subclasses(sub)}
    return found


def test_every_edge_error_is_defined_and_drawn_in_edge_errors() -> None:
    for info in pkgutil.walk_packages(edge.__path__, "edge."):
        if info.name.endswith("__main__"):
            continue
        importlib.import_module(info.name)
    doc = errors.__doc__ or ""
    for cls in _all_subclasses(errors.EdgeError):
        assert cls.__module__ == "edge.errors", f"{cls.__name__} is defined in {cls.__module__}"
        row = next((line for line in doc.splitlines() if f" {cls.__name__} " in line), None)
        assert row is not None, f"{cls.__name__} is not drawn in edge/errors.py"
        assert cls.code in row.split(), (cls.__name__, cls.code, row)
        assert ("yes" if cls.retryable else "no") in row.split(), row


def test_platform_keys_error_keeps_its_code_and_is_not_retryable() -> None:
    from edge.errors import PlatformKeysError

    assert PlatformKeysError.code == "keys.platform_invalid"
    assert PlatformKeysError.retryable is False


def test_link_errors_become_the_uplinks_codes() -> None:
    """The uplink counts its transport's failures under its own codes (as_uplink_error)."""
    busy = errors.as_uplink_error(errors.LinkUnavailableError("busy", retry_after_s=7.0))
    assert isinstance(busy, errors.UplinkUnavailableError)
    assert (busy.code, busy.retry_after_s, str(busy)) == ("uplink.unavailable", 7.0, "busy")
    tls = errors.as_uplink_error(errors.LinkTLSError("certificate refused"))
    assert isinstance(tls, errors.UplinkTLSError)
    assert tls.code == "uplink.tls"
    refused = errors.as_uplink_error(errors.LinkRefusedError("not authorised", reason_code=0x87))
    assert isinstance(refused, errors.UplinkRejectedError)
    assert (refused.code, refused.reason_code, refused.retryable) == ("uplink.rejected", 0x87, False)
    plain = errors.as_uplink_error(errors.LinkError("odd"))
    assert isinstance(plain, errors.UplinkUnavailableError)
    assert plain.retry_after_s is None
