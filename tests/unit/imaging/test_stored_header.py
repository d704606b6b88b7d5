"""A C-STORE's access is described from the instance's leading elements only.

`stored_header` runs on the association's thread for every C-STORE before the ingest
parses the whole instance (issue 12's benchmark: framing all ~280 elements of a CT slice
twice was a measurable share of a small C-STORE), so it frames up to its last
identifying element and no further.
"""

from __future__ import annotations

import io

import pydicom
from pydicom.datadict import tag_for_keyword

from access.access import Action
from access.context import Actor, Door, RequestContext
from imaging.dimse.door import LAST_STORED_TAG, dimse_access, stored_header
from imaging.scan import scan
from tests.support.dicom import renamed, sample_bytes


def test_the_header_names_the_instance_its_series_study_and_patient() -> None:
    data = renamed("CT_small.dcm", "1.2.826.0.1.7", "1.2.826.0.1.8", "MRN-12")
    read = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    assert stored_header(data) == {
        "StudyInstanceUID": "1.2.826.0.1.7",
        "SeriesInstanceUID": "1.2.826.0.1.8",
        "SOPInstanceUID": str(read.SOPInstanceUID),
        "PatientID": "MRN-12",
    }


def test_framing_stops_after_the_last_identifying_element() -> None:
    data = sample_bytes("CT_small.dcm")
    whole, leading = scan(data), scan(data, until=LAST_STORED_TAG)
    assert whole is not None
    assert leading is not None
    assert max(leading.elements) <= LAST_STORED_TAG < max(whole.elements)
    assert leading.elements == {t: e for t, e in whole.elements.items() if t <= LAST_STORED_TAG}
    assert leading.pixel_offset is None  # never reached


def test_damage_after_the_identifying_elements_does_not_blind_the_access() -> None:
    # the ingest refuses this instance; its access still names what it is
    data = bytearray(sample_bytes("CT_small.dcm"))
    found = scan(bytes(data))
    assert found is not None
    rows = found.elements[int(tag_for_keyword("Rows") or 0)]
    data[rows[2] - 4 : rows[2] - 2] = b"??"  # an unknown VR in group 0028
    assert scan(bytes(data)) is None
    header = stored_header(bytes(data))
    assert header is not None
    assert header["SOPInstanceUID"]


def test_the_access_of_a_store_carries_the_header() -> None:
    data = renamed("CT_small.dcm", "1.2.826.0.1.7", "1.2.826.0.1.8", "MRN-12")
    header = stored_header(data)
    assert header is not None
    context = RequestContext(Door.DIMSE, actor=Actor("dicom-ae", "CT01"))
    access = dimse_access(Action.C_STORE, context, header, header["SOPInstanceUID"])
    assert access.studies == {"1.2.826.0.1.7"}
    assert access.series == {"1.2.826.0.1.8"}
    assert access.instances == {header["SOPInstanceUID"]}
    assert access.patient_query == (("PatientID", "MRN-12"),)


def test_an_instance_the_walker_cannot_frame_has_no_header() -> None:
    assert stored_header(sample_bytes("image_dfl.dcm")) is None  # deflated: never here
