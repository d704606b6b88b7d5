"""medbridge/exposure.py: off loopback, DIMSE and MLLP open to anyone only on purpose."""

from __future__ import annotations

import pytest

from medbridge.exposure import ExposureRefused, check_exposure, dicom_open, mllp_open
from medbridge.settings import Settings


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost"])
def test_loopback_defaults_are_open_and_start(host: str) -> None:
    settings = Settings(host=host)
    check_exposure(settings)
    assert dicom_open(settings)
    assert mllp_open(settings)


def test_network_defaults_refuse_dicom_first() -> None:
    with pytest.raises(ExposureRefused, match="DICOM port would accept any calling AE title"):
        check_exposure(Settings(host="0.0.0.0"))


def test_network_with_dicom_decided_refuses_open_mllp() -> None:
    for decided in (True, False):
        settings = Settings(host="10.0.0.5", dicom_open=decided)
        with pytest.raises(ExposureRefused, match="MLLP port would accept any peer"):
            check_exposure(settings)
        assert dicom_open(settings) is decided


def test_network_with_explicit_choices_starts() -> None:
    explicit = Settings(host="0.0.0.0", dicom_open=True, mllp_open=True)
    check_exposure(explicit)
    assert dicom_open(explicit)
    assert mllp_open(explicit)
    listed = Settings(host="0.0.0.0", dicom_open=False, mllp_allowed_peers="10.0.0.0/8")
    check_exposure(listed)
    assert not dicom_open(listed)
    assert not mllp_open(listed)


def test_network_defaults_are_closed_where_asked() -> None:
    assert not dicom_open(Settings(host="0.0.0.0"))
    assert not mllp_open(Settings(host="0.0.0.0"))
    # a list always closes MLLP to the rest, even with --mllp-open
    assert not mllp_open(Settings(host="127.0.0.1", mllp_open=True, mllp_allowed_peers="::1"))


def test_environment_counts_as_explicit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDBRIDGE_DICOM_OPEN", "false")
    monkeypatch.setenv("MEDBRIDGE_MLLP_OPEN", "true")
    settings = Settings(host="0.0.0.0")
    check_exposure(settings)
    assert not dicom_open(settings)
    assert mllp_open(settings)
