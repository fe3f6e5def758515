"""TLS for the uplink: TLS 1.2+, server always verified, private CA pinning, client certs."""

from __future__ import annotations

import ssl
from pathlib import Path

from edge.config import TlsConfig
from edge.errors import LinkTLSError

# files -> (their stat signatures, context): a reconnect (every device's southbound link, the
# uplink) reuses the context until a file changes, instead of re-reading and re-parsing the
# CA, certificate and key on the event loop each time (issue 14 #7)
_CONTEXTS: dict[tuple[str | None, ...], tuple[tuple[tuple[int, ...], ...], ssl.SSLContext]] = {}


def _signatures(files: tuple[str | None, ...]) -> tuple[tuple[int, ...], ...] | None:
    try:
        stats = [Path(f).stat() for f in files if f]
    except OSError:
        return None  # not cached: building the context reports the unusable file
    return tuple((s.st_mtime_ns, s.st_ctime_ns, s.st_size, s.st_ino) for s in stats)


def client_context(tls: TlsConfig, base_dir: Path | None = None) -> ssl.SSLContext:
    """Return a verifying client context; raise LinkTLSError when a file is unusable.

    With ``ca_file`` only that CA is trusted (pinning a private CA); without it the system
    store is. There is no switch to turn verification off.
    """

    def path(value: str) -> str:
        p = Path(value)
        return str(p if p.is_absolute() or base_dir is None else base_dir / p)

    files = tuple(path(f) if f else None for f in (tls.ca_file, tls.cert_file, tls.key_file))
    signatures = _signatures(files)
    cached = _CONTEXTS.get(files)
    if cached is not None and signatures is not None and cached[0] == signatures:
        return cached[1]
    ctx = _build(files)
    if signatures is not None:
        _CONTEXTS[files] = (signatures, ctx)
    return ctx


def _build(files: tuple[str | None, ...]) -> ssl.SSLContext:
    ca_file, cert_file, key_file = files
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED + check_hostname
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        if ca_file:
            ctx.load_verify_locations(cafile=ca_file)
        else:
            ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
        if cert_file and key_file:
            ctx.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as exc:
        raise LinkTLSError(f"TLS files unusable: {exc}") from exc
    return ctx
