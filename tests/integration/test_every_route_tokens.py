"""No token, no data, over every route (issue 14): the enumeration of issue 12
(tests/integration/test_every_route.py: the app's HTTP routes, every interaction and
operation of the CapabilityStatement, every DICOMweb route the door's parser accepts) is
sent to a server with auth on, without a token, with an expired token and with a tampered
one. Each probe is 401 with `WWW-Authenticate: Bearer` and an OperationOutcome carrying
a catalog code, and the store and the object directory are the same afterwards.

Exempt, by the tables of test_every_route.py: /health, the discovery documents, the JWKS,
the authorization server's own endpoints (`/auth/...`, where a caller gets a token), and
the CapabilityStatement; /admin is not token-based (it takes the server's own admin token,
tests/integration/test_admin.py) and is checked here only for refusing a bearer token
of the authorization server.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from joserfc.jwk import ECKey

from medbridge.embedded_mongo import EmbeddedMongo
from tests.integration.test_every_route import (
    AUTH_SERVER,
    HTTP_EXEMPT,
    PORTAL,
    PUBLIC_STATIC,
    Probe,
    Served,
    probes_of_route,
    public_static_answers,
    served,
)
from tests.integration.test_smart_enforce import ISSUER, Minter, _tampered, bearer
from tests.integration.test_smart_server import medbridge
from tests.support.every_door import Door, every_door_server
from tests.support.servers import IsolatedStore, RunningServer

pytestmark = pytest.mark.integration

__all__ = ["served"]  # the fixture of test_every_route.py, shared: one derivation of the app

# probes of routes with their own credentials, not the access token
OWN_CREDENTIALS = {"/admin/{name:path}": "the server's admin token (server.json), not OAuth"}


@pytest.fixture(scope="module")
def key() -> ECKey:
    return ECKey.generate_key("P-256", parameters={"kid": "k1"}, private=True)


@pytest.fixture(scope="module")
def door(
    tmp_path_factory: pytest.TempPathFactory, store: EmbeddedMongo | IsolatedStore, key: ECKey
) -> Iterator[Door]:
    root = tmp_path_factory.mktemp("every-route-tokens")
    jwks = root / "jwks.json"
    jwks.write_bytes(orjson.dumps({"keys": [key.as_dict(private=False)]}))
    env = {"MEDBRIDGE_AUTH_ISSUER": ISSUER, "MEDBRIDGE_AUTH_JWKS": str(jwks)}

    def system(server: RunningServer) -> dict[str, str]:
        return bearer(Minter(key, server.fhir_base).token("system/*.cruds"))

    with every_door_server(root, store.uri, auth=True, env=env, seed_headers=system) as running:
        yield running


@pytest.fixture(scope="module")
def capability(door: Door) -> dict[str, Any]:
    answer = httpx.get(f"{door.server.fhir_base}/metadata", timeout=30.0)
    assert answer.status_code == 200, answer.text
    loaded: dict[str, Any] = answer.json()
    return loaded


def token_probes(door: Door, served: Served, capability: dict[str, Any]) -> list[Probe]:
    return [
        probe
        for template, methods in served.routes.items()
        if template not in HTTP_EXEMPT
        and template not in AUTH_SERVER
        and template not in OWN_CREDENTIALS
        and template not in PORTAL  # an app: its own session, the person's token inside
        and template not in PUBLIC_STATIC
        for probe in probes_of_route(template, methods, door, served, capability)
    ]


def refused_401(door: Door, probe: Probe, authorization: str | None) -> httpx.Response:
    headers = dict(probe.headers)
    if authorization is not None:
        headers["authorization"] = authorization
    answer = httpx.request(probe.method, door.server.base_url + probe.path, params=probe.params,
                           headers=headers, content=probe.body, timeout=60.0)  # fmt: skip
    # a method no interaction uses may be refused by the router before any access exists
    expected = {401, 404, 405} if probe.unrouted else {401}
    assert answer.status_code in expected, (probe.label, answer.status_code, answer.text[:300])
    if answer.status_code == 401:
        challenge = answer.headers.get("www-authenticate", "")
        assert challenge.startswith("Bearer "), (probe.label, dict(answer.headers))
    if probe.method == "HEAD":
        assert answer.content == b"", probe.label
        return answer
    body = answer.json()
    assert body["resourceType"] == "OperationOutcome", (probe.label, body)
    code = body["issue"][0]["details"]["coding"][0]["code"]
    if answer.status_code == 401:
        assert code in {"MB-1250", "MB-1251"}, (probe.label, body)
    else:
        assert str(code).startswith("MB-"), (probe.label, body)
    return answer


def own_token(door: Door, scope: str, *extra: str) -> str:
    """A token of the server's own authorization server (`medbridge token`)."""
    done = medbridge(door.server, "token", "--scope", scope, *extra)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.splitlines()[-1]


def bad_tokens(key: ECKey, door: Door, variant: str) -> str:
    """The `Authorization` header of each variant: tokens of the external issuer (checked
    by `JwtValidator`) and of the server's own authorization server (its own validator)."""
    minter = Minter(key, door.server.fhir_base)
    made = {
        "none": lambda: "",
        "expired": lambda: "Bearer " + minter.token("system/*.cruds", expires_in=-600),
        "tampered": lambda: "Bearer " + _tampered(minter.token("patient/*.rs", door.patient)),
        "own-tampered": lambda: "Bearer " + _tampered(
            own_token(door, "patient/*.rs", "--patient", door.patient)),
    }  # fmt: skip
    return made[variant]()


def test_the_tokens_tampered_with_are_good_ones_untouched(door: Door, key: ECKey) -> None:
    """The 401s below are for the tampering: the same tokens unchanged read."""
    minter = Minter(key, door.server.fhir_base)
    for token in (minter.token("patient/*.rs", door.patient),
                  own_token(door, "patient/*.rs", "--patient", door.patient)):  # fmt: skip
        answer = httpx.get(f"{door.server.fhir_base}/Patient/{door.patient}",
                           headers=bearer(token), timeout=30)  # fmt: skip
        assert answer.status_code == 200, answer.text


@pytest.mark.parametrize("variant", ["none", "expired", "tampered", "own-tampered"])
def test_every_route_is_401_without_a_valid_token_and_nothing_is_read_or_written(
    served: Served, door: Door, capability: dict[str, Any], key: ECKey, variant: str
) -> None:
    probes = token_probes(door, served, capability)
    authorization = bad_tokens(key, door, variant) or None
    before = door.settled()
    markers = (door.study.encode(), door.sop.encode(), f"E{door.run}".encode())
    for probe in probes:
        answer = refused_401(door, probe, authorization)
        for marker in markers:
            # the probe's own path may be echoed in a diagnostic; the record's data not
            if marker.decode() not in probe.path + str(probe.params):
                assert marker not in answer.content, (probe.label, marker)
        if variant == "none" and answer.status_code == 401:
            # RFC 6750 3.1: a request without credentials gets no error code
            assert "error=" not in answer.headers["www-authenticate"], probe.label
    assert door.settled() == before
    labels = {p.label for p in probes}
    for expected in ("transaction", "batch", "Patient/$everything", "ImagingStudy read",
                     "Observation search by POST", "DICOMweb POST studies",
                     "DICOMweb GET studies/{studies}/series/{series}/instances/{instances}"
                     "/frames/{frames}"):  # fmt: skip
        assert expected in labels, expected
    # the exempt routes answer without a token: the 401s were the hooks', not a dead door
    for template in HTTP_EXEMPT:
        assert httpx.get(door.server.base_url + template, timeout=30).status_code == 200
    public_static_answers(door.server.base_url)


def test_admin_takes_no_access_token(served: Served, door: Door, key: ECKey) -> None:
    """/admin answers only its own token: a system access token of the trusted issuer is
    refused there, and nothing is written."""
    system = bearer(Minter(key, door.server.fhir_base).token("system/*.cruds"))
    before = door.settled()
    for name in served.admin_operations:
        answer = httpx.post(f"{door.server.base_url}/admin/{name}", content=b"{}",
                            headers={**system, "content-type": "application/json"})  # fmt: skip
        assert answer.status_code in {401, 403}, (name, answer.status_code, answer.text[:300])
    assert door.settled() == before
