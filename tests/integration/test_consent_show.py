"""A consent-show hook registered through the composition hides one patient everywhere:
read, search (totals, _summary=count, paging), _include/_revinclude, history and
$everything, against the real store."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson
from pymongo import AsyncMongoClient

from access.context import Door, RequestContext
from access.pipeline import Stage
from fhir_server.exchange import FhirExchange, FhirRequest, FhirResponse
from fhir_server.repository import Repository
from fhir_server.router import FhirRouter
from medbridge.compose import HookSpec, compose
from medbridge.settings import Settings

BASE = "http://test/fhir"
JSON = {"content-type": "application/fhir+json"}


async def call(
    router: FhirRouter, path: str, query: list[tuple[str, str]] | None = None
) -> FhirResponse:
    request = FhirRequest("GET", path, query or [], {}, None, BASE)
    return await router.handle(request, RequestContext(Door.FHIR))


def body(response: FhirResponse) -> dict[str, Any]:
    parsed: dict[str, Any] = orjson.loads(response.body or b"{}")
    return parsed


async def create(router: FhirRouter, resource: dict[str, Any]) -> str:
    request = FhirRequest("POST", resource["resourceType"], [], JSON, orjson.dumps(resource), BASE)
    response = await router.handle(request, RequestContext(Door.FHIR))
    assert response.status == 201
    return str(body(response)["id"])


def observation(patient: str, text: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": text},
        "subject": {"reference": f"Patient/{patient}"},
    }


def ids(bundle: dict[str, Any], mode: str | None = None) -> list[str]:
    return [
        e["fullUrl"].removeprefix(BASE + "/")
        for e in bundle.get("entry", [])
        if mode is None or e.get("search", {}).get("mode") == mode
    ]


async def test_a_hidden_patient_is_not_shown_by_any_fhir_read(
    mongo: AsyncMongoClient[dict[str, Any]], database_name: str
) -> None:
    repository = Repository(mongo, database_name)
    await repository.ensure_indexes()
    hidden: list[str] = []  # the hidden patient's id, once created

    async def hide(exchange: FhirExchange) -> None:
        if exchange.items is not None and hidden:
            exchange.items.hide(lambda item: hidden[0] in item.patients)

    spec = HookSpec(Stage.CONSENT_SHOW, hide, "test.hide-patient")
    # without the audit trail: its AuditEvents would be in the histories and $everything
    router = (await compose(Settings(audit=False), repository, hooks=[spec])).router
    assert router.pipeline.hooks(Stage.CONSENT_SHOW) == ["test.hide-patient"]
    shown = await create(router, {"resourceType": "Patient", "name": [{"family": "Shown"}]})
    secret = await create(router, {"resourceType": "Patient", "name": [{"family": "Secret"}]})
    hidden.append(secret)
    visible_obs = {
        f"Observation/{await create(router, observation(shown, f's{n}'))}" for n in range(3)
    }
    secret_obs = {
        f"Observation/{await create(router, observation(secret, f'h{n}'))}" for n in range(3)
    }

    # read and vread: as if it did not exist
    assert (await call(router, f"Patient/{secret}")).status == 404
    assert (await call(router, f"Patient/{secret}/_history/1")).status == 404
    assert (await call(router, f"{sorted(secret_obs)[0]}")).status == 404
    assert (await call(router, f"Patient/{shown}")).status == 200

    # one page: the total counts what is shown
    single = body(await call(router, "Observation"))
    assert set(ids(single)) == visible_obs
    assert single["total"] == 3
    # _summary=count counts only the visible matches
    counted = body(await call(router, "Observation", [("_summary", "count")]))
    assert counted["total"] == 3
    # several pages: the total counts only what is shown, on every page (no page may
    # reveal the hidden ones, even one where nothing was hidden); next links still work
    seen: list[str] = []
    page = body(await call(router, "Observation", [("_count", "2")]))
    pages = 0
    while True:
        pages += 1
        assert page["total"] == 3
        seen += ids(page)
        following = [link["url"] for link in page.get("link", []) if link["relation"] == "next"]
        if not following:
            break
        url = urlsplit(following[0])
        page = body(await call(router, url.path.removeprefix("/fhir/"), parse_qsl(url.query)))
    assert pages >= 3  # six stored observations, two per page
    assert sorted(seen) == sorted(visible_obs)

    # _include and _revinclude never bring the hidden patient or its records back
    included = body(await call(router, "Observation", [("_include", "Observation:subject")]))
    assert set(ids(included, "include")) == {f"Patient/{shown}"}
    assert set(ids(included, "match")) == visible_obs
    reverse = body(await call(router, "Patient", [("_revinclude", "Observation:subject")]))
    assert ids(reverse, "match") == [f"Patient/{shown}"]
    assert set(ids(reverse, "include")) == visible_obs
    assert reverse["total"] == 1

    # history at every level
    assert ids(body(await call(router, f"Patient/{secret}/_history"))) == []
    type_history = body(await call(router, "Observation/_history"))
    assert set(ids(type_history)) == visible_obs
    assert type_history["total"] == 3
    system_history = set(ids(body(await call(router, "_history"))))
    assert system_history == visible_obs | {f"Patient/{shown}"}

    # $everything
    assert (await call(router, f"Patient/{secret}/$everything")).status == 404
    everything = body(await call(router, f"Patient/{shown}/$everything"))
    assert set(ids(everything)) == visible_obs | {f"Patient/{shown}"}
    assert everything["total"] == 4

    # batch and transaction entries: each entry is a child access, hidden like its own read
    async def post(kind: str, urls: list[str]) -> FhirResponse:
        entries = [{"request": {"method": "GET", "url": url}} for url in urls]
        bundle = {"resourceType": "Bundle", "type": kind, "entry": entries}
        request = FhirRequest("POST", "", [], JSON, orjson.dumps(bundle), BASE)
        return await router.handle(request, RequestContext(Door.FHIR))

    urls = [f"Patient/{secret}", f"Observation?subject=Patient/{secret}", f"Patient/{shown}"]
    answer = await post("batch", urls)
    raw = answer.body or b""
    # the request's own words (the id asked for) come back; nothing of the records does
    assert b"Secret" not in raw
    assert not any(o.split("/")[1].encode() in raw for o in secret_obs)
    entries = body(answer)["entry"]
    assert entries[0]["response"]["status"].startswith("404")
    assert "resource" not in entries[0]
    assert entries[1]["resource"]["total"] == 0
    assert "entry" not in entries[1]["resource"]
    assert entries[2]["resource"]["id"] == shown
    # a transaction reading the hidden patient fails as one reading a patient that never
    # existed: the same status, code and words
    hidden_read = body(await post("transaction", urls[:1]))
    missing_read = body(await post("transaction", ["Patient/never-was"]))
    assert hidden_read["issue"][0]["details"] == missing_read["issue"][0]["details"]
    assert hidden_read["issue"][0]["diagnostics"].replace(secret, "X") == missing_read["issue"][0][
        "diagnostics"
    ].replace("never-was", "X")
    visible = body(await post("transaction", urls[1:]))
    assert visible["entry"][0]["resource"]["total"] == 0
    assert visible["entry"][1]["resource"]["id"] == shown
