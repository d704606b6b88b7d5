"""What a server bound beyond loopback must not leave open: the start-up refusals of
DIMSE and MLLP peers (issue 14, "Transport security"; HTTP auth is `medbridge/auth.py`).

Open peers are convenient on a developer's machine and a hole on a hospital network, so
off loopback they must be chosen explicitly: an allowed list, or `--dicom-open` /
`--mllp-open`. Each refusal is one line that says why and what to do.
"""

from __future__ import annotations

from medbridge.auth import is_loopback
from medbridge.settings import Settings


class ExposureRefused(Exception):
    """The settings would open a port to any peer on a network: do not start."""


def dicom_open(settings: Settings) -> bool:
    """Whether unlisted calling AE titles are accepted (unset: only on loopback)."""
    if settings.dicom_open is None:
        return is_loopback(settings.host)
    return settings.dicom_open


def mllp_open(settings: Settings) -> bool:
    """Whether MLLP accepts every peer (no list given; unset: only on loopback)."""
    if settings.mllp_allowed_peers.strip():
        return False
    if settings.mllp_open is None:
        return is_loopback(settings.host)
    return settings.mllp_open


def check_exposure(settings: Settings) -> None:
    """Raise `ExposureRefused` when, bound beyond loopback, DIMSE or MLLP would accept any
    peer without the operator having said so."""
    if is_loopback(settings.host):
        return
    if settings.dicom_open is None:
        raise ExposureRefused(
            f"refusing to start: bound to {settings.host!r}, the DICOM port would accept any "
            f"calling AE title; list the peers (MEDBRIDGE_DICOM_PEERS_FILE) and set "
            f"MEDBRIDGE_DICOM_OPEN=false, or pass --dicom-open to accept any on purpose"
        )
    if settings.mllp_open is None and not settings.mllp_allowed_peers.strip():
        raise ExposureRefused(
            f"refusing to start: bound to {settings.host!r}, the MLLP port would accept any "
            f"peer; list them (MEDBRIDGE_MLLP_ALLOWED_PEERS), or pass --mllp-open to accept "
            f"any on purpose"
        )
