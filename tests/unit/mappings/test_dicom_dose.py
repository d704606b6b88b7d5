"""mappings.dicom.dose: dose SR content tree -> DLP / CTDIvol -> a valid Observation."""

from __future__ import annotations

import io

import pydicom

from mappings.dicom.dose import dose_observation, dose_values
from profiles.validator import validate
from tests.support.dicom import dose_report, renamed


def test_dose_values_from_the_content_tree() -> None:
    ds = pydicom.dcmread(io.BytesIO(dose_report("1.2.3", "P", 512.5, [10.5, 14.25, 9.0])))
    assert dose_values(ds) == {"dlp_total": 512.5, "ctdivol": 14.25}


def test_other_objects_have_no_dose() -> None:
    assert dose_values(pydicom.dcmread(io.BytesIO(renamed("CT_small.dcm")))) == {}


def test_dose_observation_is_valid_and_linked() -> None:
    observation = dose_observation(
        {"dlp_total": 512.5, "ctdivol": 14.25}, "ImagingStudy/1.2.3", "Patient/p", "1.2.3.4"
    )
    assert observation["valueQuantity"] == {
        "value": 512.5, "unit": "mGy.cm", "system": "http://unitsofmeasure.org", "code": "mGy.cm",
    }  # fmt: skip
    assert observation["component"][0]["valueQuantity"]["value"] == 14.25
    assert observation["partOf"] == [{"reference": "ImagingStudy/1.2.3"}]
    assert validate(observation) == []
