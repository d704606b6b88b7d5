"""A restriction to one patient limits every DICOM index lookup: QIDO-RS (studies, series,
instances), C-FIND (every level, Patient and Study Root), C-MOVE/C-GET selection and
WADO lookups. Data arrives through the real doors (storescu, STOW-RS) and is linked to
its FHIR Patients by the real ImagingStudy upkeep; no door passes a restriction yet, so
the index entry points are called in-process against the server's store."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pymongo import AsyncMongoClient

from access.errors import AccessError
from access.restriction import UNRESTRICTED, Restriction
from fhir_server.repository import Repository
from imaging.dicomweb import qido, wado
from imaging.dimse import query, retrieve
from imaging.index import DicomIndex
from medbridge.embedded_mongo import EmbeddedMongo
from tests.support.dcmtk import storescu, successes
from tests.support.dicom import renamed
from tests.support.servers import RunningServer

BOUNDARY = "restriction-boundary"


@dataclass
class Archive:
    alice: str  # PatientID in the headers
    bob: str
    alice_fhir: str  # FHIR Patient ids the upkeep linked the studies to
    bob_fhir: str
    alice_ct: str  # storescu: one series, 2 instances
    alice_mr: str  # STOW-RS: 1 instance
    bob_ct: str  # storescu: 1 instance
    alice_ct_series: str

    @property
    def only_alice(self) -> Restriction:
        return Restriction(patients=frozenset({self.alice_fhir}))

    @property
    def only_bob(self) -> Restriction:
        return Restriction(patients=frozenset({self.bob_fhir}))


def stow(server: RunningServer, part: bytes) -> None:
    body = (
        f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        + part
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )
    content_type = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
    answer = httpx.post(
        f"{server.base_url}/dicomweb/studies",
        content=body,
        headers={"Content-Type": content_type},
        timeout=60.0,
    )
    assert answer.status_code == 200, answer.text


def linked_patient(server: RunningServer, study: str) -> str:
    """The FHIR Patient id of the study's ImagingStudy, once the upkeep wrote it."""
    deadline = time.monotonic() + 60
    while True:
        answer = httpx.get(f"{server.fhir_base}/ImagingStudy/{study}", timeout=30.0)
        if answer.status_code == 200:
            reference = str(answer.json()["subject"]["reference"])
            return reference.removeprefix("Patient/")
        assert time.monotonic() < deadline, f"ImagingStudy/{study}: {answer.status_code}"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def archive(server: RunningServer, tmp_path_factory: pytest.TempPathFactory) -> Archive:
    tmp = tmp_path_factory.mktemp("restriction")
    run = uuid.uuid4().hex[:12]
    alice, bob = f"A{run}", f"B{run}"  # `?{run}` matches both
    alice_ct, alice_ct_series, alice_mr, bob_ct = (generate_uid() for _ in range(4))
    blobs = [
        renamed("CT_small.dcm", study=alice_ct, series=alice_ct_series, patient_id=alice,
                PatientName=f"Alice^{alice}", StudyDate="20200101")
        for _ in range(2)
    ] + [
        renamed("CT_small.dcm", study=bob_ct, patient_id=bob, PatientName=f"Bob^{bob}",
                StudyDate="20200101"),
    ]  # fmt: skip
    paths = []
    for n, blob in enumerate(blobs):
        path = tmp / f"{n}.dcm"
        path.write_bytes(blob)
        paths.append(path)
    assert successes(storescu(server.dicom_port, paths)) == 3
    stow(
        server,
        renamed("MR_small.dcm", study=alice_mr, patient_id=alice, PatientName=f"Alice^{alice}",
                StudyDate="20210615"),
    )  # fmt: skip
    alice_fhir = linked_patient(server, alice_ct)
    assert linked_patient(server, alice_mr) == alice_fhir
    bob_fhir = linked_patient(server, bob_ct)
    assert bob_fhir != alice_fhir
    return Archive(alice, bob, alice_fhir, bob_fhir, alice_ct, alice_mr, bob_ct, alice_ct_series)


@pytest.fixture
async def index(
    store: EmbeddedMongo, server: RunningServer, archive: Archive
) -> AsyncIterator[DicomIndex]:
    """The server's own index, read in-process; waits until the upkeep recorded the
    studies' patients on their rows (just after it wrote the ImagingStudy)."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(store.uri)
    dicom_index = DicomIndex(Repository(client, server.database))  # type: ignore[arg-type]
    deadline = time.monotonic() + 60
    studies = [archive.alice_ct, archive.alice_mr, archive.bob_ct]
    while await dicom_index.studies.count_documents(
        {"_id": {"$in": studies}, "patient": {"$exists": True}}
    ) < len(studies):
        assert time.monotonic() < deadline, "the upkeep never recorded the patients"
        await asyncio.sleep(0.2)
    yield dicom_index
    await client.close()


async def qido_uids(
    index: DicomIndex, level: str, restriction: Restriction, params: list[tuple[str, str]]
) -> list[str]:
    parsed = qido.parse_query(level, params, {})
    found = await qido.search(index, parsed, "http://x", restriction=restriction)
    tag = {"study": "0020000D", "series": "0020000E", "instance": "00080018"}[level]
    return sorted(item[tag]["Value"][0] for item in orjson.loads(found.body))


async def test_qido_studies_series_instances(index: DicomIndex, archive: Archive) -> None:
    by_name = [("PatientName", f"*{archive.alice[1:]}")]  # both patients; the regex path
    assert await qido_uids(index, "study", UNRESTRICTED, by_name) == sorted(
        [archive.alice_ct, archive.alice_mr, archive.bob_ct]
    )
    assert await qido_uids(index, "study", archive.only_bob, by_name) == [archive.bob_ct]
    assert await qido_uids(index, "study", archive.only_alice, by_name) == sorted(
        [archive.alice_ct, archive.alice_mr]
    )
    bob_studies = [("PatientID", archive.bob)]
    assert await qido_uids(index, "study", archive.only_alice, bob_studies) == []
    assert await qido_uids(index, "study", archive.only_bob, bob_studies) == [archive.bob_ct]
    all_series = await qido_uids(index, "series", archive.only_alice, [])
    assert archive.alice_ct_series in all_series
    assert len(all_series) == 2  # alice's CT and MR series, none of bob's or others'
    assert len(await qido_uids(index, "instance", archive.only_alice, [])) == 3
    assert len(await qido_uids(index, "instance", archive.only_bob, [])) == 1
    # another patient's study named in the path finds nothing
    named = [("StudyInstanceUID", archive.bob_ct)]
    assert await qido_uids(index, "instance", archive.only_alice, named) == []
    # paging counts only what the access may see
    page = [("limit", "2"), ("offset", "2")]
    assert len(await qido_uids(index, "instance", archive.only_alice, page)) == 1


def identifier(level: str, **keys: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


async def cfind(
    index: DicomIndex, model: str, keys: Dataset, restriction: Restriction
) -> list[dict[str, Any]]:
    return await query.find(index, query.parse_identifier(keys, model), restriction)


@pytest.mark.parametrize("model", ["patient", "study"])
async def test_cfind_every_level(index: DicomIndex, archive: Archive, model: str) -> None:
    either = f"?{archive.alice[1:]}"  # both patients' PatientID, a wildcard
    if model == "patient":
        patients = await cfind(
            index, model, identifier("PATIENT", PatientID=either), archive.only_alice
        )
        assert [row["PatientID"] for row in patients] == [archive.alice]
        assert patients[0]["NumberOfPatientRelatedStudies"] == 2
        assert patients[0]["NumberOfPatientRelatedInstances"] == 3
    studies = await cfind(index, model, identifier("STUDY", PatientID=either), archive.only_bob)
    assert [row["StudyInstanceUID"] for row in studies] == [archive.bob_ct]
    unrestricted = await cfind(index, model, identifier("STUDY", PatientID=either), UNRESTRICTED)
    assert len(unrestricted) == 3
    series = await cfind(
        index, model, identifier("SERIES", StudyInstanceUID=archive.alice_ct), archive.only_bob
    )
    assert series == []
    series = await cfind(
        index, model, identifier("SERIES", StudyInstanceUID=archive.alice_ct), archive.only_alice
    )
    assert [row["SeriesInstanceUID"] for row in series] == [archive.alice_ct_series]
    images = await cfind(
        index,
        model,
        identifier(
            "IMAGE", StudyInstanceUID=archive.alice_ct, SeriesInstanceUID=archive.alice_ct_series
        ),
        archive.only_alice,
    )
    assert len(images) == 2
    images = await cfind(
        index, model, identifier("IMAGE", PatientID=either, SOPInstanceUID=""), archive.only_bob
    )
    assert {row["StudyInstanceUID"] for row in images} == {archive.bob_ct}
    nobody = Restriction(patients=frozenset())
    assert await cfind(index, model, identifier("STUDY", PatientID=either), nobody) == []


async def test_move_and_get_select_only_the_patients_instances(
    index: DicomIndex, archive: Archive
) -> None:
    def rows(keys: Dataset, model: str, restriction: Restriction) -> Any:
        return retrieve.instances_for(index, keys, model, restriction)

    alice_patient = identifier("PATIENT", PatientID=archive.alice)
    assert len(await rows(alice_patient, "patient", UNRESTRICTED)) == 3
    assert len(await rows(alice_patient, "patient", archive.only_alice)) == 3
    assert await rows(alice_patient, "patient", archive.only_bob) == []
    studies = f"{archive.alice_ct}\\{archive.bob_ct}"
    both = identifier("STUDY", StudyInstanceUID=studies)
    assert len(await rows(both, "study", UNRESTRICTED)) == 3
    assert {row["st"] for row in await rows(both, "study", archive.only_bob)} == {archive.bob_ct}
    one_study = Restriction(studies=frozenset({archive.alice_ct}))
    assert len(await rows(both, "study", one_study)) == 2


async def test_wado_lookup_is_not_found_for_another_patient(
    index: DicomIndex, archive: Archive
) -> None:
    found = await wado.instance_rows(
        index, archive.bob_ct, None, None, restriction=archive.only_bob
    )
    assert len(found) == 1
    sop = found[0]["_id"]
    with pytest.raises(AccessError) as refused:
        await wado.instance_rows(index, archive.bob_ct, None, sop, restriction=archive.only_alice)
    assert refused.value.code == "MB-3010"  # 404: not found, not forbidden
    series = await wado.instance_rows(
        index, archive.alice_ct, archive.alice_ct_series, None, restriction=archive.only_alice
    )
    assert len(series) == 2
