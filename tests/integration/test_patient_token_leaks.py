"""A patient token never reaches another patient's data, over every route that can name
it (issue 14, "zero leaks").

Two patients, A and B, each with two Observations, an Encounter, a ServiceRequest, a
DiagnosticReport and an ImagingStudy made from a DICOM study stored by STOW-RS; some of
their records reference the other's (A's report lists B's Observation as a result, A's
Observation has B's as a member, and the reverse), so `_include`, `_revinclude` and
`$everything` have a path toward B to follow. The token is `patient/*.cruds` for A.

Every answer is searched as raw bytes for B's markers (its Patient id and identifier, its
name, the ids of its records, its study, series and instance UIDs). A marker the request
itself carries may come back only where the server echoes the request (a Bundle's
`link`, an OperationOutcome's `diagnostics`); anywhere else it is a leak.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlencode

import httpx
import orjson
import pytest
from joserfc.jwk import ECKey
from pydicom.uid import generate_uid

from medbridge.embedded_mongo import EmbeddedMongo
from tests.integration.test_every_route import dicomweb_probe, dicomweb_routes, fhir_probes
from tests.integration.test_smart_enforce import ISSUER, Minter, bearer, linked_patient, stow
from tests.support.dicom import renamed
from tests.support.every_door import settled
from tests.support.servers import IsolatedStore, RunningServer, start_server

pytestmark = pytest.mark.integration

FHIR_JSON = "application/fhir+json"
COMPARTMENT_TYPES = ("Observation", "Encounter", "ServiceRequest", "DiagnosticReport",
                     "ImagingStudy")  # fmt: skip


@dataclass
class Person:
    patient: str  # FHIR Patient id
    patient_id: str  # DICOM PatientID, the Patient's identifier
    name: str
    study: str
    series: str
    sop: str
    records: dict[str, list[str]] = field(default_factory=dict)  # type -> ids

    def markers(self) -> set[str]:
        """What only B's own records say. The first Observation's id is left out: the
        other person's records reference it (their own content, which they may read);
        that no entry *is* that Observation is `foreign_entries`' check."""
        ids = {i for kind, records in self.records.items() for i in records
               if (kind, i) != ("Observation", self.records["Observation"][0])}  # fmt: skip
        return {self.patient, self.patient_id, self.name, self.study, self.series, self.sop,
                *ids}  # fmt: skip

    def references(self) -> set[str]:
        return {f"Patient/{self.patient}"} | {
            f"{kind}/{i}" for kind, ids in self.records.items() for i in ids
        }


@dataclass
class World:
    server: RunningServer
    store_uri: str
    minter: Minter
    a: Person
    b: Person
    system: dict[str, str]  # headers of a system token
    token: dict[str, str]  # headers of A's patient token


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory, store: EmbeddedMongo | IsolatedStore
) -> Iterator[World]:
    root = tmp_path_factory.mktemp("leaks")
    key = ECKey.generate_key("P-256", parameters={"kid": "k1"}, private=True)
    jwks = root / "jwks.json"
    jwks.write_bytes(orjson.dumps({"keys": [key.as_dict(private=False)]}))
    env = {"MEDBRIDGE_AUTH_ISSUER": ISSUER, "MEDBRIDGE_AUTH_JWKS": str(jwks)}
    server = start_server(root / "server", store.uri, env=env, auth=True)
    try:
        minter = Minter(key, server.fhir_base)
        system = bearer(minter.token("system/*.cruds"))
        run = uuid.uuid4().hex[:10]
        a, b = (_person(server, system, letter, word, run)
                for letter, word in (("a", "ALPHA"), ("b", "BRAVO")))  # fmt: skip
        _records(server, system, a, b)
        token = bearer(minter.token("patient/*.cruds", a.patient))
        yield World(server, store.uri, minter, a, b, system, token)
    finally:
        server.stop()


def _person(server: RunningServer, system: dict[str, str], letter: str, word: str,
            run: str) -> Person:  # fmt: skip
    study, series = generate_uid(), generate_uid()
    patient_id, name = f"P{letter}{run}", f"{word}{letter}{run}"
    stow(server, system["Authorization"].removeprefix("Bearer "),
         renamed("CT_small.dcm", study=study, series=series, patient_id=patient_id,
                 PatientName=f"{name}^{word}"))  # fmt: skip
    patient = linked_patient(server, system["Authorization"].removeprefix("Bearer "), study)
    instances = httpx.get(f"{server.base_url}/dicomweb/studies/{study}/instances",
                          headers=system, timeout=60)  # fmt: skip
    sop = instances.json()[0]["00080018"]["Value"][0]
    person = Person(patient, patient_id, name, study, series, sop)
    person.records["ImagingStudy"] = [study]
    return person


def _create(server: RunningServer, system: dict[str, str], resource: dict[str, Any]) -> str:
    answer = httpx.post(f"{server.fhir_base}/{resource['resourceType']}", json=resource,
                        headers={**system, "content-type": FHIR_JSON}, timeout=30)  # fmt: skip
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


def _records(server: RunningServer, system: dict[str, str], a: Person, b: Person) -> None:
    """Each person's records; A's and B's second Observation and report reference the
    other person's first Observation (what `_include`, `_revinclude` could follow)."""
    for person in (a, b):
        subject = {"reference": f"Patient/{person.patient}"}
        first = _create(server, system, _observation(person, subject, "1"))
        person.records["Observation"] = [first]
        for kind in ("Encounter", "ServiceRequest"):
            body = {"resourceType": kind, "subject": subject,
                    "identifier": [{"value": f"{kind}-{person.name}"}],
                    **({"status": "finished", "class": {"code": "AMB"}} if kind == "Encounter"
                       else {"status": "active", "intent": "order"})}  # fmt: skip
            person.records[kind] = [_create(server, system, body)]
    for person, other in ((a, b), (b, a)):
        subject = {"reference": f"Patient/{person.patient}"}
        crossing = {"reference": f"Observation/{other.records['Observation'][0]}"}
        second = _observation(person, subject, "2")
        second["hasMember"] = [crossing]
        person.records["Observation"].append(_create(server, system, second))
        report = {"resourceType": "DiagnosticReport", "status": "final",
                  "code": {"text": "report"}, "subject": subject,
                  "identifier": [{"value": f"report-{person.name}"}],
                  "result": [{"reference": f"Observation/{person.records['Observation'][0]}"},
                             crossing],
                  "imagingStudy": [{"reference": f"ImagingStudy/{person.study}"}]}  # fmt: skip
        person.records["DiagnosticReport"] = [_create(server, system, report)]


def _observation(person: Person, subject: dict[str, str], n: str) -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final", "subject": subject,
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            "identifier": [{"value": f"obs{n}-{person.name}"}]}  # fmt: skip


# -- the leak check -----------------------------------------------------------------------


def _echo_free(document: Any) -> Any:
    """The JSON answer without the places a server echoes the request."""
    if isinstance(document, dict):
        return {k: _echo_free(v) for k, v in document.items()
                if k not in ("link", "diagnostics")}  # fmt: skip
    if isinstance(document, list):
        return [_echo_free(v) for v in document]
    return document


def foreign_entries(world: World, document: Any) -> list[str]:
    """B's records among the resources of a Bundle (at any depth: batch answers hold
    searchsets)."""
    found = []
    if isinstance(document, dict):
        if "resourceType" in document and "id" in document:
            reference = f"{document['resourceType']}/{document['id']}"
            if reference in world.b.references():
                found.append(reference)
        for value in document.values():
            found += foreign_entries(world, value)
    elif isinstance(document, list):
        for value in document:
            found += foreign_entries(world, value)
    return found


def leaks(world: World, answer: httpx.Response, request: str) -> list[str]:
    """B's markers found in the answer (body or headers) beyond echoes of the request,
    and B's records among its resources."""
    found = []
    if answer.headers.get("content-type", "").startswith(("application/fhir+json",
                                                          "application/json")):  # fmt: skip
        found += foreign_entries(world, answer.json())
    raw = answer.content.lower() + b"\n" + str(answer.headers.raw).lower().encode()
    echo_free: bytes | None = None
    for marker in sorted(world.b.markers()):
        needle = marker.lower().encode()
        if needle not in raw:
            continue
        if marker.lower() in request.lower():
            if echo_free is None:
                try:
                    echo_free = orjson.dumps(_echo_free(answer.json())).lower()
                except ValueError:
                    echo_free = raw
            if needle not in echo_free:
                continue
        found.append(marker)
    return found


@dataclass(frozen=True)
class Ask:
    label: str
    method: str
    path: str  # under the server's base URL
    expect: frozenset[int]
    body: Any = None
    content_type: str = FHIR_JSON
    total: int | None = None  # Bundle.total when the answer is a searchset

    def send(self, world: World) -> httpx.Response:
        headers = dict(world.token)
        content = None
        if self.body is not None:
            headers["content-type"] = self.content_type
            content = self.body if isinstance(self.body, bytes) else orjson.dumps(self.body)
        return httpx.request(self.method, world.server.base_url + self.path, headers=headers,
                             content=content, timeout=60)  # fmt: skip

    def request_text(self) -> str:
        body = self.body if isinstance(self.body, bytes) else orjson.dumps(self.body)
        return self.path + "\n" + body.decode(errors="replace")


def get(label: str, path: str, expect: int, total: int | None = None) -> Ask:
    return Ask(label, "GET", path, frozenset({expect}), total=total)


def q(path: str, **params: str) -> str:
    return f"{path}?{urlencode(params)}"


def by_id_asks(b: Person) -> list[Ask]:
    """read and vread of each of B's records: 404, as for no record. Instance history
    answers as for an id that does not exist: 404 for a Patient (the hook's), an empty
    history for the other types (what a made-up id gets too, asked here as well)."""
    asks = []
    for kind, ids in {"Patient": [b.patient], **b.records}.items():
        made_up = str(uuid.uuid4())
        for rid in [*ids, made_up]:
            label = "made-up id" if rid == made_up else "B"
            history = (
                get(f"history {kind} {label}", f"/fhir/{kind}/{rid}/_history", 404)
                if kind == "Patient"
                else get(f"history {kind} {label}", f"/fhir/{kind}/{rid}/_history", 200, 0)
            )
            asks += [get(f"read {kind} {label}", f"/fhir/{kind}/{rid}", 404),
                     get(f"vread {kind} {label}", f"/fhir/{kind}/{rid}/_history/1", 404),
                     history]  # fmt: skip
    asks.append(get("$everything of B", f"/fhir/Patient/{b.patient}/$everything", 404))
    return asks


def search_asks(a: Person, b: Person) -> list[Ask]:
    """Searches naming B by every parameter that can: each finds nothing."""
    asks = [
        get("Patient _id", q("/fhir/Patient", _id=b.patient), 200, 0),
        get("Patient identifier", q("/fhir/Patient", identifier=b.patient_id), 200, 0),
        get("Patient name", q("/fhir/Patient", name=b.name), 200, 0),
        get("Patient _has", q("/fhir/Patient", **{
            "_has:Observation:subject:_id": b.records["Observation"][0]}), 200, 0),
        get("Patient _has identifier", q("/fhir/Patient", **{
            "_has:Observation:subject:identifier": f"obs1-{b.name}"}), 200, 0),
        get("Patient _revinclude", q("/fhir/Patient", _id=b.patient,
                                     _revinclude="Observation:subject"), 200, 0),
    ]  # fmt: skip
    for kind in COMPARTMENT_TYPES:
        ids = b.records[kind]
        link = "patient" if kind == "ImagingStudy" else "subject"
        asks += [
            get(f"{kind} patient=B", q(f"/fhir/{kind}", patient=b.patient), 200, 0),
            get(f"{kind} patient=Patient/B", q(f"/fhir/{kind}", patient=f"Patient/{b.patient}"),
                200, 0),
            get(f"{kind} {link}=Patient/B", q(f"/fhir/{kind}", **{link: f"Patient/{b.patient}"}),
                200, 0),
            get(f"{kind} _id", q(f"/fhir/{kind}", _id=",".join(ids)), 200, 0),
            get(f"{kind} chained name", q(f"/fhir/{kind}", **{f"{link}:Patient.name": b.name}),
                200, 0),
            get(f"{kind} chained identifier",
                q(f"/fhir/{kind}", **{f"{link}:Patient.identifier": b.patient_id}), 200, 0),
            Ask(f"{kind} _search by POST", "POST", f"/fhir/{kind}/_search", frozenset({200}),
                urlencode({"patient": b.patient}).encode(),
                "application/x-www-form-urlencoded", 0),
        ]  # fmt: skip
    asks.append(
        get(
            "ImagingStudy identifier",
            q("/fhir/ImagingStudy", identifier=f"urn:oid:{b.study}"),
            200,
            0,
        )
    )
    return asks


def toward_b_asks(a: Person, b: Person) -> list[Ask]:
    """A's own searches that would reach B by a reference: only A's records come back."""
    own = {kind: len(ids) for kind, ids in a.records.items()}
    return [
        get("Observation of A", q("/fhir/Observation", patient=a.patient), 200,
            own["Observation"]),
        get("Observation, no patient named", q("/fhir/Observation", _count="100"), 200,
            own["Observation"]),
        get("Observation _include has-member", q("/fhir/Observation", patient=a.patient,
            _include="Observation:has-member"), 200, own["Observation"]),
        get("Observation _include:iterate", q("/fhir/Observation", patient=a.patient,
            **{"_include:iterate": "Observation:has-member"}), 200, own["Observation"]),
        get("Observation _revinclude result", q("/fhir/Observation", patient=a.patient,
            _revinclude="DiagnosticReport:result"), 200, own["Observation"]),
        get("Observation _revinclude has-member", q("/fhir/Observation", patient=a.patient,
            _revinclude="Observation:has-member"), 200, own["Observation"]),
        get("DiagnosticReport _include result", q("/fhir/DiagnosticReport",
            _include="DiagnosticReport:result"), 200, 1),
        get("DiagnosticReport chained result", q("/fhir/DiagnosticReport", **{
            "result.identifier": f"obs1-{b.name}"}), 200, 0),
        get("Patient of A _revinclude", q("/fhir/Patient", _id=a.patient,
            _revinclude="Observation:subject"), 200, 1),
        # the reverse: from B's records (which reference A's) toward A's
        get("B's Observation _include has-member", q("/fhir/Observation",
            _id=b.records["Observation"][1], _include="Observation:has-member"), 200, 0),
        get("B's report _include result", q("/fhir/DiagnosticReport",
            _id=b.records["DiagnosticReport"][0], _include="DiagnosticReport:result"), 200, 0),
        get("A's Observation _revinclude", q("/fhir/Observation",
            _id=a.records["Observation"][0], _revinclude="DiagnosticReport:result"), 200, 1),
        get("$everything of A", f"/fhir/Patient/{a.patient}/$everything", 200),
        get("Patient, no id", q("/fhir/Patient", _count="100"), 200, 1),
    ] + [get(f"{kind} history-type", f"/fhir/{kind}/_history", 200)
         for kind in ("Patient", *COMPARTMENT_TYPES)] + [
        get("history-system", "/fhir/_history", 200),
    ]  # fmt: skip


def bundle_asks(a: Person, b: Person) -> list[Ask]:
    reads = [{"request": {"method": "GET", "url": url}} for url in (
        f"Patient/{b.patient}", f"Observation/{b.records['Observation'][0]}",
        f"Observation?patient={b.patient}", f"ImagingStudy/{b.study}",
        f"Patient/{b.patient}/$everything", f"Observation/{b.records['Observation'][0]}/_history",
    )]  # fmt: skip
    return [
        Ask(
            "batch reads of B",
            "POST",
            "/fhir",
            frozenset({200}),
            {"resourceType": "Bundle", "type": "batch", "entry": reads},
        ),
        # a transaction fails whole at its first entry that is not found
        Ask(
            "transaction reads of B",
            "POST",
            "/fhir",
            frozenset({200, 404}),
            {"resourceType": "Bundle", "type": "transaction", "entry": reads},
        ),
    ]


def dicomweb_asks(b: Person) -> list[Ask]:
    """QIDO by B's identifiers finds nothing; every retrieve route the DICOMweb door parses
    (the enumeration of test_every_route.py), with B's UIDs, is 404."""
    asks = [
        get("QIDO StudyInstanceUID", q("/dicomweb/studies", StudyInstanceUID=b.study), 200),
        get("QIDO PatientID", q("/dicomweb/studies", PatientID=b.patient_id), 200),
        get("QIDO PatientName", q("/dicomweb/studies", PatientName=b.name + "*"), 200),
        get("QIDO series", q("/dicomweb/series", StudyInstanceUID=b.study), 200),
        get("QIDO instances", q("/dicomweb/instances", SOPInstanceUID=b.sop), 200),
        get("QIDO all studies", "/dicomweb/studies", 200),
    ]
    where = SimpleNamespace(study=b.study, series=b.series, sop=b.sop, run="leak")
    for key, parts in sorted(dicomweb_routes(frozenset({"GET"})).items()):
        probe = dicomweb_probe(where, key, parts)  # type: ignore[arg-type]
        path = probe.path + ("?" + urlencode(probe.params) if probe.params else "")
        # a search inside B's study may answer empty or "no such study"; a retrieve is 404
        expect = {200, 204, 404} if key[1] == "search" else {404}
        asks.append(Ask(probe.label, "GET", path, frozenset(expect)))
    return asks


def test_patient_token_sees_nothing_of_another_patient(world: World) -> None:
    a, b = world.a, world.b
    asks = (by_id_asks(b) + search_asks(a, b) + toward_b_asks(a, b) + bundle_asks(a, b)
            + dicomweb_asks(b))  # fmt: skip
    failures = []
    for ask in asks:
        answer = ask.send(world)
        if answer.status_code not in ask.expect:
            failures.append((ask.label, ask.path, answer.status_code, answer.text[:200]))
            continue
        leaked = leaks(world, answer, ask.request_text())
        if leaked:
            failures.append((ask.label, ask.path, "LEAK", leaked))
        if ask.total is not None:
            body = answer.json()
            total = body.get("total")
            matches = [e for e in body.get("entry", [])
                       if e.get("search", {}).get("mode", "match") == "match"]  # fmt: skip
            if (total is not None and total != ask.total) or len(matches) != ask.total:
                failures.append((ask.label, ask.path, "total", total, len(matches)))
    assert failures == [], "\n".join(map(str, failures))
    assert len(asks) > 100


def test_own_data_is_still_shown(world: World) -> None:
    """The check above is not vacuous: A's token reads A's records, and the system token
    reads B's."""
    a, b = world.a, world.b
    for kind, ids in a.records.items():
        for rid in ids:
            answer = httpx.get(f"{world.server.fhir_base}/{kind}/{rid}", headers=world.token)
            assert answer.status_code == 200, (kind, answer.text)
    everything = httpx.get(f"{world.server.fhir_base}/Patient/{a.patient}/$everything",
                           headers=world.token, timeout=60)  # fmt: skip
    assert a.records["DiagnosticReport"][0] in everything.text
    study = httpx.get(f"{world.server.base_url}/dicomweb/studies/{a.study}/metadata",
                      headers=world.token, timeout=60)  # fmt: skip
    assert study.status_code == 200
    answer = httpx.get(f"{world.server.fhir_base}/Observation/{b.records['Observation'][0]}",
                       headers=world.system)  # fmt: skip
    assert answer.status_code == 200
    assert leaks(world, answer, "") != []


# -- writes toward B ----------------------------------------------------------------------


def test_patient_token_cannot_write_into_another_patient(world: World) -> None:
    a, b = world.a, world.b
    fhir, token = world.server.fhir_base, world.token
    own = a.records["Observation"][0]
    toward_b = {"reference": f"Patient/{b.patient}"}
    before = settled(world.server, world.store_uri)
    attempts = [
        ("PATCH A's Observation to B", httpx.patch(
            f"{fhir}/Observation/{own}", headers={**token,
            "content-type": "application/json-patch+json"},
            content=orjson.dumps([{"op": "replace", "path": "/subject", "value": toward_b}]))),
        ("PUT A's Observation to B", httpx.put(
            f"{fhir}/Observation/{own}", headers={**token, "content-type": FHIR_JSON},
            content=orjson.dumps({**_observation(a, toward_b, "1"), "id": own}))),
        ("POST an Observation of B", httpx.post(
            f"{fhir}/Observation", headers={**token, "content-type": FHIR_JSON},
            content=orjson.dumps(_observation(a, toward_b, "3")))),
        ("PUT B's Observation to A", httpx.put(
            f"{fhir}/Observation/{b.records['Observation'][0]}",
            headers={**token, "content-type": FHIR_JSON},
            content=orjson.dumps({**_observation(a, {"reference": f"Patient/{a.patient}"}, "1"),
                                  "id": b.records["Observation"][0]}))),
        ("DELETE B's Observation", httpx.delete(
            f"{fhir}/Observation/{b.records['Observation'][0]}", headers=token)),
        ("transaction POST for B", httpx.post(fhir, headers={**token, "content-type": FHIR_JSON},
            content=orjson.dumps(_transaction([
                {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": _observation(a, toward_b, "4"),
                 "request": {"method": "POST", "url": "Observation"}}])))),
        ("transaction PATCH to B", httpx.post(fhir, headers={**token, "content-type": FHIR_JSON},
            content=orjson.dumps(_transaction([_patch_entry(own, toward_b)])))),
        ("batch POST for B", httpx.post(fhir, headers={**token, "content-type": FHIR_JSON},
            content=orjson.dumps({"resourceType": "Bundle", "type": "batch", "entry": [
                {"resource": _observation(a, toward_b, "5"),
                 "request": {"method": "POST", "url": "Observation"}},
                _patch_entry(own, toward_b)]}))),
    ]  # fmt: skip
    for label, answer in attempts:
        if label.startswith("batch"):
            assert answer.status_code == 200, (label, answer.text)
            statuses = [e["response"]["status"] for e in answer.json()["entry"]]
            assert all(s.startswith(("403", "404")) for s in statuses), (label, statuses)
        else:
            assert answer.status_code in {403, 404}, (label, answer.status_code, answer.text)
        assert leaks(world, answer, label + answer.request.content.decode()) == [], label
    assert settled(world.server, world.store_uri) == before


def _transaction(entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def _patch_entry(rid: str, subject: dict[str, str]) -> dict[str, Any]:
    """A transaction PATCH entry: a Binary of the JSON Patch (FHIR R4 3.1.0.11.1)."""
    import base64

    patch = orjson.dumps([{"op": "replace", "path": "/subject", "value": subject}])
    return {"resource": {"resourceType": "Binary", "contentType": "application/json-patch+json",
                         "data": base64.b64encode(patch).decode()},
            "request": {"method": "PATCH", "url": f"Observation/{rid}"}}  # fmt: skip


def test_stow_and_every_unused_method_are_refused(world: World) -> None:
    """STOW-RS by a patient token is 403 (whose instances they are is known only once they
    are parsed), so B's study cannot be extended or overwritten through it."""
    instance = renamed("CT_small.dcm", study=world.b.study, patient_id=world.b.patient_id)
    boundary = "leak"
    body = (f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + instance
            + f"\r\n--{boundary}--\r\n".encode())  # fmt: skip
    before = settled(world.server, world.store_uri)
    for path in ("/dicomweb/studies", f"/dicomweb/studies/{world.b.study}"):
        answer = httpx.post(
            world.server.base_url + path,
            content=body,
            headers={
                **world.token,
                "content-type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            },
        )
        assert answer.status_code == 403, (path, answer.text)
    assert settled(world.server, world.store_uri) == before


def test_every_fhir_interaction_of_the_enumeration_naming_b_leaks_nothing(world: World) -> None:
    """The FHIR probes of issue 12's enumeration (every interaction and operation of the
    CapabilityStatement), with B's Patient id and study UID where they name a record,
    sent with A's token: nothing of B in any answer, and every write naming B refused.
    Last in this module: its creates add records of A's (no total is counted after it)."""
    capability = httpx.get(f"{world.server.fhir_base}/metadata", timeout=30).json()
    where = SimpleNamespace(hl7_patient=world.b.patient, study=world.b.study,
                            run=uuid.uuid4().hex[:8])  # fmt: skip
    probes = fhir_probes(capability, where)  # type: ignore[arg-type]
    versions = {ref: read_version(world, ref) for ref in sorted(world.b.references())}
    failures = []
    for probe in probes:
        answer = httpx.request(probe.method, world.server.base_url + probe.path,
                               params=probe.params, headers={**probe.headers, **world.token},
                               content=probe.body, timeout=60)  # fmt: skip
        request = probe.path + str(probe.params) + (probe.body or b"").decode(errors="replace")
        leaked = leaks(world, answer, request)
        if leaked:
            failures.append((probe.label, "LEAK", leaked))
        names_b = world.b.patient in probe.path or world.b.study in probe.path
        writes = probe.method in {"PUT", "PATCH", "DELETE"}
        if names_b and writes and answer.status_code not in {403, 404}:
            failures.append((probe.label, answer.status_code, answer.text[:200]))
    assert failures == [], "\n".join(map(str, failures))
    assert {"Patient read", "Patient/$everything", "ImagingStudy delete", "batch"} <= {
        p.label for p in probes
    }
    assert {ref: read_version(world, ref) for ref in versions} == versions


def read_version(world: World, reference: str) -> str:
    answer = httpx.get(f"{world.server.fhir_base}/{reference}", headers=world.system, timeout=30)
    assert answer.status_code == 200, (reference, answer.text)
    return str(answer.json()["meta"]["versionId"])
