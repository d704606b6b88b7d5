"""C-ECHO and C-STORE through the real server, with dcmtk's echoscu/storescu as peers."""

from __future__ import annotations

import hashlib
import io
import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from pydicom.uid import generate_uid
from pymongo import AsyncMongoClient
from pynetdicom import AE, StoragePresentationContexts

from tests.support.dcmtk import run, storescu, successes, transfer_syntax
from tests.support.dicom import base_dataset, part10, renamed
from tests.support.servers import RunningServer

Client = AsyncMongoClient[dict[str, object]]
# one sample per transfer syntax the issue lists: stored as received, never transcoded
BY_SYNTAX = {
    "1.2.840.10008.1.2": "rtdose_1frame.dcm",
    "1.2.840.10008.1.2.1": "CT_small.dcm",
    "1.2.840.10008.1.2.2": "MR_small_bigendian.dcm",
    "1.2.840.10008.1.2.1.99": "image_dfl.dcm",
    "1.2.840.10008.1.2.4.50": "SC_rgb_small_odd_jpeg.dcm",
    "1.2.840.10008.1.2.4.51": "JPGExtended.dcm",
    "1.2.840.10008.1.2.4.70": "SC_rgb_jpeg_gdcm.dcm",
    "1.2.840.10008.1.2.4.80": "MR_small_jpeg_ls_lossless.dcm",
    "1.2.840.10008.1.2.4.90": "MR_small_jp2klossless.dcm",
    "1.2.840.10008.1.2.4.91": "JPEG2000.dcm",
    "1.2.840.10008.1.2.5": "SC_rgb_rle.dcm",
}


def write(tmp: Path, name: str, data: bytes) -> Path:
    path = tmp / name
    path.write_bytes(data)
    return path


def scu_send(port: int, dataset: pydicom.Dataset, calling: str) -> int:
    """Send one dataset with pynetdicom as the SCU; the C-STORE response status."""
    ae = AE(ae_title=calling)
    ae.requested_contexts = StoragePresentationContexts[:100]
    assoc = ae.associate("127.0.0.1", port, ae_title="MEDBRIDGE")
    assert assoc.is_established
    try:
        answer = assoc.send_c_store(dataset)
        return int(answer.Status)
    finally:
        assoc.release()


def test_echo_from_any_ae_title_on_an_open_server(server: RunningServer, unique: str) -> None:
    calling = f"ANY{unique[:8]}".upper()  # not in any peers table: the default is open
    output = run(
        "echoscu", "-aet", calling, "-aec", "MEDBRIDGE", "127.0.0.1", str(server.dicom_port)
    )
    assert "Received Echo Response (Success)" in output


@pytest.mark.parametrize("syntax", sorted(BY_SYNTAX))
async def test_store_each_transfer_syntax_as_received(
    server: RunningServer, mongo: Client, tmp_path: Path, syntax: str
) -> None:
    path = write(tmp_path, "in.dcm", renamed(BY_SYNTAX[syntax], patient_id="DIMSE-TS"))
    assert transfer_syntax(path) == syntax
    output = storescu(server.dicom_port, [path])
    assert successes(output) == 1, output
    original = pydicom.dcmread(path)
    row: Any = await mongo[server.database]["dicom_instances"].find_one(
        {"_id": original.SOPInstanceUID}
    )
    assert row is not None
    assert row["ts"] == syntax
    stored = pydicom.dcmread(server.data_dir / "objects" / row["key"])
    assert stored.file_meta.TransferSyntaxUID == syntax
    assert stored.PixelData == original.PixelData  # pixel bytes untouched: no transcoding
    assert (
        hashlib.sha256((server.data_dir / "objects" / row["key"]).read_bytes()).hexdigest()
        == (row["sha256"])
    )


def test_same_instance_twice_is_success_and_one_copy(
    server: RunningServer, fhir: httpx.Client, tmp_path: Path
) -> None:
    path = write(tmp_path, "ct.dcm", renamed("CT_small.dcm", patient_id="DIMSE-DUP"))
    output = storescu(server.dicom_port, [path, path])
    assert successes(output) == 2, output
    study = pydicom.dcmread(path).StudyInstanceUID
    output = run(
        "findscu", "-S", "-aec", "MEDBRIDGE", "-k", "QueryRetrieveLevel=STUDY",
        "-k", f"StudyInstanceUID={study}", "-k", "NumberOfStudyRelatedInstances",
        "127.0.0.1", str(server.dicom_port),
    )  # fmt: skip
    assert "NumberOfStudyRelatedInstances" in output
    assert "IS [1 ]" in output


async def test_refused_instances_answer_failure_status_and_are_quarantined(
    server: RunningServer, mongo: Client, unique: str
) -> None:
    calling = f"BAD{unique[:10]}"
    missing = base_dataset()
    del missing.StudyInstanceUID
    missing_bytes = part10(missing)
    assert scu_send(server.dicom_port, pydicom.dcmread(io.BytesIO(missing_bytes)), calling) == (
        0xA900
    )  # data set does not match: a required UID is missing
    first = pydicom.dcmread(io.BytesIO(renamed("CT_small.dcm", patient_id="DIMSE-CONFLICT")))
    assert scu_send(server.dicom_port, first, calling) == 0x0000
    first.StudyDescription = "other content, same SOP Instance UID"
    assert scu_send(server.dicom_port, first, calling) == 0x0111  # duplicate SOP instance
    quarantined = await mongo[server.database]["dicom_quarantine"].find_one(
        {"source": f"dimse:{calling}", "code": "MB-3002"}
    )
    assert quarantined is not None
    assert (server.data_dir / "objects" / str(quarantined["key"])).is_file()
    # the listener is still there for the next peer
    assert "Received Echo Response (Success)" in run(
        "echoscu", "-aec", "MEDBRIDGE", "127.0.0.1", str(server.dicom_port)
    )


def test_stored_study_gets_its_imagingstudy(
    server: RunningServer, fhir: httpx.Client, tmp_path: Path
) -> None:
    path = write(tmp_path, "mr.dcm", renamed("MR_small.dcm", patient_id="DIMSE-FHIR"))
    assert successes(storescu(server.dicom_port, [path])) == 1
    study = pydicom.dcmread(path).StudyInstanceUID
    deadline = time.monotonic() + 30
    response = fhir.get(f"ImagingStudy/{study}")
    while response.status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.2)
        response = fhir.get(f"ImagingStudy/{study}")
    assert response.status_code == 200
    body = response.json()
    assert body["numberOfInstances"] == 1
    assert body["identifier"][0]["value"] == f"urn:oid:{study}"


def test_one_study_over_c_store_and_stow_rs_at_once(server: RunningServer, tmp_path: Path) -> None:
    study = generate_uid()
    series_store, series_stow = generate_uid(), generate_uid()
    dimse_files = [
        write(tmp_path, f"d{n}.dcm", renamed("CT_small.dcm", study=study, series=series_store,
                                            patient_id="DIMSE-BOTH"))
        for n in range(6)
    ]  # fmt: skip
    stow_parts = [
        renamed("CT_small.dcm", study=study, series=series_stow, patient_id="DIMSE-BOTH")
        for _ in range(6)
    ]
    results: dict[str, Any] = {}

    def over_dimse() -> None:
        results["dimse"] = storescu(server.dicom_port, dimse_files)

    def over_stow() -> None:
        boundary = "dimse-and-stow"
        body = (
            b"".join(
                f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + p + b"\r\n"
                for p in stow_parts
            )
            + f"--{boundary}--\r\n".encode()
        )
        content_type = f'multipart/related; type="application/dicom"; boundary={boundary}'
        results["stow"] = httpx.post(
            f"{server.base_url}/dicomweb/studies",
            content=body,
            headers={"Content-Type": content_type},
            timeout=60,
        ).status_code

    threads = [threading.Thread(target=over_dimse), threading.Thread(target=over_stow)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert successes(results["dimse"]) == 6, results["dimse"]
    assert results["stow"] == 200
    output = run(
        "findscu", "-S", "-aec", "MEDBRIDGE", "-k", "QueryRetrieveLevel=STUDY",
        "-k", f"StudyInstanceUID={study}", "-k", "NumberOfStudyRelatedInstances",
        "-k", "NumberOfStudyRelatedSeries", "127.0.0.1", str(server.dicom_port),
    )  # fmt: skip
    assert "IS [12]" in output, output
    assert "IS [2 ]" in output, output


def test_garbage_and_aborted_connections_leave_the_listener_up(
    server: RunningServer, tmp_path: Path
) -> None:
    for payload in (b"GET / HTTP/1.1\r\n\r\n", b"\x01\x00" + b"\xff" * 64, b""):
        with socket.create_connection(("127.0.0.1", server.dicom_port), timeout=10) as raw:
            raw.sendall(payload)
    path = write(tmp_path, "ct.dcm", renamed("CT_small.dcm", patient_id="DIMSE-ABORT"))
    aborted = storescu(server.dicom_port, [path], "STORESCU", "--abort")
    assert successes(aborted) == 1
    output = run("echoscu", "-aec", "MEDBRIDGE", "127.0.0.1", str(server.dicom_port))
    assert "Received Echo Response (Success)" in output
