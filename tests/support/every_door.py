"""A real server with the every-door test hooks (tests/support/access_hooks.py
`every_door_hooks`), a DICOM destination for C-MOVE, one stored study and one HL7 message,
and what the tests of issue 12 need to look at it: the store's documents and the object
directory, the rule switch, the audit lines."""

from __future__ import annotations

import hashlib
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bson
import httpx
import orjson
from pydicom.uid import generate_uid
from pymongo import MongoClient

from medbridge.embedded_mongo import free_port
from tests.integration.test_mllp import adt
from tests.support.dcmtk import storescu, successes
from tests.support.dicom import renamed
from tests.support.servers import RunningServer, start_server

HOOKS = "tests.support.access_hooks:every_door_hooks"
# DEST receives C-MOVEs; PROBE may use every service, so only a hook refuses it
PEERS = """peers:
  - {{ae_title: DEST, host: 127.0.0.1, port: {port}, services: [store]}}
  - {{ae_title: PROBE, services: [echo, store, find, worklist, move, get]}}
"""
MLLP_SEND = Path(sys.executable).parent / "mllp_send"

# the audit trail (audit/chain.py): written by every access, refused or not
AUDIT_COLLECTIONS = frozenset({"AuditEvent", "AuditEvent_idx", "audit_chain", "audit_rows_pending"})


@dataclass
class Door:
    server: RunningServer
    store_uri: str
    root: Path
    rule: Path
    audit: Path
    dest_dir: Path  # where the C-MOVE destination (dcmtk storescp, AE DEST) writes
    run: str
    study: str
    series: str
    sop: str
    patient: str  # FHIR Patient id of the study's ImagingStudy
    hl7_patient: str  # FHIR Patient id the ADT made
    hl7_receipt: str  # archive id of that ADT (hl7_messages _id)
    # what the seeding requests carried: a system token's header when auth is on
    seed_headers: dict[str, str]

    def env(self) -> dict[str, str]:
        """The environment a `medbridge` command needs to get the server's hooks."""
        return {
            "MEDBRIDGE_EXTRA_HOOKS": HOOKS,
            "MEDBRIDGE_TEST_ACCESS_FILE": str(self.rule),
            "MEDBRIDGE_TEST_AUDIT_FILE": str(self.audit),
        }

    @contextmanager
    def rule_set(self, **rule: Any) -> Iterator[None]:
        self.rule.write_bytes(orjson.dumps(rule))
        try:
            yield
        finally:
            self.rule.write_bytes(b"{}")

    def audit_lines(self) -> list[dict[str, Any]]:
        if not self.audit.exists():
            return []
        return [orjson.loads(line) for line in self.audit.read_bytes().splitlines() if line]

    def snapshot(self) -> dict[str, Any]:
        return snapshot(self.server, self.store_uri)

    def settled(self, timeout: float = 60.0) -> dict[str, Any]:
        return settled(self.server, self.store_uri, timeout)


def snapshot(server: RunningServer, store_uri: str) -> dict[str, Any]:
    """Every non-empty collection of the server's database (count and a digest of its
    documents) and every file under the object directory (path and size); the audit
    trail's AuditEvents and chain left out, as every access adds to them."""
    state: dict[str, Any] = {}
    with MongoClient(store_uri) as client:
        database = client[server.database]
        for name in sorted(database.list_collection_names()):
            if name in AUDIT_COLLECTIONS:
                continue
            # the audit trail records every access, refused ones too (issue 15)
            records = {"t": {"$ne": "AuditEvent"}} if name == "history" else {}
            # an instance's DICOM JSON is a cache the server fills in the background 10 s
            # after ingest went quiet (imaging/services.py fill_metadata; `nm` flags a
            # row it has not filled yet): not a write
            # of any request, and it may land between two snapshots of a test
            hidden = {"meta": 0, "nm": 0} if name == "dicom_instances" else None
            documents = sorted(bson.encode(d) for d in database[name].find(records, hidden))
            if documents:
                digest = hashlib.sha256(b"".join(documents)).hexdigest()
                state[f"collection {name}"] = (len(documents), digest)
    objects = server.data_dir / "objects"
    for path in sorted(objects.rglob("*")) if objects.exists() else []:
        if path.is_file():
            state[f"file {path.relative_to(objects)}"] = path.stat().st_size
    return state


def settled(server: RunningServer, store_uri: str, timeout: float = 60.0) -> dict[str, Any]:
    """The snapshot once background work (the ImagingStudy upkeep) has stopped changing
    it: the same twice, a second apart."""
    deadline = time.monotonic() + timeout
    last = snapshot(server, store_uri)
    while True:
        time.sleep(1.0)
        now = snapshot(server, store_uri)
        if now == last:
            return now
        assert time.monotonic() < deadline, "the store never settled"
        last = now


def _wait_listening(port: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError("storescp did not start")


@contextmanager
def every_door_server(
    root: Path,
    store_uri: str,
    *,
    auth: bool = False,
    env: dict[str, str] | None = None,
    seed_headers: Callable[[RunningServer], dict[str, str]] | None = None,
) -> Iterator[Door]:
    """The server seeded; with `auth`, a token-checking one: `env` names its issuer and
    `seed_headers` gives the headers of the seeding requests (a token that may write, whose
    audience is the started server's FHIR base)."""
    dest_port, dest_dir = free_port(), root / "dest"
    dest_dir.mkdir()
    storescp = subprocess.Popen(
        ["/usr/bin/storescp", "-aet", "DEST", "-od", str(dest_dir), str(dest_port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_listening(dest_port)
        peers = root / "peers.yaml"
        peers.write_text(PEERS.format(port=dest_port))
        rule, audit = root / "rule.json", root / "audit.jsonl"
        rule.write_bytes(b"{}")
        env = {
            **(env or {}),
            "MEDBRIDGE_EXTRA_HOOKS": HOOKS,
            "MEDBRIDGE_TEST_ACCESS_FILE": str(rule),
            "MEDBRIDGE_TEST_AUDIT_FILE": str(audit),
            "MEDBRIDGE_DICOM_PEERS_FILE": str(peers),
        }
        server = start_server(root / "server", store_uri, env=env, auth=auth)
        try:
            headers = seed_headers(server) if seed_headers else {}
            yield _populated(server, store_uri, root, rule, audit, dest_dir, headers)
        finally:
            server.stop()
    finally:
        storescp.kill()
        storescp.wait(10)


def _linked_patient(server: RunningServer, study: str, headers: dict[str, str]) -> str:
    """The FHIR Patient id of the study's ImagingStudy, once the upkeep wrote it."""
    deadline = time.monotonic() + 60
    while True:
        answer = httpx.get(f"{server.fhir_base}/ImagingStudy/{study}", headers=headers, timeout=30)
        if answer.status_code == 200:
            return str(answer.json()["subject"]["reference"]).removeprefix("Patient/")
        assert time.monotonic() < deadline, f"ImagingStudy/{study}: {answer.status_code}"
        time.sleep(0.2)


def _populated(
    server: RunningServer,
    store_uri: str,
    root: Path,
    rule: Path,
    audit: Path,
    dest_dir: Path,
    headers: dict[str, str],
) -> Door:
    run = uuid.uuid4().hex[:12]
    study, series = generate_uid(), generate_uid()
    path = root / "seed.dcm"
    path.write_bytes(renamed("CT_small.dcm", study=study, series=series, patient_id=f"E{run}"))
    assert successes(storescu(server.dicom_port, [path])) == 1
    patient = _linked_patient(server, study, headers)
    answer = httpx.get(
        f"{server.base_url}/dicomweb/studies/{study}/instances", headers=headers, timeout=60.0
    )
    sop = answer.json()[0]["00080018"]["Value"][0]
    # made now, so the background fill of DICOM JSON has nothing left to write later
    metadata = httpx.get(
        f"{server.base_url}/dicomweb/studies/{study}/metadata", headers=headers, timeout=60.0
    )
    assert metadata.status_code == 200
    message = root / "seed.hl7"
    message.write_bytes(adt("A01", run, f"H{run}").encode())
    sent = subprocess.run(
        [str(MLLP_SEND), "--loose", "--file", str(message), "--port", str(server.mllp_port),
         "127.0.0.1"],
        capture_output=True, timeout=60, check=True,
    )  # fmt: skip
    assert f"MSA|AA|A01-{run}" in sent.stdout.decode(), sent.stdout
    with MongoClient(store_uri) as client:
        database = client[server.database]
        receipt = database["hl7_messages"].find_one({"key": f"RIS|HOSP|A01-{run}"})
        assert receipt is not None
    found = httpx.get(
        f"{server.fhir_base}/Patient", params={"identifier": f"H{run}"}, headers=headers, timeout=30
    )
    hl7_patient = found.json()["entry"][0]["resource"]["id"]
    return Door(server, store_uri, root, rule, audit, dest_dir, run, study, series, sop,
                patient, hl7_patient, str(receipt["_id"]), headers)  # fmt: skip
