"""TLS for the uplink: TLS 1.2+, server always verified, private CA pinning, client certs."""

from __future__ import annotations

import ssl
from pathlib import Path

from edge.config import TlsConfig
from edge.errors import UplinkTLSError


def client_context(tls: TlsConfig, base_dir: Path | None = None) -> ssl.SSLContext:
    """Return a verifying client context; raise UplinkTLSError when a file is unusable.

    With ``ca_file`` only that CA is trusted (pinning a private CA); without it the system
    store is. There is no switch to turn verification off.
    """

    def path(value: str) -> str:
        p = Path(value)
        return str(p if p.is_absolute() or base_dir is None else base_dir / p)

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED + check_hostname
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        if tls.ca_file:
            ctx.load_verify_locations(cafile=path(tls.ca_file))
        else:
            ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
        if tls.cert_file and tls.key_file:
            ctx.load_cert_chain(path(tls.cert_file), path(tls.key_file))
    except (OSError, ssl.SSLError) as exc:
        raise UplinkTLSError(f"TLS files unusable: {exc}") from exc
    return ctx
