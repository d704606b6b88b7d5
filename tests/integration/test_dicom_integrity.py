"""Radiology loop integrity on the DICOM side (issue 11): one instance whichever door,
upkeep that parks instead of looping, rendering of every served transfer syntax, and
Encapsulated PDF instances as DocumentReferences."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import FileMetaDataset
from pydicom.uid import generate_uid

from imaging.same_instance import data_set_offset
from medbridge.embedded_mongo import EmbeddedMongo
from tests.integration.test_dicomweb_fhir_link import stow
from tests.support import dcmtk
from tests.support.dicom import SAMPLES, renamed
from tests.support.servers import RunningServer, start_server

RETRY_ENV = {
    "MEDBRIDGE_DICOM_UPKEEP_RETRY_SECONDS": "0.2",
    "MEDBRIDGE_DICOM_UPKEEP_MAX_ATTEMPTS": "3",
}


@pytest.fixture(scope="module")
def archive(
    tmp_path_factory: pytest.TempPathFactory, store: EmbeddedMongo
) -> Iterator[RunningServer]:
    """A server of its own: quick upkeep retries, and a data directory for `dicom pending`."""
    running = start_server(tmp_path_factory.mktemp("integrity"), store.uri, env=RETRY_ENV)
    yield running
    running.stop()


def uids(data: bytes) -> pydicom.Dataset:
    return pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)


def with_other_meta(data: bytes) -> bytes:
    """The same data set bytes behind another File Meta Information (another writer)."""
    start = data_set_offset(data)
    assert start is not None
    dataset = uids(data)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = dataset.file_meta.MediaStorageSOPClassUID
    meta.MediaStorageSOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID
    meta.TransferSyntaxUID = dataset.file_meta.TransferSyntaxUID
    meta.ImplementationClassUID = "1.2.826.0.1.3680043.10.1234"
    meta.ImplementationVersionName = "OTHER_DOOR"
    meta.SourceApplicationEntityTitle = "WORKSTATION"
    out = io.BytesIO()
    out.write(b"\0" * 128 + b"DICM")
    pydicom.filewriter.write_file_meta_info(out, meta, enforce_standard=True)
    return out.getvalue() + data[start:]


def retrieve(server: RunningServer, dataset: pydicom.Dataset) -> bytes:
    """The stored instance as WADO-RS answers it (multipart, one part)."""
    url = (
        f"{server.base_url}/dicomweb/studies/{dataset.StudyInstanceUID}/series/"
        f"{dataset.SeriesInstanceUID}/instances/{dataset.SOPInstanceUID}"
    )
    response = httpx.get(url, headers={"Accept": "multipart/related; type=\"application/dicom\""},
                         timeout=30.0)  # fmt: skip
    assert response.status_code == 200, response.text
    boundary = response.headers["content-type"].split("boundary=")[1].strip('"')
    part = response.content.split(f"--{boundary}".encode())[1]
    return part.split(b"\r\n\r\n", 1)[1].removesuffix(b"\r\n")


def instance_count(server: RunningServer, dataset: pydicom.Dataset) -> int:
    url = f"{server.base_url}/dicomweb/studies/{dataset.StudyInstanceUID}/instances"
    response = httpx.get(url, timeout=30.0)
    assert response.status_code == 200, response.text
    return len(response.json())


def stored_objects(server: RunningServer, dataset: pydicom.Dataset) -> list[Path]:
    """The archive's objects of this instance (its key names the SOP Instance UID)."""
    return [p for p in (server.data_dir / "objects").rglob("*") if dataset.SOPInstanceUID in p.name
            or dataset.SOPInstanceUID in str(p.parent)]  # fmt: skip


def dcmtk_encoded(tmp_path: Path, name: str, **attributes: object) -> Path:
    """A sample written by dcmtk itself, so storescu sends its data set unchanged."""
    source, target = tmp_path / f"pydicom-{name}", tmp_path / f"dcmtk-{name}"
    source.write_bytes(renamed(name, **attributes))
    subprocess.run([str(dcmtk.BIN / "dcmconv"), str(source), str(target)], check=True)
    return target


def stow_status(response: httpx.Response) -> tuple[int, list[Any]]:
    body = response.json() if response.content else {}
    return response.status_code, body.get("00081198", {}).get("Value", [])


# duplicates across doors -------------------------------------------------------------


def test_stow_then_c_store_of_the_same_data_set_is_one_instance(
    archive: RunningServer, tmp_path: Path
) -> None:
    path = dcmtk_encoded(tmp_path, "MR_small_implicit.dcm")
    data = path.read_bytes()
    dataset = uids(data)
    status, failed = stow_status(stow(archive, [data]))
    assert (status, failed) == (200, [])
    output = dcmtk.storescu(archive.dicom_port, [path])
    assert dcmtk.successes(output) == 1, output
    assert "0x0111" not in output
    assert "Duplicate" not in output
    assert instance_count(archive, dataset) == 1
    kept = [p for p in stored_objects(archive, dataset) if p.is_file()]
    assert len(kept) == 1, kept  # no second copy: the STOW copy stays as it was
    assert kept[0].read_bytes() == data


def test_c_store_then_stow_of_the_same_data_set_is_one_instance(
    archive: RunningServer, tmp_path: Path
) -> None:
    path = tmp_path / "ct.dcm"
    path.write_bytes(renamed("CT_small.dcm"))
    dataset = uids(path.read_bytes())
    assert dcmtk.successes(dcmtk.storescu(archive.dicom_port, [path])) == 1
    stored = retrieve(archive, dataset)
    again = with_other_meta(stored)
    assert again != stored  # only the File Meta Information differs
    status, failed = stow_status(stow(archive, [again]))
    assert (status, failed) == (200, [])
    assert instance_count(archive, dataset) == 1
    assert retrieve(archive, dataset) == stored
    assert len([p for p in stored_objects(archive, dataset) if p.is_file()]) == 1


def test_other_data_set_under_the_same_uid_is_still_refused(
    archive: RunningServer, tmp_path: Path
) -> None:
    data = renamed("CT_small.dcm")
    dataset = uids(data)
    assert stow_status(stow(archive, [data])) == (200, [])
    changed = pydicom.dcmread(io.BytesIO(data))
    changed.StudyDescription = "another description"
    path = tmp_path / "changed.dcm"
    changed.save_as(path, enforce_file_format=True)
    output = dcmtk.storescu(archive.dicom_port, [path])
    assert dcmtk.successes(output) == 0
    assert "Status: 0x111" in output, output
    status, failed = stow_status(stow(archive, [path.read_bytes()]))
    assert status == 409
    assert failed[0]["00081197"]["Value"] == [0x0111]
    assert instance_count(archive, dataset) == 1


# rendering ---------------------------------------------------------------------------


# one pydicom sample per transfer syntax /frames serves (tests/unit/imaging/test_render.py
# holds every sample): JPEG extended, lossless SV1, JPEG-LS, JPEG 2000 beside SAMPLES
RENDERED = [*SAMPLES, "JPGExtended.dcm", "SC_rgb_jpeg_gdcm.dcm",
            "MR_small_jpeg_ls_lossless.dcm", "693_J2KI.dcm"]  # fmt: skip


@pytest.mark.parametrize("name", RENDERED)
def test_rendered_and_thumbnail_for_every_served_transfer_syntax(
    archive: RunningServer, name: str
) -> None:
    data = renamed(name)
    dataset = uids(data)
    assert stow_status(stow(archive, [data])) == (200, [])
    base = (
        f"{archive.base_url}/dicomweb/studies/{dataset.StudyInstanceUID}/series/"
        f"{dataset.SeriesInstanceUID}/instances/{dataset.SOPInstanceUID}"
    )
    frame = httpx.get(f"{base}/frames/1", timeout=30.0)
    assert frame.status_code == 200, frame.text
    full = pydicom.dcmread(io.BytesIO(data))
    for path, media, largest in (
        ("rendered", "image/png", max(int(full.Rows), int(full.Columns))),
        ("rendered", "image/jpeg", max(int(full.Rows), int(full.Columns))),
        ("thumbnail", "image/png", 128),
    ):
        response = httpx.get(f"{base}/{path}", headers={"Accept": media}, timeout=30.0)
        assert response.status_code == 200, (path, media, response.text)
        assert response.headers["content-type"].startswith(media)
        image = Image.open(io.BytesIO(response.content))
        assert image.format == ("PNG" if media == "image/png" else "JPEG")
        assert max(image.size) == min(largest, max(int(full.Rows), int(full.Columns)))


# upkeep: retried with backoff, then parked; `medbridge dicom pending` ----------------


def pending_command(server: RunningServer, *extra: str) -> dict[str, Any]:
    """`medbridge dicom pending --json` as an operator runs it beside the server."""
    done = subprocess.run(
        [sys.executable, "-m", "medbridge", "dicom", "pending", "--json",
         "--data-dir", str(server.data_dir), *extra],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def row_of(answer: dict[str, Any], study: str) -> dict[str, Any] | None:
    return next((row for row in answer["studies"] if row["study"] == study), None)


def wait_parked(server: RunningServer, study: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        row = row_of(pending_command(server), study)
        if row is not None and row["parked"]:
            return row
        assert time.monotonic() < deadline, row
        time.sleep(0.5)


def test_failing_upkeep_is_retried_then_parked_and_listed(archive: RunningServer) -> None:
    # a Modality whose value is no FHIR code (two inner spaces): the ImagingStudy write
    # answers 422 every time, a failure that no retry can cure
    data = renamed("CT_small.dcm", Modality="C  T")
    study = str(uids(data).StudyInstanceUID)
    assert stow_status(stow(archive, [data])) == (200, [])
    row = wait_parked(archive, study)
    assert row["attempts"] == 3
    assert "ImagingStudy write answered 422" in row["reason"]
    assert row["next_try"] is None
    assert row["last_failure"]
    warnings = archive.log().count("ImagingStudy upkeep parked")
    time.sleep(3)  # parked: no more attempts, no more warnings
    again = row_of(pending_command(archive), study)
    assert again is not None
    assert again["attempts"] == 3
    assert again["parked"]
    assert archive.log().count("ImagingStudy upkeep parked") == warnings
    assert httpx.get(f"{archive.fhir_base}/ImagingStudy/{study}").status_code == 404
    # --retry runs it once more at once: the attempts start again and it waits for the next
    retried = pending_command(archive, "--retry", "--study", study)
    assert retried["retried"] == [study]
    assert retried["linked"] == []
    after = row_of(retried, study)
    assert after is not None
    assert after["attempts"] == 1
    assert not after["parked"]
    assert after["next_try"] is not None
    assert wait_parked(archive, study)["attempts"] == 3


def test_linked_study_is_not_pending_and_retry_links_it(archive: RunningServer) -> None:
    data = renamed("CT_small.dcm", PatientID="INTEGRITY-1")
    study = str(uids(data).StudyInstanceUID)
    assert stow_status(stow(archive, [data])) == (200, [])
    deadline = time.monotonic() + 30
    while httpx.get(f"{archive.fhir_base}/ImagingStudy/{study}").status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert row_of(pending_command(archive), study) is None
    retried = pending_command(archive, "--retry", "--study", study)
    assert retried["linked"] == [study]
    assert row_of(retried, study) is None


# Encapsulated PDF -> DocumentReference -------------------------------------------------

PDF = (
    b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
    b"2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n"
    b"3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 200 200]>>endobj\n"
    b"trailer<</Root 1 0 R>>\n%%EOF\n"
)


def encapsulated_pdf(patient_id: str) -> bytes:
    ds = pydicom.Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.104.1"
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID, ds.PatientName = patient_id, "Document^Patient"
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "DOC", 1, 1
    ds.DocumentTitle = "Radiology report"
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.BurnedInAnnotation = "YES"
    ds.EncapsulatedDocument = PDF
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def test_encapsulated_pdf_gets_a_document_reference(archive: RunningServer, tmp_path: Path) -> None:
    data = encapsulated_pdf("PDF-" + generate_uid()[-12:])
    header = uids(data)
    path = tmp_path / "report.dcm"
    path.write_bytes(data)
    assert dcmtk.successes(dcmtk.storescu(archive.dicom_port, [path])) == 1
    study = str(header.StudyInstanceUID)
    fhir = httpx.Client(base_url=archive.fhir_base, timeout=30.0)
    deadline = time.monotonic() + 30
    while True:
        found = fhir.get(
            "/DocumentReference", params={"identifier": f"urn:oid:{header.SOPInstanceUID}"}
        )
        entries = found.json().get("entry", [])
        if entries:
            break
        assert time.monotonic() < deadline, found.text
        time.sleep(0.3)
    assert len(entries) == 1
    document = entries[0]["resource"]
    imaging_study = fhir.get(f"/ImagingStudy/{study}").json()
    assert document["status"] == "current"
    assert document["subject"] == imaging_study["subject"]
    assert document["context"]["related"] == [{"reference": f"ImagingStudy/{study}"}]
    assert document["identifier"] == [
        {"system": "urn:dicom:uid", "value": f"urn:oid:{header.SOPInstanceUID}"}
    ]
    (content,) = document["content"]
    attachment = content["attachment"]
    assert attachment["contentType"] == "application/pdf"
    assert attachment["url"] == (
        f"{archive.base_url}/dicomweb/studies/{study}/series/{header.SeriesInstanceUID}"
        f"/instances/{header.SOPInstanceUID}/bulkdata/00420011"
    )
    # the URL serves the PDF's bytes (one octet-stream part; OB padded to an even length)
    response = httpx.get(attachment["url"], timeout=30.0)
    assert response.status_code == 200
    boundary = response.headers["content-type"].split("boundary=")[1].strip('"')
    part = response.content.split(f"--{boundary}".encode())[1]
    body = part.split(b"\r\n\r\n", 1)[1].removesuffix(b"\r\n")
    assert body.rstrip(b"\0") == PDF.rstrip(b"\0")
    patient = fhir.get(f"/{document['subject']['reference']}").json()
    assert patient["identifier"][0]["value"] == header.PatientID
    fhir.close()


def test_pending_without_a_running_server_reads_the_store(
    tmp_path: Path, store: EmbeddedMongo
) -> None:
    server = start_server(tmp_path / "stopped", store.uri, env=RETRY_ENV)
    try:
        data = renamed("CT_small.dcm", Modality="C  T")
        study = str(uids(data).StudyInstanceUID)
        assert stow_status(stow(server, [data])) == (200, [])
        wait_parked(server, study)
    finally:
        server.stop()
    assert not (server.data_dir / "server.json").exists()
    store_args = ("--mongodb-uri", store.uri, "--database", server.database)
    row = row_of(pending_command(server, *store_args), study)
    assert row is not None
    assert row["parked"]
    assert row["attempts"] == 3
    retried = pending_command(server, "--retry", *store_args)
    assert retried["retried"] == [study]
    assert retried["linked"] == []
    after = row_of(retried, study)
    assert after is not None
    assert after["attempts"] == 1
