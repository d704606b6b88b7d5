"""C-FIND at PATIENT, STUDY, SERIES and IMAGE level with dcmtk's findscu as the peer."""

from __future__ import annotations

import io
import uuid
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE

from imaging.dimse.sop_classes import StudyRootFind
from tests.support.dcmtk import findscu, storescu, successes
from tests.support.dicom import renamed
from tests.support.servers import RunningServer


@dataclass
class Archive:
    port: int
    patient: str
    ct_study: str
    ct_series: str
    mr_study: str
    ct_instances: list[str]


@pytest.fixture(scope="module")
def archive(server: RunningServer, tmp_path_factory: pytest.TempPathFactory) -> Archive:
    """Two studies of one patient (CT 2 instances, MR 1) and one study of another."""
    tmp = tmp_path_factory.mktemp("find")
    patient = f"F{uuid.uuid4().hex[:12]}"
    ct_study, ct_series, mr_study = generate_uid(), generate_uid(), generate_uid()
    name = f"Find^{patient}"
    blobs = [
        renamed("CT_small.dcm", study=ct_study, series=ct_series, patient_id=patient,
                PatientName=name, StudyDate="20200101", AccessionNumber=patient[:16])
        for _ in range(2)
    ] + [
        renamed("MR_small.dcm", study=mr_study, patient_id=patient, PatientName=name,
                StudyDate="20210615"),
        renamed("CT_small.dcm", patient_id=f"O{patient}", PatientName=f"Other^{patient}",
                StudyDate="20210615"),
    ]  # fmt: skip
    paths = []
    for n, blob in enumerate(blobs):
        path = tmp / f"{n}.dcm"
        path.write_bytes(blob)
        paths.append(path)
    assert successes(storescu(server.dicom_port, paths)) == 4
    ct_instances = sorted(str(pydicom.dcmread(p).SOPInstanceUID) for p in paths[:2])
    return Archive(server.dicom_port, patient, ct_study, ct_series, mr_study, ct_instances)


def test_patient_level(archive: Archive, tmp_path: Path) -> None:
    _, found = findscu(
        archive.port, "-P", ["QueryRetrieveLevel=PATIENT", f"PatientID={archive.patient}",
        "PatientName", "NumberOfPatientRelatedStudies", "NumberOfPatientRelatedInstances"],
        tmp_path,
    )  # fmt: skip
    assert len(found) == 1
    assert str(found[0].PatientName) == f"Find^{archive.patient}"
    assert int(found[0].NumberOfPatientRelatedStudies) == 2
    assert int(found[0].NumberOfPatientRelatedInstances) == 3


def test_study_level_single_value_wildcard_range_and_uid_list(
    archive: Archive, tmp_path: Path
) -> None:
    base = ["QueryRetrieveLevel=STUDY", "StudyInstanceUID", "ModalitiesInStudy", "StudyDate"]
    _, by_patient = findscu(archive.port, "-S", [*base, f"PatientID={archive.patient}"], tmp_path)
    assert {d.StudyInstanceUID for d in by_patient} == {archive.ct_study, archive.mr_study}
    _, by_name = findscu(
        archive.port, "-S", [*base, f"PatientName=Find^{archive.patient[:6]}*"], tmp_path
    )
    assert {d.StudyInstanceUID for d in by_name} == {archive.ct_study, archive.mr_study}
    _, by_range = findscu(
        archive.port, "-S", [*base, f"PatientID={archive.patient}", "StudyDate=20210101-"],
        tmp_path,
    )  # fmt: skip
    assert [d.StudyInstanceUID for d in by_range] == [archive.mr_study]
    assert by_range[0].StudyDate == "20210615"
    _, by_modality = findscu(
        archive.port, "-S", [*base, f"PatientID={archive.patient}", "ModalitiesInStudy=CT"],
        tmp_path,
    )  # fmt: skip
    assert [d.StudyInstanceUID for d in by_modality] == [archive.ct_study]
    assert by_modality[0].ModalitiesInStudy == "CT"
    uid_list = f"StudyInstanceUID={archive.ct_study}\\{archive.mr_study}"
    _, by_uids = findscu(archive.port, "-S", [*base[:1], uid_list, "PatientID"], tmp_path)
    assert {d.StudyInstanceUID for d in by_uids} == {archive.ct_study, archive.mr_study}
    assert all(d.PatientID == archive.patient for d in by_uids)
    assert all(d.RetrieveAETitle == "MEDBRIDGE" for d in by_uids)


def test_series_and_image_levels(archive: Archive, tmp_path: Path) -> None:
    _, series = findscu(
        archive.port, "-S", ["QueryRetrieveLevel=SERIES", f"StudyInstanceUID={archive.ct_study}",
        "SeriesInstanceUID", "Modality", "NumberOfSeriesRelatedInstances"], tmp_path,
    )  # fmt: skip
    assert len(series) == 1
    assert series[0].SeriesInstanceUID == archive.ct_series
    assert series[0].Modality == "CT"
    assert int(series[0].NumberOfSeriesRelatedInstances) == 2
    _, images = findscu(
        archive.port, "-S", ["QueryRetrieveLevel=IMAGE", f"StudyInstanceUID={archive.ct_study}",
        f"SeriesInstanceUID={archive.ct_series}", "SOPInstanceUID", "SOPClassUID"], tmp_path,
    )  # fmt: skip
    assert sorted(str(d.SOPInstanceUID) for d in images) == archive.ct_instances
    assert {d.SOPClassUID for d in images} == {"1.2.840.10008.5.1.4.1.1.2"}
    _, patient_root = findscu(
        archive.port, "-P", ["QueryRetrieveLevel=IMAGE", f"PatientID={archive.patient}",
        f"SOPInstanceUID={archive.ct_instances[0]}", "StudyInstanceUID"], tmp_path,
    )  # fmt: skip
    assert [d.StudyInstanceUID for d in patient_root] == [archive.ct_study]


def test_no_match_is_success_without_responses(archive: Archive, tmp_path: Path) -> None:
    output, found = findscu(
        archive.port, "-S", ["QueryRetrieveLevel=STUDY", "PatientID=NOBODY-" + archive.patient],
        tmp_path,
    )  # fmt: skip
    assert found == []
    assert "Received Final Find Response (Success)" in output


# enough matches that the peer's C-CANCEL, sent after the first response, arrives while
# responses are still being sent even on a busy machine
MANY = 400


def test_cancel_is_honoured(server: RunningServer, tmp_path: Path) -> None:
    study, series = generate_uid(), generate_uid()
    paths = []
    for n in range(MANY):
        path = tmp_path / f"{n}.dcm"
        path.write_bytes(renamed("CT_small.dcm", study=study, series=series, patient_id="CANCEL"))
        paths.append(path)
    assert successes(storescu(server.dicom_port, paths)) == MANY
    output, found = findscu(
        server.dicom_port, "-S", ["QueryRetrieveLevel=IMAGE", f"StudyInstanceUID={study}",
        f"SeriesInstanceUID={series}", "SOPInstanceUID"], tmp_path / "out", "FINDSCU",
        "--cancel", "1",
    )  # fmt: skip
    assert "Received Final Find Response (Cancel" in output, output[-2000:]
    assert 1 <= len(found) < MANY


def test_level_not_in_the_model_is_a900(archive: Archive) -> None:
    ae = AE(ae_title="FINDSCU")
    ae.add_requested_context(StudyRootFind)
    assoc = ae.associate("127.0.0.1", archive.port, ae_title="MEDBRIDGE")
    assert assoc.is_established
    query = Dataset()
    query.QueryRetrieveLevel = "PATIENT"  # Study Root has no PATIENT level
    query.PatientID = archive.patient
    try:
        statuses = [int(status.Status) for status, _ in assoc.send_c_find(query, StudyRootFind)]
    finally:
        assoc.release()
    assert statuses == [0xA900]


def test_responses_are_readable_part10(archive: Archive, tmp_path: Path) -> None:
    _, found = findscu(
        archive.port, "-S", ["QueryRetrieveLevel=STUDY", f"StudyInstanceUID={archive.mr_study}",
        "PatientName", "StudyDescription"], tmp_path,
    )  # fmt: skip
    assert len(found) == 1
    again = io.BytesIO()
    found[0].save_as(again)
    assert "StudyDescription" in found[0]
