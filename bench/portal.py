"""The patient portal's timeline page: how long `/portal/` takes to render for a patient
with 200 imaging studies and 2,000 resources in all.

Starts the embedded store and `medbridge serve` with auth, consent and audit on (the
defaults), loads the patient's records through FHIR transactions with a system token
(200 ImagingStudy, 600 each of DiagnosticReport, ServiceRequest and Encounter), signs a
patient user in through the portal's standalone launch (the sign-in and approval pages
driven with httpx as a browser would) and asks for the timeline page over and over,
one request at a time: each render is a Patient read and four searches (50 per type,
`MEDBRIDGE_PORTAL_PAGE_SIZE`) with the patient's token, through consent and audit, and
the Jinja2 page. Several rounds; the medians of their p50 and p95 are the figures.

    ./run bench portal [--requests 20] [--rounds 3]

Each round also sends the page's five FHIR requests alone (same token, same
concurrency), interleaved with the pages, so what the portal adds is visible on a
noisy machine.
"""

from __future__ import annotations

import argparse
import asyncio
import html
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Measurement, measure, median, print_table, write_results
from medbridge.embedded_mongo import EmbeddedMongo
from tests.support.servers import RunningServer, start_server
from tests.support.smart_apps import PASSWORD, admin_token, checked

STUDIES = 200
PER_TYPE = 600  # DiagnosticReport, ServiceRequest, Encounter: 200 + 3 x 600 = 2,000
BATCH = 200
FIELD = re.compile(r'name="([^"]+)" value="([^"]*)"')


DCM = "http://dicom.nema.org/resources/ontology/DCM"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"


def records(patient: str) -> list[dict[str, Any]]:
    subject = {"reference": f"Patient/{patient}"}
    made: list[dict[str, Any]] = []
    for n in range(STUDIES):
        uid = {"system": "urn:dicom:uid", "value": f"urn:oid:1.2.826.0.1.{n + 1}"}
        made.append({
            "resourceType": "ImagingStudy", "status": "available", "subject": subject,
            "started": f"20{10 + n % 15:02d}-{1 + n % 12:02d}-01T10:00:00Z",
            "description": f"CT study {n}", "identifier": [uid],
            "modality": [{"system": DCM, "code": "CT"}],
        })  # fmt: skip
    for n in range(PER_TYPE):
        day = f"20{10 + n % 15:02d}-{1 + n % 12:02d}-{1 + n % 28:02d}"
        common = {"subject": subject}
        made.append({"resourceType": "DiagnosticReport", "status": "final", **common,
                     "code": {"text": f"Report {n}"}, "effectiveDateTime": day})  # fmt: skip
        made.append({"resourceType": "ServiceRequest", "status": "completed", **common,
                     "intent": "order", "code": {"text": f"Order {n}"},
                     "authoredOn": day})  # fmt: skip
        made.append({"resourceType": "Encounter", "status": "finished", **common,
                     "class": {"system": ACT_CODE, "code": "AMB"},
                     "period": {"start": day}})  # fmt: skip
    return made


def load(server: RunningServer, token: str, patient: str) -> int:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"}
    put = httpx.put(f"{server.fhir_base}/Patient/{patient}", headers=headers, timeout=60,
                    json={"resourceType": "Patient", "id": patient,
                          "name": [{"family": "Bench"}], "birthDate": "1970-01-01"})  # fmt: skip
    put.raise_for_status()
    made = records(patient)
    for start in range(0, len(made), BATCH):
        entries = [{"resource": r, "request": {"method": "POST", "url": r["resourceType"]}}
                   for r in made[start : start + BATCH]]  # fmt: skip
        answer = httpx.post(server.fhir_base, headers=headers, timeout=300,
                            json={"resourceType": "Bundle", "type": "transaction",
                                  "entry": entries})  # fmt: skip
        if answer.status_code != 200:
            raise RuntimeError(f"transaction answered {answer.status_code}: {answer.text[:300]}")
    return len(made)


def sign_in(server: RunningServer, user: str) -> httpx.Client:
    """The portal's standalone launch, its pages driven as a browser would."""
    client = httpx.Client(base_url=server.base_url, follow_redirects=False, timeout=60)
    step = client.get("/portal/login")
    page = client.get(step.headers["location"])
    fields = {k: html.unescape(v) for k, v in FIELD.findall(page.text)}
    page = client.post("/auth/authorize", data={**fields, "username": user, "password": PASSWORD})
    fields = {k: html.unescape(v) for k, v in FIELD.findall(page.text)}
    approved = client.post("/auth/authorize", data={**fields, "decision": "approve"})
    done = client.get(approved.headers["location"])
    if done.status_code != 303 or done.headers.get("location") != "/portal/":
        raise RuntimeError(f"the portal's sign-in did not complete: {done.status_code}")
    return client


async def timeline(client: httpx.AsyncClient, requests: int) -> Measurement:
    async def one(_: int) -> bool:
        answer = await client.get("/portal/")
        return answer.status_code == 200 and "CT study" in answer.text

    return await measure("portal timeline", 1, requests, one)


SEARCHES = [("Patient/bench-patient", {})] + [
    (kind, {"patient": "Patient/bench-patient", "_count": "50", "_sort": sort})
    for kind, sort in (("ImagingStudy", "-started"), ("DiagnosticReport", "-date"),
                       ("ServiceRequest", "-authored"), ("Encounter", "-date"))
]  # fmt: skip


async def fhir_alone(client: httpx.AsyncClient, token: str, requests: int) -> Measurement:
    """The page's five FHIR requests with the same patient's token, concurrently as the
    portal makes them, without the portal: what the page costs beyond them is the portal's."""
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/fhir+json"}

    async def one(_: int) -> bool:
        answers = await asyncio.gather(*(
            client.get(f"/fhir/{path}", params=params, headers=headers)
            for path, params in SEARCHES
        ))  # fmt: skip
        return all(answer.status_code == 200 for answer in answers)

    return await measure("its 5 FHIR requests", 1, requests, one)


def run(requests: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory(prefix="medbridge-bench-portal-") as root:
        store = EmbeddedMongo(Path(root) / "store")
        store.start()
        server = start_server(Path(root) / "server", store.uri, auth=True)
        try:
            token = admin_token(server, "system/*.cruds")
            started = time.perf_counter()
            count = load(server, token, "bench-patient")
            print(f"loaded {count} resources in {time.perf_counter() - started:.1f} s")
            password = Path(root) / "password"
            password.write_text(PASSWORD + "\n")
            checked(server, "users", "add", "bench-user", "--password-file", str(password),
                    "--fhir-user", "Patient/bench-patient")  # fmt: skip
            browser = sign_in(server, "bench-user")
            cookies = dict(browser.cookies)
            answer = checked(server, "token", "--scope", "patient/*.rs", "--user", "bench-user")
            patient_token = answer.strip().splitlines()[-1]
            rows = asyncio.run(_rounds(server, cookies, patient_token, requests, rounds))
        finally:
            server.stop()
            store.stop()
    print_table(rows)
    pages = [r for r in rows if r.name == "portal timeline"]
    alone = [r for r in rows if r.name != "portal timeline"]
    summary = {"p50_ms_median": median([r.p50_ms for r in pages]),
               "p95_ms_median": median([r.p95_ms for r in pages]),
               "fhir_alone_p50_ms_median": median([r.p50_ms for r in alone]),
               "fhir_alone_p95_ms_median": median([r.p95_ms for r in alone])}  # fmt: skip
    print(f"timeline page, {STUDIES} studies / {STUDIES + 3 * PER_TYPE} resources: "
          f"p50 {summary['p50_ms_median']} ms, p95 {summary['p95_ms_median']} ms; "
          f"its FHIR requests alone p50 {summary['fhir_alone_p50_ms_median']} ms, "
          f"p95 {summary['fhir_alone_p95_ms_median']} ms (medians of {rounds} rounds)")  # fmt: skip
    path = write_results("portal", rows, {
        "studies": STUDIES, "resources": STUDIES + 3 * PER_TYPE, "rounds": rounds,
        "page_size": 50, **summary,
    })  # fmt: skip
    print(f"wrote {path}")


async def _rounds(
    server: RunningServer, cookies: dict[str, str], token: str, requests: int, rounds: int
) -> list[Measurement]:
    """Interleaved: a round of pages, a round of their FHIR requests alone, and again."""
    rows = []
    async with httpx.AsyncClient(base_url=server.base_url, cookies=cookies, timeout=300) as client:
        await client.get("/portal/")  # warm: templates compiled, caches filled
        for _ in range(rounds):
            rows.append(await timeline(client, requests))
            rows.append(await fhir_alone(client, token, requests))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    arguments = parser.parse_args()
    run(arguments.requests, arguments.rounds)


if __name__ == "__main__":
    main()
