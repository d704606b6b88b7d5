"""Hostile FHIR bodies (issue 17: C3, H1, M3, M4, L1, L5, L9) replayed over real HTTP.

Each refusal must be the FHIR door's answer (an OperationOutcome with its catalog code
and the limit named), given before the work: nothing is stored, and the server's
resident memory stays within a few hundred MB of what it was at start.
"""

from __future__ import annotations

import base64
import json
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from medbridge.embedded_mongo import EmbeddedMongo
from tests.support.servers import RunningServer, start_server

FHIR_JSON = {"Content-Type": "application/fhir+json"}
JSON_PATCH = {"Content-Type": "application/json-patch+json"}
SYSTEM = "urn:oid:1.3.6.1.4.1.99999.17"
MiB = 1024 * 1024
RSS_HEADROOM_MB = 400  # "a few hundred MB above its start" (issue 17, L9); +240 seen


@pytest.fixture(scope="module")
def hostile_server(
    tmp_path_factory: pytest.TempPathFactory, store: EmbeddedMongo
) -> Iterator[RunningServer]:
    """A server of its own, so its memory and its history hold only this module's work."""
    running = start_server(tmp_path_factory.mktemp("hostile-fhir"), store.uri)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client(hostile_server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=hostile_server.fhir_base, timeout=120.0) as http:
        yield http


@pytest.fixture(scope="module")
def baseline_rss(hostile_server: RunningServer, client: httpx.Client) -> float:
    """RSS after one ordinary write and read have loaded what every request needs."""
    created = client.post("/Patient", json=patient(uuid.uuid4().hex), headers=FHIR_JSON)
    assert created.status_code == 201, created.text
    assert client.get(f"/Patient/{created.json()['id']}").status_code == 200
    return rss_mb(hostile_server)


def rss_mb(server: RunningServer) -> float:
    status = Path(f"/proc/{server.process.pid}/status").read_text()
    line = next(row for row in status.splitlines() if row.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def assert_memory_returned(server: RunningServer, baseline: float) -> None:
    now = rss_mb(server)
    print(f"server RSS {now:.0f} MB ({baseline:.0f} MB at start)")  # shown with -s
    assert now < baseline + RSS_HEADROOM_MB, f"RSS {now:.0f} MB, {baseline:.0f} MB at start"


def patient(unique: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": SYSTEM, "value": unique}],
        "name": [{"family": "Kazlauskas", "given": ["Jonas"]}],
        **extra,
    }


def versions_stored(client: httpx.Client) -> int:
    """Every version of every resource this server holds (its system history)."""
    response = client.get("/_history", params={"_count": "1"})
    assert response.status_code == 200, response.text
    return int(response.json()["total"])


def refused(
    response: httpx.Response, status: int, code: str, named: str, expression: str | None = None
) -> dict[str, Any]:
    """Assert an OperationOutcome answer with this status and catalog code naming `named`."""
    assert response.status_code == status, response.text[:2000]
    assert response.headers["content-type"].startswith("application/fhir+json")
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    issue = outcome["issue"][0]
    assert issue["details"]["coding"][0]["code"] == code
    assert named in issue["diagnostics"], issue["diagnostics"]
    if expression is not None:
        assert issue["expression"] == [expression]
    return dict(issue)


# -- C3: JSON Patch bombs --------------------------------------------------------------


def test_doubling_patch_is_refused_once_the_result_passes_the_cap(
    hostile_server: RunningServer, client: httpx.Client, baseline_rss: float
) -> None:
    created = client.post("/Patient", json=patient(uuid.uuid4().hex), headers=FHIR_JSON).json()
    before = versions_stored(client)
    bomb = [{"op": "copy", "from": "/name", "path": "/name/-"}] * 21  # 1,092 bytes
    assert len(json.dumps(bomb, separators=(",", ":"))) < 1100
    # copying /name into itself nests it: each op doubles the document
    answer = client.patch(f"/Patient/{created['id']}", content=json.dumps(bomb), headers=JSON_PATCH)
    refused(answer, 413, "MB-1048", "max_resource_bytes")
    assert versions_stored(client) == before
    assert client.get(f"/Patient/{created['id']}").json()["meta"]["versionId"] == "1"
    assert_memory_returned(hostile_server, baseline_rss)


def test_patch_with_too_many_operations_is_refused_before_it_runs(client: httpx.Client) -> None:
    created = client.post("/Patient", json=patient(uuid.uuid4().hex), headers=FHIR_JSON).json()
    before = versions_stored(client)
    operations = [{"op": "add", "path": "/active", "value": True}] * 1001
    answer = client.patch(f"/Patient/{created['id']}", json=operations, headers=JSON_PATCH)
    refused(answer, 413, "MB-1047", "max_patch_operations")
    assert versions_stored(client) == before


def test_a_patch_within_the_budget_still_applies(client: httpx.Client) -> None:
    created = client.post("/Patient", json=patient(uuid.uuid4().hex), headers=FHIR_JSON).json()
    operations = [
        {"op": "copy", "from": "/name/0", "path": "/name/-"},
        {"op": "replace", "path": "/name/1/family", "value": "Jonaitis"},
        {"op": "add", "path": "/active", "value": True},
    ]
    answer = client.patch(f"/Patient/{created['id']}", json=operations, headers=JSON_PATCH)
    assert answer.status_code == 200, answer.text
    assert [n["family"] for n in answer.json()["name"]] == ["Kazlauskas", "Jonaitis"]


def _operation() -> st.SearchStrategy[dict[str, Any]]:
    paths = st.sampled_from(
        ["/name", "/name/0", "/name/-", "/name/0/given", "/name/0/given/-", "/active",
         "/identifier/0/value", "/birthDate", "/id", "/resourceType", "/missing/x", "", "/"]
    )  # fmt: skip
    values = st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
        max_leaves=6,
    )
    return st.one_of(
        st.builds(lambda p, v: {"op": "add", "path": p, "value": v}, paths, values),
        st.builds(lambda p, v: {"op": "replace", "path": p, "value": v}, paths, values),
        st.builds(lambda p: {"op": "remove", "path": p}, paths),
        st.builds(lambda f, p: {"op": "copy", "from": f, "path": p}, paths, paths),
        st.builds(lambda f, p: {"op": "move", "from": f, "path": p}, paths, paths),
        st.builds(lambda p, v: {"op": "test", "path": p, "value": v}, paths, values),
        st.just({"op": "copy", "from": "/name", "path": "/name/-"}),
        st.just({"op": "copy", "from": "/name/0", "path": "/name/-"}),
        st.just({"op": "bogus", "path": "/name"}),
        st.just({"path": "/name"}),
    )


@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    phases=[Phase.explicit, Phase.generate],  # a failure is reported as found, not shrunk
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(operations=st.lists(_operation(), max_size=30))
def test_any_patch_document_is_answered_and_bounded(
    client: httpx.Client, operations: list[dict[str, Any]]
) -> None:
    created = client.post("/Patient", json=patient(uuid.uuid4().hex), headers=FHIR_JSON).json()
    answer = client.patch(f"/Patient/{created['id']}", json=operations, headers=JSON_PATCH)
    assert answer.status_code == 200 or 400 <= answer.status_code < 500, answer.text[:2000]
    if answer.status_code == 200:
        assert len(answer.content) <= 12 * MiB + 4096
    else:
        assert answer.json()["resourceType"] == "OperationOutcome"


# -- H1: a large body with a million list items ------------------------------------------


def test_a_million_given_names_are_refused_by_the_list_cap(
    hostile_server: RunningServer, client: httpx.Client, baseline_rss: float
) -> None:
    before = versions_stored(client)
    resource = patient(uuid.uuid4().hex)
    resource["name"][0]["given"] = ["a"] * 1_000_000
    body = json.dumps(resource).encode()
    assert len(body) > 4 * 1_000_000
    answer = client.post("/Patient", content=body, headers=FHIR_JSON)
    refused(answer, 413, "MB-1044", "max_list_items", "Patient.name[0].given")
    assert versions_stored(client) == before
    assert_memory_returned(hostile_server, baseline_rss)


# -- M3: decimals kept as sent ------------------------------------------------------------


def test_decimals_are_served_as_sent_and_still_searchable(client: httpx.Client) -> None:
    unique = uuid.uuid4().hex
    body = (
        '{"resourceType":"Observation","status":"final",'
        f'"identifier":[{{"system":"{SYSTEM}","value":"{unique}"}}],'
        '"code":{"text":"weight"},"valueQuantity":{"value":1.50,"unit":"kg"},'
        '"component":[{"code":{"text":"big"},'
        '"valueQuantity":{"value":12345678901234567890.123}}]}'
    )
    created = client.post("/Observation", content=body, headers=FHIR_JSON)
    assert created.status_code == 201, created.text
    assert b'"value":1.50,' in created.content
    assert b'"value":12345678901234567890.123}' in created.content
    read = client.get(f"/Observation/{created.json()['id']}")
    assert b'"value":1.50,' in read.content
    assert b'"value":12345678901234567890.123}' in read.content
    pretty = client.get(f"/Observation/{created.json()['id']}", params={"_pretty": "true"})
    assert b'"value": 1.50' in pretty.content
    found = client.get(
        "/Observation", params={"identifier": f"{SYSTEM}|{unique}", "value-quantity": "1.5"}
    )
    assert found.json()["total"] == 1
    # a patch rewrites the resource: the decimals it does not touch stay as they were
    patched = client.patch(
        f"/Observation/{created.json()['id']}",
        json=[{"op": "add", "path": "/issued", "value": "2026-12-06T05:00:00Z"}],
        headers=JSON_PATCH,
    )
    assert patched.status_code == 200, patched.text
    assert b'"value":1.50,' in patched.content
    assert b'"value":12345678901234567890.123}' in patched.content


def test_decimals_in_a_transaction_entry_are_kept(client: httpx.Client) -> None:
    body = (
        '{"resourceType":"Bundle","type":"transaction","entry":[{"request":'
        '{"method":"POST","url":"Observation"},"resource":{"resourceType":"Observation",'
        '"status":"final","code":{"text":"t"},"valueQuantity":{"value":0.10}}}]}'
    )
    answer = client.post("", content=body, headers=FHIR_JSON)
    assert answer.status_code == 200, answer.text
    location = answer.json()["entry"][0]["response"]["location"]
    reference = "/".join(location.split("/_history/")[0].split("/")[-2:])
    assert b'"value":0.10}' in client.get(f"/{reference}").content


# -- M4: strings, resources and bundles over their caps -----------------------------------


def test_a_30_mib_string_is_refused_by_the_resource_cap(
    hostile_server: RunningServer, client: httpx.Client, baseline_rss: float
) -> None:
    before = versions_stored(client)
    resource = patient(uuid.uuid4().hex)
    resource["name"][0]["family"] = "x" * (30 * MiB)
    answer = client.post("/Patient", content=json.dumps(resource), headers=FHIR_JSON)
    refused(answer, 413, "MB-1046", "max_resource_bytes")
    assert versions_stored(client) == before
    assert_memory_returned(hostile_server, baseline_rss)


def test_a_resource_body_over_the_cap_is_refused_before_it_is_read(
    hostile_server: RunningServer,
) -> None:
    """Below the base a body is one resource: a declared 30 MiB is refused on the headers,
    not after the server waited for (and buffered) what the first 12 MiB decided. The
    client sends the headers and 100 bytes, then waits for the answer: a server that read
    the body first would never answer (the socket's timeout fails the test)."""
    with socket.create_connection(("127.0.0.1", hostile_server.http_port), timeout=30) as raw:
        raw.sendall(
            b"POST /fhir/Patient HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/fhir+json\r\n"
            + f"Content-Length: {30 * MiB}\r\n\r\n".encode()
            + b'{"resourceType":"Patient","name":[{"family":"'
            + b"x" * 55
        )
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += raw.recv(65536)
        head, _, body = answer.partition(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        while len(body) < length:
            body += raw.recv(65536)
    assert head.startswith(b"HTTP/1.1 413"), head
    assert b"MB-1046" in body
    assert b"max_resource_bytes" in body


def test_a_string_over_one_mb_is_refused_naming_the_element(client: httpx.Client) -> None:
    before = versions_stored(client)
    resource = patient(uuid.uuid4().hex)
    resource["name"][0]["family"] = "x" * (MiB + 1)
    answer = client.post("/Patient", json=resource, headers=FHIR_JSON)
    refused(answer, 422, "MB-1042", "max_string_bytes", "Patient.name[0].family")
    assert versions_stored(client) == before


def test_base64_binary_may_pass_the_string_limit_but_not_the_resource_limit(
    client: httpx.Client,
) -> None:
    data = base64.b64encode(b"\x01" * (3 * MiB)).decode()
    binary = client.post(
        "/Binary",
        json={"resourceType": "Binary", "contentType": "application/pdf", "data": data},
        headers=FHIR_JSON,
    )
    assert binary.status_code == 201, binary.text[:2000]
    photo = patient(uuid.uuid4().hex, photo=[{"contentType": "image/png", "data": data}])
    assert client.post("/Patient", json=photo, headers=FHIR_JSON).status_code == 201
    before = versions_stored(client)
    huge = base64.b64encode(b"\x01" * (13 * MiB)).decode()
    answer = client.post(
        "/Binary",
        json={"resourceType": "Binary", "contentType": "application/pdf", "data": huge},
        headers=FHIR_JSON,
    )
    refused(answer, 413, "MB-1046", "max_resource_bytes")
    assert versions_stored(client) == before


def test_a_100000_entry_transaction_is_refused_before_any_work(
    hostile_server: RunningServer, client: httpx.Client, baseline_rss: float
) -> None:
    before = versions_stored(client)
    entry = {"request": {"method": "POST", "url": "Patient"}, "resource": patient("bulk")}
    document = {"resourceType": "Bundle", "type": "transaction", "entry": [entry] * 100_000}
    answer = client.post("", content=json.dumps(document), headers=FHIR_JSON)
    refused(answer, 413, "MB-1043", "max_bundle_entries", "Bundle.entry")
    assert versions_stored(client) == before
    assert_memory_returned(hostile_server, baseline_rss)


# -- L1: transactions whose entries overlap ----------------------------------------------


def _transaction(client: httpx.Client, entries: list[dict[str, Any]]) -> httpx.Response:
    document = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    return client.post("", json=document, headers=FHIR_JSON)


@pytest.mark.parametrize("shape", ["two PUTs", "DELETE and PUT", "one fullUrl twice"])
def test_overlapping_transaction_entries_are_refused(client: httpx.Client, shape: str) -> None:
    before = versions_stored(client)
    unique = uuid.uuid4().hex
    target = f"Patient/{unique[:20]}"
    put = {
        "request": {"method": "PUT", "url": target},
        "resource": {**patient(unique), "id": unique[:20]},
    }
    entries = {
        "two PUTs": [put, put],
        "DELETE and PUT": [put, {"request": {"method": "DELETE", "url": f"/{target}"}}],
        "one fullUrl twice": [
            {"fullUrl": f"urn:uuid:{unique[:8]}-0000-4000-8000-000000000000", **post}
            for post in [
                {"request": {"method": "POST", "url": "Patient"}, "resource": patient(unique)}
            ]
            * 2
        ],
    }[shape]
    answer = _transaction(client, entries)
    issue = refused(answer, 400, "MB-1110", "Bundle.entry[0] and Bundle.entry[1]")
    assert issue["expression"] == ["Bundle.entry[1]"]
    assert versions_stored(client) == before
    assert client.get(f"/{target}").status_code == 404


# -- L5: duplicate keys, control characters, nesting ------------------------------------


def test_a_duplicate_key_is_refused(client: httpx.Client) -> None:
    before = versions_stored(client)
    body = '{"resourceType":"Patient","active":true,"active":false}'
    refused(client.post("/Patient", content=body, headers=FHIR_JSON), 400, "MB-1040", "'active'")
    assert versions_stored(client) == before


@pytest.mark.parametrize("control", ["\\u0000", "\\u001b", "\\u000b", "\\u0008"])
def test_a_control_character_is_refused_naming_the_element(
    client: httpx.Client, control: str
) -> None:
    before = versions_stored(client)
    body = f'{{"resourceType":"Patient","name":[{{"family":"Ka{control}zlauskas"}}]}}'
    answer = client.post("/Patient", content=body, headers=FHIR_JSON)
    refused(answer, 422, "MB-1041", "control character", "Patient.name[0].family")
    assert versions_stored(client) == before


def test_tab_carriage_return_and_line_feed_are_allowed(client: httpx.Client) -> None:
    body = '{"resourceType":"Patient","name":[{"text":"Jonas\\tKazlauskas\\r\\n"}]}'
    answer = client.post("/Patient", content=body, headers=FHIR_JSON)
    assert answer.status_code == 201, answer.text
    assert answer.json()["name"][0]["text"] == "Jonas\tKazlauskas\r\n"


@pytest.mark.parametrize("depth", [100, 100_000])
def test_nesting_deeper_than_the_cap_is_refused(client: httpx.Client, depth: int) -> None:
    before = versions_stored(client)
    body = '{"resourceType":"Patient","extension":' + "[" * depth + "]" * depth + "}"
    answer = client.post("/Patient", content=body, headers=FHIR_JSON)
    refused(answer, 400, "MB-1045", "max_json_depth")
    assert versions_stored(client) == before


def test_the_server_still_answers_after_every_hostile_body(
    hostile_server: RunningServer, client: httpx.Client, baseline_rss: float
) -> None:
    created = client.post("/Patient", json=patient(uuid.uuid4().hex), headers=FHIR_JSON)
    assert created.status_code == 201
    assert client.get(f"/Patient/{created.json()['id']}").status_code == 200
    assert_memory_returned(hostile_server, baseline_rss)
