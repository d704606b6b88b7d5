"""Every DICOM file bundled with pydicom gets a clear answer from the ingest checks.

Source: pydicom's own test files (pydicom/data/test_files, installed with pydicom; MIT,
see that folder's README for each file's origin: vendors' CT/MR/US/RT objects in many
transfer syntaxes, plus deliberately broken files). Each is either accepted with its
UIDs or refused with an MB-3xxx code whose DIMSE status is a failure; never a crash.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pydicom
import pytest

from access.errors import AccessError
from imaging.parse import Limits, metadata_of, parse
from tests.support.dicom import sample_path

FILES = sorted(sample_path("CT_small.dcm").parent.glob("*.dcm"))
REFUSAL_STATUSES = {0xA700, 0xA900, 0xC000}
HEADER_CHECKS = {"MB-3020", "MB-3021"}  # docs/dicom.md "Header checks"
# samples that really contradict themselves (docs/dicom.md "Header checks"): refused
INCONSISTENT = {
    "badVR.dcm": "MB-3020",  # NumberOfFrames "1A"
    "rtdose.dcm": "MB-3021",  # MediaStorageSOPInstanceUID 1.2.999... vs SOPInstanceUID 1.9.999...
    "rtdose_1frame.dcm": "MB-3021",
    "rtdose_expb.dcm": "MB-3021",
    "rtdose_expb_1frame.dcm": "MB-3021",
    "rtplan.dcm": "MB-3021",  # MediaStorageSOPInstanceUID 1.2.999... vs 1.2.777...
}


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_each_sample_is_accepted_or_refused_with_a_status(path: Path) -> None:
    data = path.read_bytes()
    refusal: AccessError | None = None
    try:
        parsed = parse(data, Limits())
    except AccessError as error:
        refusal = error
    if refusal is not None:
        assert refusal.code.startswith("MB-30")
        assert (refusal.code in HEADER_CHECKS) == (path.name in INCONSISTENT), refusal.code
        assert refusal.entry.dimse in REFUSAL_STATUSES
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the broken samples warn; the answer is what counts
        header = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    assert parsed.sop == str(header.SOPInstanceUID)
    assert parsed.study == str(header.StudyInstanceUID)
    assert metadata_of(data).startswith(b"{")


@pytest.mark.parametrize("name", sorted(INCONSISTENT))
def test_inconsistent_samples_are_refused_by_the_header_checks(name: str) -> None:
    with pytest.raises(AccessError) as refused:
        parse(sample_path(name).read_bytes(), Limits())
    assert refused.value.code == INCONSISTENT[name]
    assert refused.value.entry.dimse == 0xA900
