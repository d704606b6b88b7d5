"""DICOMweb through the real server with the `dicomweb-client` package as the peer."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.uid import generate_uid
from requests.exceptions import HTTPError

from tests.support.dicom import SAMPLES, deflate_bomb, nested_sequences, renamed, sample_bytes
from tests.support.servers import RunningServer

BOUNDARY = "medbridge-test-boundary"


@pytest.fixture
def dicomweb(server: RunningServer) -> DICOMwebClient:
    return DICOMwebClient(f"{server.base_url}/dicomweb")


@pytest.fixture
def http(server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"{server.base_url}/dicomweb", timeout=60.0) as client:
        yield client


def multipart(parts: list[bytes], part_type: str = "application/dicom") -> tuple[bytes, str]:
    body = b"".join(
        f"--{BOUNDARY}\r\nContent-Type: {part_type}\r\n\r\n".encode() + part + b"\r\n"
        for part in parts
    )
    body += f"--{BOUNDARY}--\r\n".encode()
    return body, f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'


def stow(http: httpx.Client, parts: list[bytes], path: str = "/studies") -> httpx.Response:
    body, content_type = multipart(parts)
    return http.post(path, content=body, headers={"Content-Type": content_type})


def dataset(data: bytes) -> pydicom.Dataset:
    return pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)


def split_multipart(response: httpx.Response) -> list[bytes]:
    boundary = response.headers["content-type"].split("boundary=")[1].strip('"')
    chunks = response.content.split(f"--{boundary}".encode())[1:-1]
    return [chunk.split(b"\r\n\r\n", 1)[1].removesuffix(b"\r\n") for chunk in chunks]


def test_store_search_retrieve_several_vendors_and_syntaxes(
    dicomweb: DICOMwebClient, http: httpx.Client
) -> None:
    study = generate_uid()
    originals = [renamed(name, study=study, patient_id="VENDORS") for name in SAMPLES]
    answer = dicomweb.store_instances([pydicom.dcmread(io.BytesIO(d)) for d in originals])
    assert len(answer.ReferencedSOPSequence) == len(SAMPLES)
    assert "FailedSOPSequence" not in answer
    found = dicomweb.search_for_studies(search_filters={"StudyInstanceUID": study})
    assert len(found) == 1
    assert found[0]["00201208"]["Value"] == [len(SAMPLES)]  # NumberOfStudyRelatedInstances
    assert len(dicomweb.search_for_instances(study_instance_uid=study)) == len(SAMPLES)
    # byte-exact retrieval in the stored transfer syntax, streamed
    response = http.get(
        f"/studies/{study}",
        headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
    )
    assert response.status_code == 200
    sent = {hashlib.sha256(d).hexdigest() for d in originals}
    got = {hashlib.sha256(p).hexdigest() for p in split_multipart(response)}
    assert got == sent
    first = dataset(originals[0])
    instance = dicomweb.retrieve_instance(study, first.SeriesInstanceUID, first.SOPInstanceUID)
    assert instance.SOPInstanceUID == first.SOPInstanceUID


def test_metadata_has_bulk_data_uris_that_resolve(dicomweb: DICOMwebClient) -> None:
    data = renamed("CT_small.dcm")
    ds = dataset(data)
    dicomweb.store_instances([pydicom.dcmread(io.BytesIO(data))])
    meta = dicomweb.retrieve_instance_metadata(
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID
    )
    uri = meta["7FE00010"]["BulkDataURI"]
    assert uri.startswith("http")
    pixels = dicomweb.retrieve_bulkdata(uri)
    assert len(pixels[0]) == 128 * 128 * 2
    frames = dicomweb.retrieve_instance_frames(
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, [1]
    )
    full = pydicom.dcmread(io.BytesIO(data))
    assert frames[0] == full.PixelData


@pytest.mark.parametrize(
    "name",
    [
        "CT_small.dcm",
        "MR_small_RLE.dcm",
        "JPEG2000.dcm",
        "SC_rgb_jpeg_dcmtk.dcm",
        "JPGExtended.dcm",  # pylibjpeg-libjpeg
        "MR_small_jpeg_ls_lossless.dcm",  # pylibjpeg-libjpeg (JPEG-LS)
    ],
)
def test_rendered_and_thumbnail(name: str, dicomweb: DICOMwebClient, http: httpx.Client) -> None:
    data = renamed(name)
    ds = dataset(data)
    assert stow(http, [data]).status_code == 200
    path = (
        f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}"
    )
    jpeg = http.get(f"{path}/rendered", headers={"Accept": "image/jpeg"})
    assert jpeg.status_code == 200
    assert jpeg.content[:2] == b"\xff\xd8"
    png = http.get(f"{path}/thumbnail", headers={"Accept": "image/png"})
    assert png.content[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    image = Image.open(io.BytesIO(png.content))
    assert max(image.size) <= 128
    uri = http.get(
        "/wado",
        params={"requestType": "WADO", "studyUID": ds.StudyInstanceUID,
                "seriesUID": ds.SeriesInstanceUID, "objectUID": ds.SOPInstanceUID,
                "contentType": "application/dicom"},
    )  # fmt: skip
    assert uri.status_code == 200
    assert uri.content == data


def test_qido_matching_rules(dicomweb: DICOMwebClient, http: httpx.Client, unique: str) -> None:
    patient = f"Q{unique[:10]}"
    studies = []
    for name, person, date, modality in [
        ("CT_small.dcm", "Šimkus^Jonas", "20200105", "CT"),
        ("MR_small.dcm", "Simkute^Ona", "20210610", "MR"),
        ("CT_small.dcm", "Petraitis^Jonas", "20221231", "CT"),
    ]:
        data = renamed(
            name,
            patient_id=patient,
            SpecificCharacterSet="ISO_IR 192",
            PatientName=person,
            StudyDate=date,
            Modality=modality,
        )
        assert stow(http, [data]).status_code == 200
        studies.append(dataset(data).StudyInstanceUID)

    def uids(**filters: Any) -> set[str]:
        params = {"PatientID": patient, **filters}
        answer = http.get("/studies", params=params)
        assert answer.status_code == 200, answer.text
        return {item["0020000D"]["Value"][0] for item in answer.json()}

    assert uids() == set(studies)
    assert uids(PatientName="Simk*") == {studies[1]}  # exact case/accents without fuzzy
    assert uids(PatientName="simkus", fuzzymatching="true") == {studies[0]}
    assert uids(PatientName="jonas", fuzzymatching="true") == {studies[0], studies[2]}
    assert uids(StudyDate="20210101-20221231") == {studies[1], studies[2]}
    assert uids(StudyDate="-20201231") == {studies[0]}
    assert uids(StudyInstanceUID=f"{studies[0]},{studies[2]}") == {studies[0], studies[2]}
    assert uids(ModalitiesInStudy="MR") == {studies[1]}
    assert uids(PatientName="?etraitis^Jonas") == {studies[2]}
    page = http.get("/studies", params={"PatientID": patient, "limit": "2", "offset": "1"}).json()
    assert len(page) == 2
    bad = http.get("/studies", params={"NoSuchKeyword": "x"})
    assert bad.status_code == 400
    assert "Traceback" not in bad.text
    series = dicomweb.search_for_series(study_instance_uid=studies[1])
    assert series[0]["00080060"]["Value"] == ["MR"]
    assert series[0]["00201209"]["Value"] == [1]
    # attributes of other levels narrow the series and instance searches too
    series_of_patient = http.get("/series", params={"PatientID": patient}).json()
    assert {s["0020000D"]["Value"][0] for s in series_of_patient} == set(studies)
    ct_instances = http.get("/instances", params={"PatientID": patient, "Modality": "CT"}).json()
    assert {i["0020000D"]["Value"][0] for i in ct_instances} == {studies[0], studies[2]}
    wide = http.get(f"/studies/{studies[0]}/instances", params={"includefield": "all"}).json()
    assert "00280010" in wide[0]  # Rows, from the stored metadata


def test_stow_partial_failure_quarantines_and_answers_202(
    http: httpx.Client, server: RunningServer
) -> None:
    good = renamed("CT_small.dcm")
    hostile = [nested_sequences(300), sample_bytes("CT_small.dcm")[:5000], b"plain text" * 40]
    response = stow(http, [good, *hostile])
    assert response.status_code == 202
    body = response.json()
    assert len(body["00081199"]["Value"]) == 1
    reasons = [item["00081197"]["Value"][0] for item in body["00081198"]["Value"]]
    assert reasons == [0xC000, 0xC000, 0xC000]
    assert "MB-3004" in response.headers["warning"]
    quarantine = server.data_dir / "objects" / "quarantine"
    for data in hostile:
        digest = hashlib.sha256(data).hexdigest()
        assert (quarantine / digest[:2] / f"{digest}.bin").read_bytes() == data


def test_all_failed_is_409_and_not_dicom_type_is_415(http: httpx.Client) -> None:
    assert stow(http, [b"garbage" * 100]).status_code == 409
    body, _ = multipart([renamed("CT_small.dcm")])
    wrong = http.post("/studies", content=body, headers={"Content-Type": "application/json"})
    assert wrong.status_code == 415
    bomb = stow(http, [deflate_bomb(64 << 20)])
    assert bomb.status_code == 409
    assert bomb.json()["00081198"]["Value"][0]["00081197"]["Value"] == [0xA700]


def test_duplicates_and_study_of_another_patient(http: httpx.Client, server: RunningServer) -> None:
    data = renamed("CT_small.dcm", patient_id="OWNER")
    ds = dataset(data)
    assert stow(http, [data]).status_code == 200
    assert stow(http, [data]).status_code == 200  # identical bytes: success
    folder = server.data_dir / "objects" / "dicom" / ds.StudyInstanceUID
    assert len(list(folder.rglob("*.dcm"))) == 1
    changed = pydicom.dcmread(io.BytesIO(data))
    changed.StudyDescription = "other bytes"
    out = io.BytesIO()
    changed.save_as(out)
    refused = stow(http, [out.getvalue()])
    assert refused.status_code == 409
    assert refused.json()["00081198"]["Value"][0]["00081197"]["Value"] == [0x0111]
    intruder = renamed("MR_small.dcm", study=ds.StudyInstanceUID, patient_id="SOMEONE-ELSE")
    answer = stow(http, [intruder])
    assert answer.status_code == 409
    assert "MB-3006" in answer.headers["warning"]
    wrong_study = stow(http, [renamed("CT_small.dcm")], f"/studies/{generate_uid()}")
    assert wrong_study.status_code == 409


def test_client_errors_are_dicomweb_answers(dicomweb: DICOMwebClient, http: httpx.Client) -> None:
    with pytest.raises(HTTPError) as caught:
        dicomweb.retrieve_study(generate_uid())
    assert caught.value.response.status_code == 404
    for path in ("/studies/../../etc/passwd", "/studies/1.2.3/series/x%00y", "/nothing"):
        response = http.get(path)
        assert response.status_code == 404
        assert "Traceback" not in response.text


def test_gzip_bodies_are_inflated_under_caps(http: httpx.Client) -> None:
    import gzip

    data = renamed("CT_small.dcm")
    body, content_type = multipart([data])
    headers = {"Content-Type": content_type, "Content-Encoding": "gzip"}
    ok = http.post("/studies", content=gzip.compress(body), headers=headers)
    assert ok.status_code == 200
    # 600 MB of zeros in a few hundred KB: refused once the ratio cap is passed
    bomb_body = f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + b"\0" * (
        600 << 20
    )
    bomb = http.post("/studies", content=gzip.compress(bomb_body, 9), headers=headers)
    assert bomb.status_code == 413
    assert "Traceback" not in bomb.text


def test_transfer_syntax_asked_for(http: httpx.Client) -> None:
    data = renamed("JPEG2000.dcm")
    ds = dataset(data)
    assert stow(http, [data]).status_code == 200
    path = f"/studies/{ds.StudyInstanceUID}"
    ask = 'multipart/related; type="application/dicom"; transfer-syntax='
    served = http.get(path, headers={"Accept": ask + str(ds.file_meta.TransferSyntaxUID)})
    assert split_multipart(served) == [data]  # the stored syntax: the bytes as stored
    explicit = http.get(path, headers={"Accept": ask + "1.2.840.10008.1.2.1"})
    assert explicit.status_code == 200
    (transcoded,) = split_multipart(explicit)
    decoded = pydicom.dcmread(io.BytesIO(transcoded))
    assert decoded.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    original = pydicom.dcmread(io.BytesIO(data))
    assert (decoded.pixel_array == original.pixel_array).all()
    refused = http.get(path, headers={"Accept": ask + "1.2.840.10008.1.2.4.50"})
    assert refused.status_code == 406


def test_dicomweb_client_command_line(server: RunningServer, tmp_path: Path) -> None:
    """The `dicomweb_client` program (the package's own CLI) stores and finds a study."""
    import json
    import subprocess
    import sys

    study = generate_uid()
    paths = []
    for number in range(2):
        path = tmp_path / f"{number}.dcm"
        path.write_bytes(renamed("CT_small.dcm", study=study, patient_id="CLI"))
        paths.append(str(path))
    program = str(Path(sys.executable).parent / "dicomweb_client")
    url = ["--url", f"{server.base_url}/dicomweb"]
    stored = subprocess.run(
        [program, *url, "store", "instances", *paths], capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert stored.returncode == 0, stored.stderr
    found = subprocess.run(
        [program, *url, "search", "studies", "--filter", f"StudyInstanceUID={study}"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert found.returncode == 0, found.stderr
    studies = json.loads(found.stdout)
    assert studies[0]["00201208"]["Value"] == [2]


def test_shared_hooks_leave_dicomweb_exchanges_alone(
    dicomweb: DICOMwebClient, server: RunningServer
) -> None:
    """The post-commit linkers are shared by every door: a DICOMweb exchange (its route is
    not a FHIR route) must pass them without a failure logged for each request."""
    data = pydicom.data.get_testdata_file("CT_small.dcm", read=True)
    assert isinstance(data, pydicom.Dataset)
    data.StudyInstanceUID = pydicom.uid.generate_uid()
    dicomweb.store_instances([data])
    assert dicomweb.search_for_studies(search_filters={"StudyInstanceUID": data.StudyInstanceUID})
    log = server.log()
    assert "hl7.link-reports failed" not in log
    assert "imaging.link-orders failed" not in log
