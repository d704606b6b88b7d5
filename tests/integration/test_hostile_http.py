"""Hostile HTTP and search inputs (issue 17: H3, M5, L8, L2, L3, L11) over real sockets.

One server of its own, with a short head timeout and keep-alive so the connection cases
end quickly, a configured public base URL (so a Host-built URL would show) and one CORS
origin. Each case asserts the answer and its catalog code, that the limit is named, and
at the end that every resource acknowledged before is still there.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from medbridge.embedded_mongo import EmbeddedMongo
from tests.support.dicom import base_dataset, part10
from tests.support.servers import RunningServer, start_server

PUBLIC = "https://pacs.hospital.example:8443"
ORIGIN = "https://portal.hospital.example"
FHIR_JSON = {"Content-Type": "application/fhir+json"}
EVIL_HOST = "evil.example:666"


@pytest.fixture(scope="module")
def hostile(
    tmp_path_factory: pytest.TempPathFactory, store: EmbeddedMongo
) -> Iterator[RunningServer]:
    env = {
        "MEDBRIDGE_PUBLIC_BASE_URL": PUBLIC,
        "MEDBRIDGE_CORS_ORIGINS": ORIGIN,
        "MEDBRIDGE_HTTP_HEADER_TIMEOUT": "1",
        "MEDBRIDGE_HTTP_KEEPALIVE_TIMEOUT": "1",
    }
    running = start_server(tmp_path_factory.mktemp("hostile"), store.uri, env=env)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client(hostile: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=hostile.base_url, timeout=60.0) as http:
        yield http


@pytest.fixture(scope="module")
def acknowledged() -> list[str]:
    """Every resource a test was told was stored (`Type/id`), checked at the end."""
    return []


def create(client: httpx.Client, acknowledged: list[str], resource: dict[str, Any]) -> str:
    answer = client.post(f"/fhir/{resource['resourceType']}", json=resource, headers=FHIR_JSON)
    assert answer.status_code == 201, answer.text
    resource_id = str(answer.json()["id"])
    acknowledged.append(f"{resource['resourceType']}/{resource_id}")
    return resource_id


def outcome_code(answer: httpx.Response) -> str:
    body = answer.json()
    assert body["resourceType"] == "OperationOutcome"
    return str(body["issue"][0]["details"]["coding"][0]["code"])


def diagnostics(answer: httpx.Response) -> str:
    return str(answer.json()["issue"][0]["diagnostics"])


def match_ids(answer: httpx.Response) -> list[str]:
    assert answer.status_code == 200, answer.text
    return [e["resource"]["id"] for e in answer.json().get("entry", [])]


def raw_exchange(port: int, data: bytes, wait: float = 30.0) -> bytes:
    """Send `data` on a fresh socket and read until the server closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        return received


# H3 -------------------------------------------------------------------------------------


def test_contains_over_a_long_stored_value(client: httpx.Client, acknowledged: list[str]) -> None:
    tail = f"zq{uuid.uuid4().hex[:8]}"
    family = "a" * 199_990 + tail
    patient = create(
        client, acknowledged, {"resourceType": "Patient", "name": [{"family": family}]}
    )
    too_long = client.get("/fhir/Patient", params={"family:contains": "a" * 20_001})
    assert too_long.status_code == 400
    assert outcome_code(too_long) == "MB-1060"
    assert "max_search_value_chars" in diagnostics(too_long)
    # the longest accepted needle, shaped to make a backtracking matcher try every position
    absent = client.get("/fhir/Patient", params={"family:contains": "a" * 1_000 + "b"})
    present = client.get("/fhir/Patient", params={"family:contains": "a" * 1_000 + tail})
    assert match_ids(absent) == []
    assert match_ids(present) == [patient]
    assert match_ids(client.get("/fhir/Patient", params={"family:contains": tail[2:].upper()}))


def test_contains_does_not_match_the_parameter_name(
    client: httpx.Client, acknowledged: list[str]
) -> None:
    marker = uuid.uuid4().hex[:10]
    patient = create(
        client,
        acknowledged,
        {"resourceType": "Patient", "name": [{"family": f"Hamsun{marker}", "given": [marker]}]},
    )
    found = match_ids(client.get("/fhir/Patient", params={"family:contains": "amsun" + marker}))
    assert found == [patient]
    # "fam" is in the row's code ("family"), not in any value of this test
    narrowed = client.get("/fhir/Patient", params={"family:contains": "fam", "given": marker})
    assert match_ids(narrowed) == []


# M5 and L8 ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "parameter"),
    [("name=%5C", "name"), ("identifier=%7C", "identifier"), ("_id=%7C", "_id"),
     ("birthdate=%24gt", "birthdate")],
)  # fmt: skip
@pytest.mark.parametrize("prefer", [None, "handling=lenient", "handling=strict"])
def test_malformed_known_parameters_are_refused(
    client: httpx.Client, acknowledged: list[str], query: str, parameter: str, prefer: str | None
) -> None:
    create(client, acknowledged, {"resourceType": "Patient", "gender": "other"})
    headers = {"Prefer": prefer} if prefer else {}
    answer = client.get(f"/fhir/Patient?{query}", headers=headers)
    assert answer.status_code == 400, answer.text[:300]
    assert outcome_code(answer) == "MB-1016"
    assert answer.json()["issue"][0]["expression"] == [parameter]


def test_unknown_parameters_are_ignored_only_when_lenient(
    client: httpx.Client, acknowledged: list[str]
) -> None:
    marker = uuid.uuid4().hex
    patient = create(
        client, acknowledged, {"resourceType": "Patient", "identifier": [{"value": marker}]}
    )
    lenient = client.get(f"/fhir/Patient?identifier={marker}&colour=blue")
    assert match_ids(lenient) == [patient]
    strict = client.get(
        f"/fhir/Patient?identifier={marker}&colour=blue", headers={"Prefer": "handling=strict"}
    )
    assert strict.status_code == 400
    assert strict.json()["issue"][0]["expression"] == ["colour"]


def test_twenty_thousand_comma_values_are_refused_before_work(client: httpx.Client) -> None:
    values = ",".join("a" for _ in range(20_000))
    by_get = client.get(f"/fhir/Patient?_id={values}")
    assert by_get.status_code == 400
    assert outcome_code(by_get) == "MB-1061"
    assert "max_search_values" in diagnostics(by_get)
    by_post = client.post(
        "/fhir/Observation/_search",
        content=f"code={values}",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert by_post.status_code == 400
    assert outcome_code(by_post) == "MB-1061"
    assert by_post.json()["issue"][0]["expression"] == ["code"]


# $everything -----------------------------------------------------------------------------


def test_everything_lists_the_patient_once(client: httpx.Client, acknowledged: list[str]) -> None:
    patient = create(client, acknowledged, {"resourceType": "Patient", "gender": "female"})
    create(
        client,
        acknowledged,
        {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
         "subject": {"reference": f"Patient/{patient}"}},
    )  # fmt: skip
    everything = client.get(f"/fhir/Patient/{patient}/$everything").json()
    urls = [e["fullUrl"] for e in everything["entry"]]
    assert urls.count(f"{PUBLIC}/fhir/Patient/{patient}") == 1
    assert len(urls) == len(set(urls)) == 2
    assert everything["total"] == 2


# L2 --------------------------------------------------------------------------------------


def test_absolute_urls_come_from_the_public_base(
    client: httpx.Client, acknowledged: list[str]
) -> None:
    evil = {"Host": EVIL_HOST}
    created = client.post(
        "/fhir/Patient",
        json={"resourceType": "Patient", "gender": "male"},
        headers={**FHIR_JSON, **evil},
    )
    assert created.status_code == 201
    acknowledged.append(f"Patient/{created.json()['id']}")
    assert created.headers["location"].startswith(f"{PUBLIC}/fhir/Patient/")
    found = client.get(f"/fhir/Patient?_id={created.json()['id']}", headers=evil).json()
    assert all(link["url"].startswith(f"{PUBLIC}/fhir/") for link in found["link"])
    assert found["entry"][0]["fullUrl"] == f"{PUBLIC}/fhir/Patient/{created.json()['id']}"
    boundary = "hostile-boundary"
    instance = part10(base_dataset())
    body = (
        f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        + instance
        + f"\r\n--{boundary}--\r\n".encode()
    )
    stored = client.post(
        "/dicomweb/studies",
        content=body,
        headers={
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            "Accept": "application/dicom+json",
            **evil,
        },
    )
    assert stored.status_code == 200, stored.text[:300]
    text = stored.text
    assert EVIL_HOST not in text
    assert f"{PUBLIC}/dicomweb/studies/" in text
    qido = client.get("/dicomweb/studies", headers=evil)
    assert EVIL_HOST not in qido.text


def test_two_host_headers_are_refused(hostile: RunningServer) -> None:
    answer = raw_exchange(
        hostile.http_port,
        b"GET /fhir/metadata HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n"
        b"Connection: close\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"MB-1062" in answer


# L3 --------------------------------------------------------------------------------------


def test_head_on_get_routes(client: httpx.Client, acknowledged: list[str]) -> None:
    patient = create(client, acknowledged, {"resourceType": "Patient", "gender": "unknown"})
    for path in (f"/fhir/Patient/{patient}", "/fhir/metadata", "/health", "/dicomweb/studies",
                 "/fhir/Patient?gender=unknown"):  # fmt: skip
        got, head = client.get(path), client.head(path)
        assert head.status_code == got.status_code == 200, path
        assert head.content == b""
        assert head.headers["content-type"] == got.headers["content-type"]
    assert client.head("/fhir/Patient/no-such-id").status_code == 404


def test_patient_data_is_never_cached_or_sniffed(
    client: httpx.Client, acknowledged: list[str]
) -> None:
    patient = create(client, acknowledged, {"resourceType": "Patient", "gender": "female"})
    for answer in (
        client.get(f"/fhir/Patient/{patient}"),
        client.get("/fhir/Patient?gender=female"),
        client.get("/fhir/Patient/no-such-id"),
        client.get("/dicomweb/studies"),
        client.get("/dicomweb/studies/1.2.3.4/metadata"),
    ):
        assert answer.headers["cache-control"] == "no-store", answer.url
        assert answer.headers["x-content-type-options"] == "nosniff", answer.url


def test_cors_follows_the_allow_list(client: httpx.Client) -> None:
    preflight = {"Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "content-type, authorization"}  # fmt: skip
    allowed = client.options("/fhir/Patient", headers={"Origin": ORIGIN, **preflight})
    assert allowed.status_code == 204
    assert allowed.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in allowed.headers["access-control-allow-methods"]
    assert "authorization" in allowed.headers["access-control-allow-headers"]
    refused = client.options(
        "/fhir/Patient", headers={"Origin": "https://evil.example", **preflight}
    )
    assert refused.status_code == 403
    assert outcome_code(refused) == "MB-1065"
    assert "access-control-allow-origin" not in refused.headers
    read = client.get("/fhir/metadata", headers={"Origin": ORIGIN})
    assert read.headers["access-control-allow-origin"] == ORIGIN
    other = client.get("/fhir/metadata", headers={"Origin": "https://evil.example"})
    assert other.status_code == 200
    assert "access-control-allow-origin" not in other.headers


# L11 -------------------------------------------------------------------------------------


def test_a_fifty_megabyte_header_line_is_refused(hostile: RunningServer) -> None:
    with socket.create_connection(("127.0.0.1", hostile.http_port), timeout=30) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Long: ")
        sent = 0
        chunk = b"a" * 65536
        try:
            while sent < 50 * 1024 * 1024:
                sock.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass  # the server answered and closed long before 50 MB
        answer = b""
        try:
            while data := sock.recv(65536):
                answer += data
        except OSError:
            pass
    assert sent < 50 * 1024 * 1024
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:100]
    assert b"MB-1063" in answer
    assert b"max_header_bytes" in answer
    assert httpx.get(f"{hostile.base_url}/health").status_code == 200


def _all_closed(sockets: list[socket.socket], deadline: float, drip: bool) -> list[bytes]:
    """Read every socket until the server closes it, dripping a header byte if `drip`."""
    open_ones = dict(enumerate(sockets))
    answers = [b""] * len(sockets)
    while open_ones and time.monotonic() < deadline:
        for index, sock in list(open_ones.items()):
            try:
                if drip:
                    sock.send(b"a")
                data = sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if data:
                answers[index] += data
            else:
                del open_ones[index]
        time.sleep(0.2)
    assert not open_ones, f"{len(open_ones)} connections still open"
    return answers


def _connections(port: int, count: int, first: bytes) -> list[socket.socket]:
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        if first:
            sock.sendall(first)
        sock.setblocking(False)
        sockets.append(sock)
    return sockets


def test_slowloris_and_idle_connections_are_closed(hostile: RunningServer) -> None:
    slow = _connections(hostile.http_port, 300, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    idle = _connections(hostile.http_port, 1_000, b"")
    try:
        # other clients are still served while they hang on
        assert httpx.get(f"{hostile.base_url}/health", timeout=30).status_code == 200
        answers = _all_closed(slow, time.monotonic() + 120, drip=True)
        assert all(a == b"" or a.startswith(b"HTTP/1.1 408 ") for a in answers)
        assert sum(a.startswith(b"HTTP/1.1 408 ") for a in answers) > 0
        _all_closed(idle, time.monotonic() + 120, drip=False)
    finally:
        for sock in slow + idle:
            sock.close()
    assert httpx.get(f"{hostile.base_url}/health").status_code == 200


def test_idle_keep_alive_connections_are_closed(hostile: RunningServer) -> None:
    with socket.create_connection(("127.0.0.1", hostile.http_port), timeout=60) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        received = b""
        while b"\r\n\r\n" not in received or not received.endswith(b"}"):
            received += sock.recv(65536)
        assert received.startswith(b"HTTP/1.1 200 ")
        assert sock.recv(65536) == b""  # closed by the server, not by our timeout


def test_capabilities_name_the_public_base(hostile: RunningServer) -> None:
    capabilities = httpx.get(f"{hostile.base_url}/fhir/metadata", headers={"Host": EVIL_HOST})
    assert EVIL_HOST not in capabilities.text
    assert PUBLIC in capabilities.text


# nothing lost ----------------------------------------------------------------------------


def test_zz_everything_acknowledged_is_still_there(
    client: httpx.Client, acknowledged: list[str]
) -> None:
    assert acknowledged
    for reference in acknowledged:
        assert client.get(f"/fhir/{reference}").status_code == 200, reference
