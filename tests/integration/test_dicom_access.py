"""An authorize hook registered through the composition limits every DICOM door of a real
server: narrowing the access to one patient hides the other from QIDO-RS (every level),
WADO-RS, WADO-URI, /rendered, C-FIND, C-GET, C-MOVE and the worklist; refusing it answers
403 OperationOutcome over DICOMweb and the refusal status over DIMSE, with nothing read
or written. A C-MOVE/C-GET reads its objects inside its one pass: a hidden patient's
objects are neither counted nor read, a refused retrieve reads none.

The hooks are tests/support/access_hooks.py, loaded by the server through
`MEDBRIDGE_EXTRA_HOOKS`; the rule they apply is the JSON file this test rewrites."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
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

from medbridge.embedded_mongo import free_port
from tests.integration.test_dicom_restriction import linked_patient
from tests.integration.test_dimse_retrieve import _wait_listening, received
from tests.integration.test_dimse_worklist import schedule_for
from tests.support.dcmtk import findscu, run, storescu, successes
from tests.support.dicom import renamed
from tests.support.servers import RunningServer, start_server

STUDY, SERIES, SOP = "0020000D", "0020000E", "00080018"
# RETRIEVER may move to DEST (a dcmtk storescp); other calling AE titles get the open
# services, which do not include C-MOVE
PEERS = """
peers:
  - {{ae_title: DEST, host: 127.0.0.1, port: {port}, services: [store]}}
  - {{ae_title: RETRIEVER, services: [echo, store, find, worklist, move, get]}}
"""


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
    dest_dir: Path  # what the C-MOVE destination received

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
    dest_port, dest_dir = free_port(), root / "dest"
    dest_dir.mkdir()
    storescp = subprocess.Popen(
        ["/usr/bin/storescp", "-aet", "DEST", "+xa", "-od", str(dest_dir), str(dest_port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_listening(dest_port)
        peers = root / "peers.yaml"
        peers.write_text(PEERS.format(port=dest_port))
        server = start_server(
            root / "server",
            store.uri,
            env={
                "MEDBRIDGE_EXTRA_HOOKS": "tests.support.access_hooks:hooks",
                "MEDBRIDGE_TEST_ACCESS_FILE": str(rule),
                "MEDBRIDGE_DICOM_PEERS_FILE": str(peers),
            },
        )
        try:
            yield populated(server, rule, root, dest_dir)
        finally:
            server.stop()
    finally:
        storescp.kill()
        storescp.wait(10)


def populated(server: RunningServer, rule: Path, root: Path, dest_dir: Path) -> Site:
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
                bob_sop, alice[SERIES]["Value"][0], alice[SOP]["Value"][0], dest_dir)  # fmt: skip
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


def movescu(site: Site, study: str, calling: str = "RETRIEVER") -> str:
    return run(
        "movescu", "-S", "-aet", calling, "-aec", "MEDBRIDGE", "-aem", "DEST",
        "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}",
        "127.0.0.1", str(site.server.dicom_port),
    )  # fmt: skip


def objects_of(site: Site, study: str) -> list[Path]:
    """The stored files of a study in the server's object directory."""
    found = sorted((site.server.data_dir / "objects" / "dicom" / study).rglob("*.dcm"))
    assert found, study
    return found


def test_hidden_patient_sub_operations_are_neither_counted_nor_read(
    site: Site, tmp_path: Path
) -> None:
    both = f"{site.alice_study}\\{site.bob_study}"
    # Alice's objects leave the store: had the retrieve read them, its sub-operations
    # would fail and the final status would be a warning
    aside = tmp_path / "aside"
    moved = {path: aside / str(n) for n, path in enumerate(objects_of(site, site.alice_study))}
    aside.mkdir()
    for path, kept in moved.items():
        shutil.move(path, kept)
    try:
        site.set_rule(hide=[site.alice_fhir])
        try:
            got = c_get(site, both, tmp_path / "get")
            before = set(received(site.dest_dir))
            sent = movescu(site, both)
        finally:
            site.set_rule()
        assert "Received C-GET Response (Success)" in got, got[-3000:]
        assert "Number of Completed Suboperations : 1" in got, got[-3000:]
        assert re.search(r"Number of Failed Suboperations\s*: 0", got), got[-3000:]
        assert set(received(tmp_path / "get")) == {site.bob_sop}
        assert "Received Final Move Response (Success)" in sent, sent[-3000:]
        assert sent.count("(Pending)") == 1, sent[-3000:]  # one sub-operation: Bob's
        assert set(received(site.dest_dir)) - before <= {site.bob_sop}
        assert site.alice_sop not in received(site.dest_dir)
        # the same retrieve without the hook does try Alice's objects (and fails them)
        unhidden = c_get(site, both, tmp_path / "unhidden")
        assert "Received C-GET Response (Success)" not in unhidden, unhidden[-3000:]
        assert "Warning" in unhidden, unhidden[-3000:]
    finally:
        for path, kept in moved.items():
            shutil.move(kept, path)
    assert len(c_get_files(site, site.alice_study, tmp_path / "again")) == 2


def test_a_denied_retrieve_reads_no_object(site: Site, tmp_path: Path) -> None:
    files = objects_of(site, site.alice_study)
    # an access time before the last change: the next read of the file updates it
    # (relatime), so a read by the server is seen without a wrapper around the store
    for path in files:
        os.utime(path, (path.stat().st_mtime - 3600, path.stat().st_mtime))
    untouched = {path: path.stat().st_atime for path in files}
    before = set(received(site.dest_dir))
    site.set_rule(deny=True)
    try:
        got = c_get(site, site.alice_study, tmp_path / "get")
        sent = movescu(site, site.alice_study)
    finally:
        site.set_rule()
    assert "Received C-GET Response (Success)" not in got
    assert "0x0124" in got.lower() or "0x124" in got.lower() or "Refused" in got, got[-2000:]
    assert list((tmp_path / "get").iterdir()) == []
    assert "MoveDestinationUnknown" in sent or "a801" in sent.lower(), sent[-2000:]
    assert set(received(site.dest_dir)) == before
    assert {path: path.stat().st_atime for path in files} == untouched
    # allowed, the same retrieve reads them: the check above could see a read
    assert len(c_get_files(site, site.alice_study, tmp_path / "allowed")) == 2
    if {path: path.stat().st_atime for path in files} == untouched:
        pytest.skip("this filesystem does not record reads (noatime): the no-read half is moot")


def test_c_move_of_a_patient_narrowed_away_sends_nothing(site: Site) -> None:
    before = set(received(site.dest_dir))
    site.set_rule(only=[site.bob_fhir])
    try:
        hidden = movescu(site, site.alice_study)
        shown = movescu(site, site.bob_study)
    finally:
        site.set_rule()
    assert "Received Final Move Response (Success)" in hidden, hidden[-2000:]
    assert "(Pending)" not in hidden, hidden[-2000:]  # no sub-operation at all
    assert "Received Final Move Response (Success)" in shown, shown[-2000:]
    assert shown.count("(Pending)") == 1, shown[-2000:]
    assert set(received(site.dest_dir)) - before <= {site.bob_sop}
    assert site.bob_sop in received(site.dest_dir)
    assert site.alice_sop not in received(site.dest_dir)


def test_an_ae_title_without_the_move_service_is_refused_by_the_hook(
    site: Site, tmp_path: Path
) -> None:
    before = set(received(site.dest_dir))
    # VIEWER is not in the peers table: the open services, which leave C-MOVE out
    refused = movescu(site, site.bob_study, calling="VIEWER")
    assert "Received Final Move Response (Success)" not in refused
    assert "MoveDestinationUnknown" in refused or "a801" in refused.lower(), refused[-2000:]
    assert set(received(site.dest_dir)) == before
    allowed = run(
        "getscu", "-S", "-aet", "VIEWER", "-aec", "MEDBRIDGE", "-k", "QueryRetrieveLevel=STUDY",
        "-k", f"StudyInstanceUID={site.bob_study}", "-od", str(tmp_path),
        "127.0.0.1", str(site.server.dicom_port),
    )  # fmt: skip
    assert "Received C-GET Response (Success)" in allowed, allowed[-2000:]


def test_the_worklist_follows_the_mwl_access(site: Site, tmp_path: Path) -> None:
    accession = {site.alice_fhir: f"WA{site.run}", site.bob_fhir: f"WB{site.run}"}
    with httpx.Client(base_url=site.server.fhir_base, timeout=60.0) as fhir:
        for patient, number in accession.items():
            schedule_for(fhir, patient, number)

    def listed(name: str) -> set[str]:
        keys = [f"AccessionNumber=W?{site.run}", "PatientID"]
        output, found = findscu(site.server.dicom_port, "-W", keys, tmp_path / name)
        assert "Received Final Find Response (Success)" in output, output[-2000:]
        return {str(item.AccessionNumber) for item in found}

    assert listed("all") == set(accession.values())
    site.set_rule(only=[site.bob_fhir])
    try:
        assert listed("narrowed") == {accession[site.bob_fhir]}
        site.set_rule(only=[])
        assert listed("nobody") == set()
        site.set_rule(hide=[site.alice_fhir])
        assert listed("hidden") == {accession[site.bob_fhir]}
    finally:
        site.set_rule()
