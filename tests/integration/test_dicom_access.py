"""An authorize hook registered through the composition limits every DICOM door of a real
server: narrowing the access to one patient hides the other from QIDO-RS (every level),
WADO-RS, WADO-URI, /rendered, C-FIND and C-GET; refusing it answers 403 OperationOutcome
over DICOMweb and the refusal status over DIMSE, with nothing read or written.

The hooks are tests/support/access_hooks.py, loaded by the server through
`MEDBRIDGE_EXTRA_HOOKS`; the rule they apply is the JSON file this test rewrites."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from pydicom.uid import generate_uid

from tests.integration.test_dicom_restriction import linked_patient
from tests.support.dcmtk import findscu, run, storescu, successes
from tests.support.dicom import renamed
from tests.support.servers import RunningServer, start_server

STUDY, SERIES, SOP = "0020000D", "0020000E", "00080018"


@dataclass
class Site:
    server: RunningServer
    rule: Path  # the file the hooks read their rule from
    run: str  # in both PatientIDs, so one wildcard matches both patients
    alice_fhir: str
    bob_fhir: str
    alice_study: str
    bob_study: str
    bob_series: str
    bob_sop: str
    alice_series: str
    alice_sop: str

    def set_rule(self, **rule: Any) -> None:
        self.rule.write_bytes(orjson.dumps(rule))

    def get(self, path: str, **params: str) -> httpx.Response:
        return httpx.get(f"{self.server.base_url}/dicomweb/{path}", params=params, timeout=60.0)

    def study_uids(self, path: str, **params: str) -> set[str]:
        answer = self.get(path, **params)
        assert answer.status_code == 200, answer.text
        return {item[STUDY]["Value"][0] for item in answer.json()}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, store: Any) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("dicom-access")
    rule = root / "rule.json"
    rule.write_bytes(b"{}")
    server = start_server(
        root / "server",
        store.uri,
        env={
            "MEDBRIDGE_EXTRA_HOOKS": "tests.support.access_hooks:hooks",
            "MEDBRIDGE_TEST_ACCESS_FILE": str(rule),
        },
    )
    try:
        yield populated(server, rule, root)
    finally:
        server.stop()


def populated(server: RunningServer, rule: Path, root: Path) -> Site:
    run_id = uuid.uuid4().hex[:12]
    alice, bob = f"A{run_id}", f"B{run_id}"
    alice_study, bob_study, bob_series = (generate_uid() for _ in range(3))
    blobs = [
        renamed("CT_small.dcm", study=alice_study, patient_id=alice, PatientName="Alice^A"),
        renamed("CT_small.dcm", study=alice_study, patient_id=alice, PatientName="Alice^A"),
        renamed("CT_small.dcm", study=bob_study, series=bob_series, patient_id=bob,
                PatientName="Bob^B"),
    ]  # fmt: skip
    paths = []
    for n, blob in enumerate(blobs):
        path = root / f"{n}.dcm"
        path.write_bytes(blob)
        paths.append(path)
    assert successes(storescu(server.dicom_port, paths)) == 3
    alice_fhir, bob_fhir = linked_patient(server, alice_study), linked_patient(server, bob_study)
    assert alice_fhir != bob_fhir
    answer = httpx.get(f"{server.base_url}/dicomweb/studies/{bob_study}/instances", timeout=60.0)
    bob_sop = answer.json()[0][SOP]["Value"][0]
    answer = httpx.get(f"{server.base_url}/dicomweb/studies/{alice_study}/instances", timeout=60.0)
    alice = answer.json()[0]
    site = Site(server, rule, run_id, alice_fhir, bob_fhir, alice_study, bob_study, bob_series,
                bob_sop, alice[SERIES]["Value"][0], alice[SOP]["Value"][0])  # fmt: skip
    # the upkeep records each study's patient on its index rows just after the
    # ImagingStudy: wait until a restriction to each patient finds its study
    deadline = time.monotonic() + 60
    for patient, study in ((alice_fhir, alice_study), (bob_fhir, bob_study)):
        site.set_rule(only=[patient])
        while site.study_uids("studies", StudyInstanceUID=study) != {study}:
            assert time.monotonic() < deadline, "the upkeep never recorded the patients"
            time.sleep(0.2)
    site.set_rule()
    return site


def test_without_a_rule_both_patients_are_seen(site: Site) -> None:
    both = {site.alice_study, site.bob_study}
    assert site.study_uids("studies", PatientID=f"?{site.run}") == both


def test_narrowed_to_one_patient_every_dicomweb_lookup(site: Site) -> None:
    site.set_rule(only=[site.alice_fhir])
    try:
        assert site.study_uids("studies", PatientID=f"?{site.run}") == {site.alice_study}
        assert site.study_uids("series", PatientID=f"?{site.run}") == {site.alice_study}
        assert site.study_uids("instances", PatientID=f"?{site.run}") == {site.alice_study}
        assert site.study_uids(f"studies/{site.bob_study}/instances") == set()
        assert site.get(f"studies/{site.alice_study}").status_code == 200
        bob = f"studies/{site.bob_study}"
        bob_instance = f"{bob}/series/{site.bob_series}/instances/{site.bob_sop}"
        paths = [bob, bob_instance, f"{bob_instance}/rendered", f"{bob_instance}/metadata"]
        for path in [*paths, f"{bob}/thumbnail"]:
            answer = site.get(path)
            assert answer.status_code == 404, (path, answer.status_code)
            assert answer.json()["resourceType"] == "OperationOutcome"
        uri = site.get(
            "wado", requestType="WADO", studyUID=site.bob_study, seriesUID=site.bob_series,
            objectUID=site.bob_sop, contentType="application/dicom",
        )  # fmt: skip
        assert uri.status_code == 404
    finally:
        site.set_rule()
    # the same instance without the rule: it was the restriction, not a missing file
    assert site.get(bob_instance).status_code == 200


def test_narrowed_to_one_patient_c_find_and_c_get(site: Site, tmp_path: Path) -> None:
    site.set_rule(only=[site.bob_fhir])
    try:
        for level in ("STUDY", "SERIES", "IMAGE"):
            _, responses = findscu(
                site.server.dicom_port, "-S",
                [f"QueryRetrieveLevel={level}", f"PatientID=?{site.run}", "StudyInstanceUID"],
                tmp_path / level,
            )  # fmt: skip
            assert {str(r.StudyInstanceUID) for r in responses} == {site.bob_study}, level
        _, patients = findscu(
            site.server.dicom_port, "-P",
            ["QueryRetrieveLevel=PATIENT", f"PatientID=?{site.run}"], tmp_path / "patient",
        )  # fmt: skip
        assert [str(r.PatientID) for r in patients] == [f"B{site.run}"]
        hidden = c_get(site, site.alice_study, tmp_path / "alice")
        assert "Number of Completed Suboperations : 2" not in hidden
        assert list((tmp_path / "alice").iterdir()) == []
        shown = c_get(site, site.bob_study, tmp_path / "bob")
        assert "Received C-GET Response (Success)" in shown, shown[-3000:]
        assert len(list((tmp_path / "bob").iterdir())) == 1
    finally:
        site.set_rule()
    assert len(list(c_get_files(site, site.alice_study, tmp_path / "again"))) == 2


def test_a_consent_show_hook_hiding_one_patient(site: Site, tmp_path: Path) -> None:
    site.set_rule(hide=[site.alice_fhir])
    try:
        for level in ("studies", "series", "instances"):
            found = site.study_uids(level, PatientID=f"?{site.run}")
            assert found == {site.bob_study}, level
        alice = f"studies/{site.alice_study}"
        instance = f"{alice}/series/{site.alice_series}/instances/{site.alice_sop}"
        for path in (alice, instance, f"{instance}/rendered", f"{instance}/metadata"):
            answer = site.get(path)
            assert answer.status_code == 404, (path, answer.status_code)
            assert answer.json()["resourceType"] == "OperationOutcome"
        uri = site.get(
            "wado", requestType="WADO", studyUID=site.alice_study, seriesUID=site.alice_series,
            objectUID=site.alice_sop, contentType="application/dicom",
        )  # fmt: skip
        assert uri.status_code == 404
        assert site.get(f"studies/{site.bob_study}").status_code == 200
        for level in ("STUDY", "SERIES", "IMAGE"):
            _, responses = findscu(
                site.server.dicom_port, "-S",
                [f"QueryRetrieveLevel={level}", f"PatientID=?{site.run}", "StudyInstanceUID"],
                tmp_path / level,
            )  # fmt: skip
            assert {str(r.StudyInstanceUID) for r in responses} == {site.bob_study}, level
        _, patients = findscu(
            site.server.dicom_port, "-P",
            ["QueryRetrieveLevel=PATIENT", f"PatientID=?{site.run}"], tmp_path / "patient",
        )  # fmt: skip
        assert [str(r.PatientID) for r in patients] == [f"B{site.run}"]
        hidden = c_get(site, site.alice_study, tmp_path / "alice")
        assert "Number of Completed Suboperations : 2" not in hidden
        assert list((tmp_path / "alice").iterdir()) == []
        assert len(c_get_files(site, site.bob_study, tmp_path / "bob")) == 1
    finally:
        site.set_rule()
    assert site.get(instance).status_code == 200
    assert len(c_get_files(site, site.alice_study, tmp_path / "again")) == 2


def test_denied_nothing_is_read_or_written(site: Site, tmp_path: Path) -> None:
    new_study = generate_uid()
    path = tmp_path / "new.dcm"
    path.write_bytes(renamed("CT_small.dcm", study=new_study, patient_id=f"C{site.run}"))
    port = str(site.server.dicom_port)
    site.set_rule(deny=True)
    try:
        for search in ("studies", f"studies/{site.alice_study}"):
            answer = site.get(search)
            assert answer.status_code == 403, (search, answer.status_code)
            assert answer.json()["resourceType"] == "OperationOutcome"
        output, responses = findscu(
            site.server.dicom_port, "-S",
            ["QueryRetrieveLevel=STUDY", f"PatientID=?{site.run}"], tmp_path / "find",
        )  # fmt: skip
        assert responses == []
        assert "Status: 0x124" in output, output[-2000:]
        got = c_get(site, site.alice_study, tmp_path / "get")
        assert "Received C-GET Response (Success)" not in got
        assert list((tmp_path / "get").iterdir()) == []
        echo = run("echoscu", "-aet", "ECHOER", "-aec", "MEDBRIDGE", "127.0.0.1", port)
        assert "Status: 0x124" in echo, echo[-2000:]
        mwl, orders = findscu(site.server.dicom_port, "-W", ["PatientName"], tmp_path / "mwl")
        assert orders == []
        assert "Status: 0x124" in mwl, mwl[-2000:]
        stored = storescu(site.server.dicom_port, [path])
        assert successes(stored) == 0
        assert "0x124" in stored.lower() or "0x0124" in stored.lower(), stored[-2000:]
    finally:
        site.set_rule()
    assert site.study_uids("studies", StudyInstanceUID=new_study) == set()
    echo = run("echoscu", "-aet", "ECHOER", "-aec", "MEDBRIDGE", "127.0.0.1", port)
    assert "Received Echo Response (Success)" in echo, echo


def c_get(site: Site, study: str, out_dir: Path) -> str:
    out_dir.mkdir(parents=True, exist_ok=True)
    return run(
        "getscu", "-S", "-aet", "RETRIEVER", "-aec", "MEDBRIDGE", "-od", str(out_dir),
        "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}",
        "127.0.0.1", str(site.server.dicom_port),
    )  # fmt: skip


def c_get_files(site: Site, study: str, out_dir: Path) -> list[Path]:
    c_get(site, study, out_dir)
    return list(out_dir.iterdir())
