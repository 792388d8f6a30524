"""bvh_ops.tls: one default TLS context shared by our HTTP clients, built again when the CA
bundle settings httpx reads (SSL_CERT_FILE, SSL_CERT_DIR) change."""

from __future__ import annotations

import ssl

import certifi
import pytest

from bvh_ops.tls import default_context


def test_one_context_is_shared_until_the_bundle_setting_changes(monkeypatch, tmp_path):
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    first = default_context()
    assert default_context() is first
    assert first.verify_mode is ssl.CERT_REQUIRED and first.check_hostname
    bundle = tmp_path / "ca.pem"
    bundle.write_bytes(open(certifi.where(), "rb").read())
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    other = default_context()
    assert other is not first and default_context() is other


def test_a_bundle_setting_that_cannot_load_is_an_error_not_a_silent_default(monkeypatch, tmp_path):
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "missing.pem"))
    with pytest.raises(OSError):
        default_context()
