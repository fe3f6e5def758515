"""Issue 14 finding 7: secrets and TLS files are read once, and again only when they change
(every southbound reconnect of every device re-read them on the event loop)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edge.config import TlsConfig
from edge.errors import SecretError
from edge.security.secrets import read_secret
from edge.transports.tls import client_context
from hil.pki import Pki


def test_a_secret_is_read_once_until_its_file_changes(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "password"
    path.write_text("first-long-secret-1\n", encoding="utf-8")
    path.chmod(0o600)
    reads: list[Path] = []
    real = Path.read_text

    def counting(self: Path, *args: object, **kwargs: object) -> str:
        reads.append(self)
        return real(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "read_text", counting)
    for _ in range(5):
        assert read_secret(path, "southbound password") == "first-long-secret-1"
    assert reads == [path]
    tmp = tmp_path / "password.new"  # rotated the usual way: a new file renamed over it
    tmp.write_text("second-long-secret-2\n", encoding="utf-8")
    tmp.chmod(0o600)
    tmp.replace(path)
    assert read_secret(path, "southbound password") == "second-long-secret-2"
    path.chmod(0o644)  # a mode that opens up is refused at once, cached value or not
    with pytest.raises(SecretError, match="0644"):
        read_secret(path, "southbound password")
    path.unlink()
    with pytest.raises(SecretError, match="cannot read"):
        read_secret(path, "southbound password")


def test_a_tls_context_is_built_once_until_a_file_changes(tmp_path: Path, pki: Pki) -> None:
    key = tmp_path / "gateway.key"
    key.write_bytes(pki.key("gateway").read_bytes())
    key.chmod(0o600)
    tls = TlsConfig(ca_file=str(pki.cert("ca")), cert_file=str(pki.cert("gateway")),
                    key_file=str(key))
    first = client_context(tls)
    assert client_context(tls) is first
    assert client_context(TlsConfig(ca_file=str(pki.cert("ca")))) is not first
    stat = key.stat()
    os.utime(key, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # key rotated
    assert client_context(tls) is not first
