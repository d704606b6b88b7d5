"""Every route of every door is refused by a deny-all authorize hook, and nothing is read
or written (issue 12, "the proof that nothing is left out").

The routes are derived, never typed: the HTTP routes of the app `serve` listens with
(`medbridge.app.assemble`), every interaction and operation of the server's own
CapabilityStatement, every DICOMweb resource the door's parser accepts, every admin
operation the server registers, every DIMSE service of the AE's presentation contexts,
and every leaf command of the `medbridge` parser. A route, interaction, SOP class or
command that is neither probed here nor in an exemption table (with its reason) fails
the test until it is covered.

The hook is tests/support/access_hooks.py `deny_every_door`, registered through the
composition by `MEDBRIDGE_EXTRA_HOOKS`; every answer must carry its catalog code, so a
refusal by input validation instead of the hook fails too.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from pydicom.uid import UID, generate_uid
from pymongo import AsyncMongoClient
from pynetdicom import AllStoragePresentationContexts

from access.errors import AccessError
from fhir_server.repository import Repository
from imaging.dicomweb.endpoint import parse_route
from imaging.dimse import sop_classes
from imaging.dimse.config import DimseConfig
from imaging.dimse.service import build_ae
from medbridge.app import assemble
from medbridge.cli import _parser
from medbridge.compose import ImagingPlan, compose
from medbridge.health import Readiness
from medbridge.running import find_running
from medbridge.server import admin_api, bridge_options, build_portal, viewer_site
from medbridge.settings import Settings
from smart.authority import build_authority
from tests.integration.test_mllp import adt, orm
from tests.support.access_hooks import DENY_ALL_CODE
from tests.support.dcmtk import findscu, run, storescu, successes
from tests.support.dicom import renamed
from tests.support.every_door import MLLP_SEND, Door, every_door_server

pytestmark = pytest.mark.integration

# HTTP routes that answer without authorization, and why
HTTP_EXEMPT = {
    "/health": "liveness/readiness for a load balancer: names no record, reads no store",
    "/fhir/.well-known/smart-configuration": "SMART discovery: public by SMART App Launch, "
    "describes the authorization server, names no record",
    "/.well-known/openid-configuration": "OpenID Connect discovery: public by design",
    "/auth/.well-known/openid-configuration": "OpenID Connect discovery at the issuer",
    "/auth/jwks": "the public halves of the signing keys: public by design",
}
# the authorization server's own endpoints: the caller authenticates there (as a user on
# the sign-in page, as a client at the token endpoint) and gets a token; they read and
# write only the authorization server's grants (smart_* collections), never a record,
# and the token they issue is what the pipeline's hooks check on every other route
AUTH_SERVER = {
    "/auth/authorize": "sign-in and approval pages (docs/smart.md)",
    "/auth/token": "token endpoint: client authentication, PKCE, assertions",
    "/auth/introspect": "token introspection: the calling client authenticates",
    "/auth/revoke": "token revocation: the calling client authenticates",
}
# the patient portal (portal/, docs/portal.md): an app, not a door. Its pages read and
# write nothing themselves; every record they show or Consent they write goes through
# the FHIR and DICOMweb doors with the signed-in person's token (so this test's deny-all
# hook refuses those calls), and without a session they answer the sign-in page
PORTAL = {
    "/": "redirects to /portal/",
    "/portal": "redirects to /portal/",
    "/portal/": "the record page (the FHIR door, the person's token) or the sign-in page",
    "/portal/login": "starts the standalone launch: a redirect to /auth/authorize",
    "/portal/callback": "the launch's redirect URI: the code goes to /auth/token",
    "/portal/logout": "revokes the session's tokens at /auth/revoke",
    "/portal/language": "sets the language cookie",
    "/portal/privacy": "reads Consents and records through the FHIR door",
    "/portal/privacy/hide": "writes a Consent through the FHIR door",
    "/portal/privacy/show": "deletes a Consent through the FHIR door",
    "/portal/research": "reads and writes the research Consent through the FHIR door",
    "/portal/access-log": "searches AuditEvent through the FHIR door",
    "/portal/thumbnail/{uid}": "a WADO-RS thumbnail through the DICOMweb door",
    "/portal/reports/{id}/pdf/{index:int}": "a DiagnosticReport and Binary through the FHIR door",
    "/portal/static/portal.css": "the pages' style sheet: names no record",
}
# the image viewer's files (viewer/site.py): public like any web page's scripts; they
# read no record and take no token: the viewer reads studies through /dicomweb, with the
# signed-in user's token (docs/viewer.md). Checked below to answer HTML without a token.
PUBLIC_STATIC = {
    "/viewer": "redirects to /viewer/",
    "/viewer/{path:path}": "OHIF's static build, its generated app-config.js, index.html "
    "for the app's own routes (deep links), or the page saying how to install it",
}
# FHIR interactions not probed here, and why (the deny-all hook refuses them too)
FHIR_EXEMPT = {
    "capabilities": "GET /fhir/metadata is public by FHIR and SMART (discovery); it "
    "describes the server, not a record",
}
# `medbridge` commands that read or write no data themselves, and why
CLI_EXEMPT = {
    ("serve",): "starts the server: every access it answers is a route probed here",
}
# how a DIMSE peer learns of a refusal: the service's status, or no association at all
# (a refused C-MOVE is A801, "move destination unknown": pynetdicom associates with the
# destination before it takes any other status, and a refused move must not reach it)
DIMSE_REFUSALS = ("0x0124", "0x124", "0xa801", "movedestinationunknown", "association rejected")
FHIR_JSON = "application/fhir+json"


@dataclass(frozen=True)
class Probe:
    label: str
    method: str
    path: str
    params: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    # a method the route takes but no interaction uses: refused before any access (405,
    # 404) or by the hook, always with the door's error and never with data
    unrouted: bool = False


@dataclass(frozen=True)
class Served:
    """What the app `serve` builds holds: its HTTP routes and admin operations."""

    routes: dict[str, frozenset[str]]  # path template -> methods
    admin_operations: list[str]


@pytest.fixture(scope="module")
def door(tmp_path_factory: pytest.TempPathFactory, store: Any) -> Iterator[Door]:
    with every_door_server(tmp_path_factory.mktemp("every-route"), store.uri) as running:
        yield running


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, store: Any) -> Served:
    """The app as `serve` assembles it, composed on a database of its own (nothing is
    started: only its route table and admin operations are read)."""
    root = tmp_path_factory.mktemp("served")

    async def build() -> Served:
        settings = Settings(data_dir=root, database=f"routes{uuid.uuid4().hex[:8]}")
        client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(store.uri)
        try:
            plan = ImagingPlan(settings.objects_dir, lambda: "http://127.0.0.1/dicomweb", 0)
            composition = await compose(
                settings, Repository(client, settings.database), imaging=plan,
                bridge=bridge_options(settings),
            )  # fmt: skip
            imaging, processor = composition.imaging, composition.processor
            assert imaging is not None
            assert processor is not None
            repository = composition.repository
            authority = await build_authority(
                repository, lambda: "http://127.0.0.1", settings.authority_options()
            )
            admin = admin_api(composition.router, processor, imaging, authority, composition.audit)
            app = assemble(
                composition.router, Readiness(), settings.max_body_bytes,
                lambda: "http://127.0.0.1", imaging.dicomweb.handle, admin, authority,
                build_portal(settings, lambda: "http://127.0.0.1"),
                viewer_site(settings, lambda: "http://127.0.0.1"),
            )  # fmt: skip
            routes = {r.path: frozenset(getattr(r, "methods", None) or ()) for r in app.routes}
            return Served(routes, sorted(admin.handlers))
        finally:
            await client.close()

    return asyncio.run(build())


@pytest.fixture(scope="module")
def capability(door: Door) -> dict[str, Any]:
    answer = httpx.get(f"{door.server.fhir_base}/metadata", timeout=30.0)
    assert answer.status_code == 200, answer.text
    loaded: dict[str, Any] = answer.json()
    return loaded


# HTTP -------------------------------------------------------------------------------


def fhir_probes(capability: dict[str, Any], door: Door) -> list[Probe]:
    """One request per interaction and operation the CapabilityStatement declares."""
    rest = capability["rest"][0]
    ids = {"Patient": door.hl7_patient, "ImagingStudy": door.study}
    probes: list[Probe] = []
    for interaction in rest.get("interaction", []):
        code = interaction["code"]
        if code not in FHIR_EXEMPT:
            assert code in SYSTEM_INTERACTIONS, f"no probe for system interaction {code}"
            probes += SYSTEM_INTERACTIONS[code](door)
    for operation in rest.get("operation", []):
        probes.append(Probe(f"${operation['name']}", "POST", f"/fhir/${operation['name']}",
                            headers={"content-type": FHIR_JSON},
                            body=b'{"resourceType":"Parameters"}'))  # fmt: skip
    for resource in rest["resource"]:
        kind = resource["type"]
        rid = ids.get(kind, f"probe{door.run}")
        for interaction in resource.get("interaction", []):
            code = interaction["code"]
            assert code in TYPE_INTERACTIONS, f"no probe for {kind} interaction {code}"
            probes += TYPE_INTERACTIONS[code](kind, rid)
        for operation in resource.get("operation", []):
            name = operation["name"]
            path = f"/fhir/{kind}/{rid}/${name}"
            probes.append(Probe(f"{kind}/${name}", "GET", path))
            probes.append(Probe(f"{kind}/${name} by POST", "POST", path,
                                headers={"content-type": FHIR_JSON},
                                body=b'{"resourceType":"Parameters"}'))  # fmt: skip
    return probes


def _json(document: Any) -> bytes:
    return orjson.dumps(document)


def _bundle(kind: str, entry: dict[str, Any]) -> bytes:
    return _json({"resourceType": "Bundle", "type": kind, "entry": [entry]})


SYSTEM_INTERACTIONS: dict[str, Callable[[Door], list[Probe]]] = {
    "history-system": lambda d: [Probe("history-system", "GET", "/fhir/_history")],
    "search-system": lambda d: [Probe("search-system", "GET", "/fhir", {"_count": "1"})],
    "batch": lambda d: [
        Probe("batch", "POST", "/fhir", headers={"content-type": FHIR_JSON},
              body=_bundle("batch", {"request": {"method": "GET",
                                                 "url": f"Patient/{d.hl7_patient}"}}))
    ],
    "transaction": lambda d: [
        Probe("transaction", "POST", "/fhir", headers={"content-type": FHIR_JSON},
              body=_bundle("transaction", {
                  "fullUrl": "urn:uuid:" + str(uuid.uuid4()),
                  "resource": {"resourceType": "Patient", "gender": "female"},
                  "request": {"method": "POST", "url": "Patient"}}))
    ],
}  # fmt: skip

TYPE_INTERACTIONS: dict[str, Callable[[str, str], list[Probe]]] = {
    "read": lambda t, i: [Probe(f"{t} read", "GET", f"/fhir/{t}/{i}")],
    "vread": lambda t, i: [Probe(f"{t} vread", "GET", f"/fhir/{t}/{i}/_history/1")],
    "update": lambda t, i: [
        Probe(f"{t} update", "PUT", f"/fhir/{t}/{i}", headers={"content-type": FHIR_JSON},
              body=_json({"resourceType": t, "id": i}))
    ],
    "patch": lambda t, i: [
        Probe(f"{t} patch", "PATCH", f"/fhir/{t}/{i}",
              headers={"content-type": "application/json-patch+json"},
              body=_json([{"op": "add", "path": "/language", "value": "en"}]))
    ],
    "delete": lambda t, i: [Probe(f"{t} delete", "DELETE", f"/fhir/{t}/{i}")],
    "history-instance": lambda t, i: [Probe(f"{t} history", "GET", f"/fhir/{t}/{i}/_history")],
    "history-type": lambda t, i: [Probe(f"{t} history-type", "GET", f"/fhir/{t}/_history")],
    "create": lambda t, i: [
        Probe(f"{t} create", "POST", f"/fhir/{t}", headers={"content-type": FHIR_JSON},
              body=_json({"resourceType": t}))
    ],
    "search-type": lambda t, i: [
        Probe(f"{t} search", "GET", f"/fhir/{t}", {"_count": "1"}),
        Probe(f"{t} search by POST", "POST", f"/fhir/{t}/_search",
              headers={"content-type": "application/x-www-form-urlencoded"}, body=b"_count=1"),
    ],
}  # fmt: skip

# the PS3.18 resource words a DICOMweb path is built from; the door's parser decides which
# sequences are routes (a keyword, then an identifier, alternating)
DICOMWEB_WORDS = ("studies", "series", "instances", "metadata", "rendered", "thumbnail",
                  "frames", "bulkdata", "pixeldata", "wado", "workitems")  # fmt: skip
PLACEHOLDER = "1.2.3"


RouteKey = tuple[str, str, str, bool, bool, bool]


def dicomweb_routes(methods: frozenset[str]) -> dict[RouteKey, list[str]]:
    """(method, action, level, which of study/series/instance the path names) -> the first
    path (as words and placeholders) the parser accepts for it, over every alternation of
    words and identifiers up to 8 segments."""
    found: dict[RouteKey, list[str]] = {}
    for depth in range(1, 9):
        for words in itertools.product(DICOMWEB_WORDS, repeat=(depth + 1) // 2):
            parts: list[str] = []
            for n, word in enumerate(words):
                parts.append(word)
                if len(parts) < depth and n < len(words):
                    parts.append(PLACEHOLDER)
            parts = parts[:depth]
            for method in sorted(methods):
                try:
                    route = parse_route(method, "/".join(parts))
                except AccessError:
                    continue
                named = (bool(route.study), bool(route.series), bool(route.sop))
                found.setdefault((method, route.action, route.level, *named), parts)
    return found


def dicomweb_probe(door: Door, key: RouteKey, parts: list[str]) -> Probe:
    """The path with the seeded study's identifiers where the placeholders were."""
    method, action = key[:2]
    values = {"studies": door.study, "series": door.series, "instances": door.sop,
              "frames": "1", "bulkdata": "7FE00010"}  # fmt: skip
    path = [values.get(parts[n - 1], PLACEHOLDER) if p == PLACEHOLDER else p
            for n, p in enumerate(parts)]  # fmt: skip
    params: dict[str, str] = {}
    if action == "wado-uri":
        params = {"requestType": "WADO", "studyUID": door.study, "seriesUID": door.series,
                  "objectUID": door.sop, "contentType": "application/dicom"}  # fmt: skip
    headers, body = {}, None
    if method == "POST":
        instance = renamed("CT_small.dcm", patient_id=f"E{door.run}")
        boundary = "enum" + door.run
        headers = {"content-type": f'multipart/related; type="application/dicom"; '
                                   f"boundary={boundary}"}  # fmt: skip
        body = (f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + instance
                + f"\r\n--{boundary}--\r\n".encode())  # fmt: skip
    template = "/".join(f"{{{parts[n - 1]}}}" if p == PLACEHOLDER else p
                        for n, p in enumerate(parts))  # fmt: skip
    return Probe(f"DICOMweb {method} {template}", method,
                 "/dicomweb/" + "/".join(path), params, headers, body)  # fmt: skip


def refused_over_http(door: Door, probe: Probe) -> None:
    url = door.server.base_url + probe.path
    answer = httpx.request(probe.method, url, params=probe.params, headers=probe.headers,
                           content=probe.body, timeout=60.0)  # fmt: skip
    expected = {403, 404, 405} if probe.unrouted else {403}
    assert answer.status_code in expected, (probe.label, answer.status_code, answer.text[:300])
    if probe.method == "HEAD":
        assert answer.content == b"", probe.label
        return
    body = answer.json()
    if body.get("resourceType") == "OperationOutcome":
        code = body["issue"][0]["details"]["coding"][0]["code"]
    else:
        code = body.get("code")
    if probe.unrouted:
        assert str(code).startswith("MB-"), (probe.label, body)
    else:
        assert code == DENY_ALL_CODE, (probe.label, body)


def probes_of_route(
    template: str, methods: frozenset[str], door: Door, served: Served, cap: dict[str, Any]
) -> list[Probe]:
    """Every request that exercises the route; KeyError for a route nobody covers."""
    fhir = fhir_probes(cap, door)
    derive: dict[str, Callable[[], list[Probe]]] = {
        "/fhir": lambda: [p for p in fhir if p.path == "/fhir"],
        "/fhir/{path:path}": lambda: [p for p in fhir if p.path != "/fhir"],
        "/dicomweb/{path:path}": lambda: [
            dicomweb_probe(door, key, parts)
            for key, parts in sorted(dicomweb_routes(methods).items())
        ],
        "/admin/{name:path}": lambda: [
            Probe(f"admin {name}", "POST", f"/admin/{name}", headers=admin_headers(door),
                  body=_json(ADMIN_PAYLOADS.get(name, {})))
            for name in served.admin_operations
        ],
    }  # fmt: skip
    probes = derive[template]()
    return probes + unrouted(template, methods - {p.method for p in probes}, probes)


def unrouted(template: str, methods: set[str] | frozenset[str], probes: list[Probe]) -> list[Probe]:
    """The route's methods no interaction uses: HEAD on every GET path, any other on the
    route's base. The door must still answer each with an error, before reading anything."""
    extra = [Probe(p.label + " (HEAD)", "HEAD", p.path, p.params, p.headers, unrouted=True)
             for p in probes if p.method == "GET" and "HEAD" in methods]  # fmt: skip
    base = template.split("{")[0]
    extra += [Probe(f"{method} {base}", method, base, unrouted=True)
              for method in sorted(methods - {"HEAD"})]  # fmt: skip
    return extra


ADMIN_PAYLOADS: dict[str, dict[str, Any]] = {"hl7/replay": {"failed": True}}


def admin_headers(door: Door) -> dict[str, str]:
    running = find_running(door.server.data_dir)
    assert running is not None
    return {"authorization": f"Bearer {running.admin_token}", "content-type": "application/json"}


def test_every_http_route_is_probed_or_exempt(
    served: Served, door: Door, capability: dict[str, Any]
) -> None:
    assert served.admin_operations, "the server registers its admin operations"
    for template, methods in served.routes.items():
        if template in HTTP_EXEMPT or template in AUTH_SERVER or template in PORTAL:
            continue
        if template in PUBLIC_STATIC:
            continue
        try:
            probes = probes_of_route(template, methods, door, served, capability)
        except KeyError:
            pytest.fail(f"route {template} is neither probed nor in HTTP_EXEMPT")
        assert probes, template


def test_every_http_route_is_refused_and_nothing_is_read_or_written(
    served: Served, door: Door, capability: dict[str, Any]
) -> None:
    probes = [
        probe
        for template, methods in served.routes.items()
        if template not in HTTP_EXEMPT
        and template not in AUTH_SERVER
        and template not in PORTAL
        and template not in PUBLIC_STATIC
        for probe in probes_of_route(template, methods, door, served, capability)
    ]
    before = door.settled()
    with door.rule_set(deny_all=True):
        for probe in probes:
            refused_over_http(door, probe)
        # what is exempt still answers: the refusals above were the hook's, not a dead server
        for template in HTTP_EXEMPT:
            assert httpx.get(door.server.base_url + template, timeout=30).status_code == 200
        assert set(PUBLIC_STATIC) <= set(served.routes), "the viewer is mounted"
        public_static_answers(door.server.base_url)
    assert door.settled() == before
    labels = {p.label for p in probes}
    for expected in (
        "transaction",
        "Patient/$everything",
        "DICOMweb POST studies/{studies}",
        "admin hl7/replay",
        "Patient update",
        "ImagingStudy read",
    ):
        assert expected in labels, expected  # fmt: skip


def public_static_answers(base: str) -> None:
    """The viewer's routes answer a page (or the page saying how to install it) without
    a token, whatever the hooks decide: they are no access of the pipeline."""
    moved = httpx.get(base + "/viewer", timeout=30)
    assert moved.status_code == 308, moved.text[:300]
    assert moved.headers["location"] == "/viewer/"
    for path in ("/viewer/", "/viewer/viewer"):
        page = httpx.get(base + path, timeout=30)
        assert page.status_code in (200, 503), (path, page.status_code)
        assert page.headers["content-type"].startswith("text/html"), path
        assert "default-src 'self'" in page.headers["content-security-policy"]


# DIMSE ------------------------------------------------------------------------------

# each presentation context the AE accepts belongs to one service (PS3.4); storage SOP
# classes are one service with one probe (C-STORE of a CT image)
SERVICE_OF: dict[UID, str] = {
    sop_classes.Verification: "C-ECHO",
    sop_classes.PatientRootFind: "C-FIND patient root",
    sop_classes.StudyRootFind: "C-FIND study root",
    sop_classes.PatientRootMove: "C-MOVE patient root",
    sop_classes.StudyRootMove: "C-MOVE study root",
    sop_classes.PatientRootGet: "C-GET patient root",
    sop_classes.StudyRootGet: "C-GET study root",
    sop_classes.ModalityWorklistFind: "MWL",
}
STORAGE = frozenset(UID(c.abstract_syntax or "") for c in AllStoragePresentationContexts)


def dimse_services() -> set[str]:
    services = set()
    for context in build_ae(DimseConfig()).supported_contexts:
        uid = UID(context.abstract_syntax or "")
        if uid in STORAGE:
            services.add("C-STORE")
        else:
            assert uid in SERVICE_OF, f"SOP class {uid} is accepted but no service probes it"
            services.add(SERVICE_OF[uid])
    return services


def dimse_probe(door: Door, service: str, out: Path) -> str:
    """Run the service against the server with dcmtk; its output."""
    port = str(door.server.dicom_port)
    root = "-P" if "patient root" in service else "-S"
    level = ["QueryRetrieveLevel=PATIENT", f"PatientID=E{door.run}"] if root == "-P" else [
        "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={door.study}"]  # fmt: skip
    keys = [arg for key in level for arg in ("-k", key)]
    out.mkdir(parents=True, exist_ok=True)
    if service == "C-ECHO":
        return run("echoscu", "-aet", "PROBE", "-aec", "MEDBRIDGE", "127.0.0.1", port)
    if service == "C-STORE":
        path = out / "new.dcm"
        path.write_bytes(renamed("CT_small.dcm", study=generate_uid(), patient_id=f"E{door.run}"))
        output = storescu(door.server.dicom_port, [path], "PROBE")
        assert successes(output) == 0
        return output
    if service == "MWL":
        output, found = findscu(door.server.dicom_port, "-W", ["PatientName"], out, "PROBE")
        assert found == []
        return output
    if service.startswith("C-FIND"):
        keys = [*level, "PatientName"]
        output, found = findscu(door.server.dicom_port, root, keys, out, "PROBE")
        assert found == []
        return output
    if service.startswith("C-MOVE"):
        return run("movescu", root, "-aet", "PROBE", "-aec", "MEDBRIDGE", "-aem", "DEST",
                   *keys, "127.0.0.1", port)  # fmt: skip
    assert service.startswith("C-GET"), service
    output = run("getscu", root, "-aet", "PROBE", "-aec", "MEDBRIDGE", "-od", str(out),
                 *keys, "127.0.0.1", port)  # fmt: skip
    assert list(out.iterdir()) == []
    return output


def test_every_dimse_service_is_refused_and_nothing_is_read_or_written(
    door: Door, tmp_path: Path
) -> None:
    services = dimse_services()
    assert {"C-ECHO", "C-STORE", "MWL", "C-GET study root", "C-MOVE study root"} <= services
    before = door.settled()
    with door.rule_set(deny_all=True):
        for service in sorted(services):
            audited = len(door.audit_lines())
            output = dimse_probe(door, service, tmp_path / service.replace(" ", "-"))
            assert any(mark in output.lower() for mark in DIMSE_REFUSALS), (service, output[-2000:])
            assert "(Success)" not in output, (service, output[-2000:])
            # the refusal was the hook's, in a pipeline pass (not the AE title rules)
            passes = [r for r in door.audit_lines()[audited:] if r["door"] == "dimse"]
            assert passes, (service, "no DIMSE access reached the pipeline")
            assert {r["outcome"] for r in passes} == {DENY_ALL_CODE}, (service, passes)
    assert door.settled() == before
    assert list(door.dest_dir.iterdir()) == []


# MLLP -------------------------------------------------------------------------------


def test_hl7_messages_are_refused_with_ack_ar_and_nothing_is_written(
    door: Door, tmp_path: Path
) -> None:
    messages = {
        "ADT^A01": adt("A01", f"deny{door.run}", f"H{door.run}"),
        "ORM^O01": orm(f"deny{door.run}", f"H{door.run}", "NW", f"O{door.run}", f"X{door.run}"),
    }
    before = door.settled()
    with door.rule_set(deny_all=True):
        for event, message in messages.items():
            path = tmp_path / f"{event.replace('^', '-')}.hl7"
            path.write_bytes(message.encode())
            sent = subprocess.run(
                [str(MLLP_SEND), "--loose", "--file", str(path),
                 "--port", str(door.server.mllp_port), "127.0.0.1"],
                capture_output=True, timeout=60, check=True,
            )  # fmt: skip
            ack = sent.stdout.decode()
            assert "MSA|AR|" in ack, (event, ack)
            assert "\rERR|" in ack.replace("\n", "\r"), (event, ack)
            assert DENY_ALL_CODE in ack, (event, ack)
    assert door.settled() == before


# commands ---------------------------------------------------------------------------


def leaf_commands(
    parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()
) -> list[tuple[str, ...]]:
    """Every command line of the parser down to its leaves (`dicom import`, ...)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return [leaf for name, sub in action.choices.items()
                    for leaf in leaf_commands(sub, (*prefix, name))]  # fmt: skip
    return [prefix]


def command_probes(door: Door, tmp: Path) -> dict[tuple[str, ...], list[tuple[list[str], str]]]:
    """The argument lists that make each data command read or write, as an operator would
    run them beside the server (same data directory: through its /admin routes; same store
    with no server on the data directory: in-process), each with what its refusal says."""
    data_dir = str(door.server.data_dir)
    offline = str(tmp / "no-server")  # a data directory no server announces itself in
    instance = tmp / "import.dcm"
    instance.write_bytes(renamed("CT_small.dcm", study=generate_uid(), patient_id=f"E{door.run}"))
    message = tmp / "send.hl7"
    message.write_bytes(adt("A08", f"cli{door.run}", f"H{door.run}").encode())
    store = ["--mongodb-uri", door.store_uri, "--database", door.server.database]
    receipt = door.hl7_receipt
    password = tmp / "password.txt"
    password.write_text("correct horse battery staple\n")
    return {
        ("hl7", "send"): [
            (["hl7", "send", "--port", str(door.server.mllp_port), str(message)], "MSA|AR"),
        ],
        ("hl7", "replay"): [
            (["hl7", "replay", receipt, "--data-dir", data_dir], DENY_ALL_CODE),
            (["hl7", "replay", "--failed", "--data-dir", data_dir], DENY_ALL_CODE),
            # in-process, each message its own REPLAY access: its ACK is the refusal
            (["hl7", "replay", receipt, "--data-dir", offline, *store], f"{receipt}: AR"),
        ],
        ("dicom", "import"): [
            (["dicom", "import", "--quiet", "--data-dir", offline, *store, str(instance)],
             DENY_ALL_CODE),
            (["dicom", "import", "--quiet", "--url", door.server.base_url + "/dicomweb",
              str(instance)], "403"),
        ],
        ("users", "add"): [
            (["users", "add", f"probe{door.run}", "--password-file", str(password),
              "--fhir-user", f"Patient/{door.hl7_patient}", "--data-dir", data_dir],
             DENY_ALL_CODE),
        ],
        ("clients", "add"): [
            (["clients", "add", f"probe{door.run}", "--public", "--redirect-uri",
              "https://app.example/cb", "--scope", "patient/*.rs", "--data-dir", data_dir],
             DENY_ALL_CODE),
        ],
        ("token",): [
            (["token", "--scope", "system/*.rs", "--data-dir", data_dir], DENY_ALL_CODE),
        ],
        ("audit", "verify"): [
            (["audit", "verify", "--data-dir", data_dir], DENY_ALL_CODE),
        ],
        ("launch",): [
            (["launch", "--patient", f"probe{door.run}", "--data-dir", data_dir], DENY_ALL_CODE),
        ],
        ("dicom", "pending"): [
            (["dicom", "pending", "--data-dir", data_dir], DENY_ALL_CODE),
            (["dicom", "pending", "--retry", "--data-dir", data_dir], DENY_ALL_CODE),
            (["dicom", "pending", "--data-dir", offline, *store], DENY_ALL_CODE),
            (["dicom", "pending", "--retry", "--data-dir", offline, *store], DENY_ALL_CODE),
        ],
    }  # fmt: skip


def test_every_data_command_is_refused_and_nothing_is_read_or_written(
    door: Door, tmp_path: Path
) -> None:
    probes = command_probes(door, tmp_path)
    for command in leaf_commands(_parser()):
        assert command in probes or command in CLI_EXEMPT, (
            f"`medbridge {' '.join(command)}` is neither probed nor in CLI_EXEMPT"
        )
    before = door.settled()
    with door.rule_set(deny_all=True):
        for command, variants in probes.items():
            for arguments, refusal in variants:
                done = subprocess.run(
                    [sys.executable, "-m", "medbridge", *arguments],
                    capture_output=True, text=True, timeout=180, check=False,
                    env={**os.environ, **door.env()},
                )  # fmt: skip
                said = done.stdout + done.stderr
                assert done.returncode != 0, (command, arguments, said[-2000:])
                assert refusal in said, (command, arguments, said[-2000:])
                assert "Traceback" not in said, (command, said[-2000:])
    assert door.settled() == before
    # an in-process import would have kept its objects under its own data directory
    assert [p for p in (tmp_path / "no-server").rglob("*") if p.is_file()] == []
