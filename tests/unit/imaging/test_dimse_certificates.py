"""The peers table's `certificate_cn`: which client certificates may call as an AE title."""

from __future__ import annotations

from pathlib import Path

import pytest

from imaging.dimse.config import DimseConfig, PeersFileError, load_peers


def test_certificate_names_of_a_row(tmp_path: Path) -> None:
    path = tmp_path / "peers.yaml"
    path.write_text(
        "peers:\n"
        "  - {ae_title: CT1, certificate_cn: ct1.radiology.example}\n"
        "  - {ae_title: CT2, certificate_cn: [ct2.radiology.example, ' spare ']}\n"
        "  - {ae_title: PACS}\n"
    )
    config = DimseConfig(peers=load_peers(path), open=True)
    assert config.certificate_names("CT1 ") == {"ct1.radiology.example"}
    assert config.certificate_names("CT2") == {"ct2.radiology.example", "spare"}
    assert config.certificate_names("PACS") == frozenset()
    # an open server admits unlisted titles, but binds no certificate to them
    assert config.peer("UNLISTED") is not None
    assert config.certificate_names("UNLISTED") == frozenset()


@pytest.mark.parametrize("value", ["''", "[]x", "[1]", "{a: b}", "['']"])
def test_bad_certificate_names_are_refused(tmp_path: Path, value: str) -> None:
    path = tmp_path / "peers.yaml"
    path.write_text(f"peers:\n  - ae_title: CT1\n    certificate_cn: {value}\n")
    with pytest.raises(PeersFileError):
        load_peers(path)
