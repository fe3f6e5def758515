"""Operations details: JSON logs under journald, certificate expiry warnings."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
from pathlib import Path

import pytest

from edge.config_loader import load_config
from edge.ops.logs import JsonFormatter, configure
from edge.preflight import check_certificates
from hil.pki import Pki, ensure_pki, issue, write_cert
from tests.cfg import write_config


def test_json_logs_under_journald(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOURNAL_STREAM", "8:1234")
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        configure("INFO")
        handler = root.handlers[0]
        assert isinstance(handler.formatter, JsonFormatter)
        handler.setStream(stream)  # type: ignore[attr-defined]
        logging.getLogger("edge.test").warning("device %s failing: %s", "mh-1", "no answer")
    finally:
        root.handlers[:], root.level = saved[0], saved[1]
    doc = json.loads(stream.getvalue().strip().splitlines()[-1])
    assert doc["level"] == "WARNING"
    assert doc["logger"] == "edge.test"
    assert doc["msg"] == "device mh-1 failing: no answer"


def test_certificate_expiring_within_30_days_warns(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    pki: Pki = ensure_pki(tmp_path / "pki")
    ca_key = load_pem_private_key(pki.key("ca").read_bytes(), None)
    from cryptography import x509

    ca_cert = x509.load_pem_x509_certificate(pki.cert("ca").read_bytes())
    _key, soon = issue(ca_key, ca_cert, "gateway", server=False,  # type: ignore[arg-type]
                       not_after=dt.datetime.now(dt.UTC) + dt.timedelta(days=10))
    write_cert(pki.cert("gateway"), soon)
    loaded = write_config(tmp_path / "gw", broker_port=1, pki=pki, devices=[], buses=[])
    checks = {c.name: c for c in check_certificates(load_config(loaded.path))}
    assert checks["client certificate"].status == "warn"
    assert "expires in" in checks["client certificate"].detail
    assert checks["CA"].status == "ok"
