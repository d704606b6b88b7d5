"""audit/sink_transport.py: what names a collector, and the settings that must stop the
start rather than send audit events somewhere unintended."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from audit.sink_transport import Target, parse_target, sink_config
from tests.support.pki import make_pki


def config(url: str, **files: Path | None) -> object:
    return sink_config(url, files.get("ca"), files.get("cert"), files.get("key"), "mb", 1.0, 5.0)


def test_targets() -> None:
    assert parse_target("tls://siem.example:6514") == Target("tls", "siem.example", 6514)
    assert parse_target("tcp://[::1]:514") == Target("tcp", "::1", 514)
    assert str(Target("tcp", "::1", 514)) == "tcp://[::1]:514"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("udp://siem.example:514", "must be tls://host:port"),
        ("siem.example:6514", "must be tls://host:port"),
        ("tls://siem.example", "needs a host and a port"),
        ("tls://siem.example:0", "needs a host and a port"),
        ("tls://siem.example:99999", "out of range"),
        ("tls://siem.example:6514/audit", "only scheme://host:port"),
        ("tcp://siem.example:514", "only to a loopback collector"),
        ("tcp://10.0.0.5:514", "only to a loopback collector"),
    ],
)
def test_wrong_targets_say_why(url: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        config(url)


def test_plain_tcp_to_loopback_has_no_tls() -> None:
    made = sink_config("tcp://127.0.0.1:514", None, None, None, "mb", 1.0, 5.0)
    assert made.context is None


def test_plain_tcp_with_tls_files_is_a_mistake(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    with pytest.raises(ValueError, match="unused"):
        config("tcp://localhost:514", ca=pki.ca)


def test_tls_checks_the_collector_and_shows_our_certificate(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    made = sink_config(
        "tls://localhost:6514", pki.ca, pki.client_cert, pki.client_key, "mb", 1.0, 5.0
    )
    assert made.context is not None
    assert made.context.verify_mode == ssl.CERT_REQUIRED
    assert made.context.check_hostname
    assert made.context.minimum_version == ssl.TLSVersion.TLSv1_2


def test_unusable_tls_files_say_so(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    with pytest.raises(ValueError, match="needs its private key"):
        config("tls://localhost:6514", cert=pki.client_cert)
    with pytest.raises(ValueError, match="TLS files unusable"):
        config("tls://localhost:6514", ca=tmp_path / "missing.pem")
    with pytest.raises(ValueError, match="TLS files unusable"):
        config("tls://localhost:6514", cert=pki.client_cert, key=pki.server_key)  # not its key


def test_app_name_is_checked() -> None:
    with pytest.raises(ValueError, match="APP-NAME"):
        sink_config("tls://localhost:6514", None, None, None, "med bridge", 1.0, 5.0)
