"""What a retrieve's and an HL7 message's AuditEvent lists (issue 15: "one record per
access, whatever it touched"): a C-MOVE names every instance handed to its destination
(with their series and study) and the destination AE title as an agent, a C-GET the
instances it sent, a move to an unknown destination that destination and nothing sent;
an ORU^R01 from the shared test data, sent by python-hl7's `mllp_send`, is one event
listing every resource it wrote.

Real peers: dcmtk's storescu, movescu, getscu and storescp; python-hl7's mllp_send."""

from __future__ import annotations

import io
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pydicom
import pytest
from pydicom.uid import generate_uid
from pymongo import MongoClient

from medbridge.embedded_mongo import EmbeddedMongo, free_port
from tests.integration.test_dimse_retrieve import _wait_listening
from tests.integration.test_mllp import MLLP_SEND
from tests.support.dcmtk import run, storescu, successes
from tests.support.dicom import renamed
from tests.support.servers import IsolatedStore, RunningServer, start_server

pytestmark = pytest.mark.integration

Event = dict[str, Any]
ORU = Path(__file__).parents[1] / "data" / "hl7" / "oru-r01_v2.5.1_v2tofhir-lri-basic.hl7"
PEERS = """
peers:
  - {{ae_title: DEST, host: 127.0.0.1, port: {dest_port}, services: [store]}}
  - {{ae_title: RETRIEVER, services: [echo, store, find, move, get]}}
"""


@dataclass
class Site:
    server: RunningServer
    study: str
    series: list[str]
    instances: dict[str, str]  # SOP Instance UID -> its series


@pytest.fixture(scope="module")
def site(
    tmp_path_factory: pytest.TempPathFactory, store: EmbeddedMongo | IsolatedStore
) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("audit-retrieve")
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
        peers.write_text(PEERS.format(dest_port=dest_port))
        env = {"MEDBRIDGE_DICOM_PEERS_FILE": str(peers)}
        server = start_server(root / "server", store.uri, env=env)
        try:
            study, series = generate_uid(), [generate_uid(), generate_uid()]
            instances: dict[str, str] = {}
            for n, serie in enumerate([series[0], series[0], series[1]]):
                blob = renamed("CT_small.dcm", study=study, series=serie, patient_id="AUDMOVE")
                path = root / f"ct{n}.dcm"
                path.write_bytes(blob)
                assert successes(storescu(server.dicom_port, [path], "RETRIEVER")) == 1
                sop = str(pydicom.dcmread(io.BytesIO(blob), stop_before_pixels=True).SOPInstanceUID)
                instances[sop] = serie
            yield Site(server, study, series, instances)
        finally:
            server.stop()
    finally:
        storescp.kill()
        storescp.wait(10)


def stored(server: RunningServer) -> list[Event]:
    with MongoClient(server.mongodb_uri) as client:
        found = client[server.database]["AuditEvent"].find({}, {"raw": 1}).sort("_id", 1)
        return [orjson.loads(doc["raw"]) for doc in found]


def of(site: Site, start: int, action: str) -> Event:
    [event] = [e for e in stored(site.server)[start:] if e["subtype"][0]["code"] == action]
    return event


def uids(event: Event, kind: str) -> set[str]:
    found = set()
    for entity in event.get("entity", []):
        identifier = entity.get("what", {}).get("identifier", {})
        if identifier.get("type", {}).get("text") == kind:
            found.add(entity["name"])
    return found


def move(site: Site, destination: str) -> str:
    return run("movescu", "-S", "-aet", "RETRIEVER", "-aec", "MEDBRIDGE", "-aem", destination,
               "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={site.study}",
               "127.0.0.1", str(site.server.dicom_port))  # fmt: skip


def test_a_c_move_lists_the_instances_sent_and_its_destination(site: Site) -> None:
    start = len(stored(site.server))
    output = move(site, "DEST")
    assert "Received Final Move Response (Success)" in output, output[-2000:]
    event = of(site, start, "c-move")
    assert event["outcome"] == "0"
    assert uids(event, "SOPInstanceUID") == set(site.instances)
    assert uids(event, "SeriesInstanceUID") == set(site.series)
    assert uids(event, "StudyInstanceUID") == {site.study}
    [destination] = [a for a in event["agent"]
                     if a["who"].get("identifier", {}).get("value") == "DEST"]  # fmt: skip
    assert destination["type"]["coding"][0]["code"] == "110152"  # Destination Role ID
    assert destination["network"]["address"] == "127.0.0.1"
    assert destination["requestor"] is False
    [server] = [a for a in event["agent"] if a["who"].get("display") == "MedBridge"]
    assert server["type"]["coding"][0]["code"] == "110153"  # this server is the Source
    [caller] = [a for a in event["agent"] if a["requestor"]]
    assert caller["who"]["identifier"]["value"] == "RETRIEVER"


def test_a_move_to_an_unknown_destination_names_it_and_sends_nothing(site: Site) -> None:
    start = len(stored(site.server))
    output = move(site, "NOWHERE")
    assert "Success" not in output.split("Final Move Response")[-1][:40], output[-2000:]
    event = of(site, start, "c-move")
    assert event["outcome"] == "4"
    assert "NOWHERE" in {a["who"].get("identifier", {}).get("value") for a in event["agent"]}
    assert uids(event, "SOPInstanceUID") == set()  # nothing handed over ...
    assert uids(event, "StudyInstanceUID") == {site.study}  # ... of the study asked for


def test_a_c_get_lists_the_instances_it_sent(site: Site, tmp_path: Path) -> None:
    start = len(stored(site.server))
    output = run("getscu", "-S", "-aet", "RETRIEVER", "-aec", "MEDBRIDGE", "-od", str(tmp_path),
                 "-k", "QueryRetrieveLevel=SERIES", "-k", f"StudyInstanceUID={site.study}",
                 "-k", f"SeriesInstanceUID={site.series[0]}", "127.0.0.1",
                 str(site.server.dicom_port))  # fmt: skip
    assert "Received C-GET Response (Success)" in output, output[-2000:]
    event = of(site, start, "c-get")
    sent = {sop for sop, serie in site.instances.items() if serie == site.series[0]}
    assert len(sent) == 2
    assert uids(event, "SOPInstanceUID") == sent
    assert not any(a["who"].get("identifier", {}).get("value") == "DEST" for a in event["agent"])


def test_an_oru_message_is_one_event_listing_every_resource_it_wrote(
    site: Site, tmp_path: Path
) -> None:
    start = len(stored(site.server))
    done = subprocess.run(
        [str(MLLP_SEND), "--loose", "--file", str(ORU), "--port", str(site.server.mllp_port),
         "127.0.0.1"],
        capture_output=True, timeout=60, check=True,
    )  # fmt: skip
    assert b"MSA|AA" in done.stdout, done.stdout
    new = stored(site.server)[start:]
    [event] = [e for e in new if e["source"]["site"] == "hl7v2"]
    assert [e for e in new if e["source"]["site"] == "fhir"] == []  # its writes: no events
    assert event["subtype"][0]["code"] == "R01"
    references = {e["what"]["reference"] for e in event["entity"] if "reference" in e["what"]}
    [patient] = [r for r in references if r.startswith("Patient/")]
    fhir = site.server.fhir_base
    for kind in ("Observation", "DiagnosticReport"):
        bundle = httpx.get(f"{fhir}/{kind}", params={"subject": patient}, timeout=30).json()
        written = {f"{kind}/{e['resource']['id']}" for e in bundle.get("entry", [])}
        assert written, kind
        assert written <= references, (kind, written - references)
    assert len([r for r in references if r.startswith("Observation/")]) == 3  # three OBX
