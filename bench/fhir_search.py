"""FHIR search latency and throughput with 100,000 resources, and transaction bundles/s.

Loads a realistic mix (patients with Lithuanian and Russian names, their imaging orders,
studies and reports) straight through `Repository.create` (the write path every
interaction uses, minus HTTP: loading 100k over HTTP would take most of the run), in
transactions of `--chunk` resources. Then starts `medbridge serve` on that database and
measures typical searches over HTTP at 1 and 16 clients, and 10-entry transaction
bundles posted to the base.

    ./run bench fhir_search [--resources 100000] [--requests 500] [--clients 1,16]
    ./run bench fhir_search --reuse <store directory printed by the first run>   # skip the load
    ./run bench fhir_search --restricted   # then searches narrowed to one patient by a hook
    ./run bench fhir_search --audit [--rounds 3]   # instead: auth + consent + audit on vs off

`--restricted` then restarts the server with an authorize hook that narrows every FHIR
access to one patient (`Exchange.narrow(Restriction(patients=...))`, the hook of
tests/support/access_hooks.py) and measures searches that name no patient: only the
restriction, compiled into the index query, keeps them to that patient's few resources.

`--audit` instead measures the searches with authorization (a SMART token), consent and
audit all on, and all off, on the loaded database in alternating rounds
(bench/access_on_off.py), with the audit write rate (docs/audit.md, Cost).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import aiohttp
import orjson
from pymongo import AsyncMongoClient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.access_on_off import Operation, compare, start_pair
from bench.common import Measurement, measure, print_table, write_results
from fhir_server.repository import Repository
from medbridge.embedded_mongo import EmbeddedMongo
from tests.support.servers import start_server

HEADERS = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
MRN = "urn:oid:1.3.6.1.4.1.99999.1"
ACCESSION = "urn:oid:1.3.6.1.4.1.99999.2"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
LT_FAMILIES = ["Kazlauskas", "Petrauskas", "Jankauskas", "Šimkus", "Žukauskas", "Butkus"]
LT_FEMALE = ["Petraitienė", "Kazlauskienė", "Vasiliauskaitė", "Šimkienė", "Žemaitytė"]
LT_GIVEN = ["Jonas", "Petras", "Ona", "Rūta", "Aušra", "Mindaugas", "Žydrūnas", "Eglė"]
RU_FAMILIES = ["Ёлкин", "Иванов", "Смирнова", "Кузнецов", "Соколова", "Попов", "Лебедев"]
RU_GIVEN = ["Пётр", "Анна", "Сергей", "Мария", "Алексей", "Наталья", "Дмитрий", "Ольга"]
MODALITIES = ["CT", "MR", "CR", "US", "DX"]


def patient(n: int, rng: random.Random) -> dict[str, Any]:
    if n % 2:
        family, given = rng.choice(LT_FAMILIES + LT_FEMALE), rng.choice(LT_GIVEN)
    else:
        family, given = rng.choice(RU_FAMILIES), rng.choice(RU_GIVEN)
    return {
        "resourceType": "Patient",
        "identifier": [{"system": MRN, "value": f"MRN{n:07d}"}],
        "name": [{"family": family, "given": [given]}],
        "gender": rng.choice(["male", "female"]),
        "birthDate": f"{rng.randint(1930, 2020)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
    }


def order(n: int, patient_id: str) -> dict[str, Any]:
    return {
        "resourceType": "ServiceRequest",
        "status": "active",
        "intent": "order",
        "identifier": [{"system": ACCESSION, "value": f"ACC{n:07d}"}],
        "code": {"coding": [{"system": DCM, "code": MODALITIES[n % 5]}]},
        "subject": {"reference": f"Patient/{patient_id}"},
    }


def study(n: int, patient_id: str, order_id: str, rng: random.Random) -> dict[str, Any]:
    started = f"{rng.randint(2018, 2026)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    return {
        "resourceType": "ImagingStudy",
        "status": "available",
        "identifier": [
            {"system": "urn:dicom:uid", "value": f"urn:oid:2.25.{uuid.uuid4().int}"},
            {
                "type": {"coding": [{"system": V2_0203, "code": "ACSN"}]},
                "system": ACCESSION,
                "value": f"ACC{n:07d}",
            },
        ],
        "subject": {"reference": f"Patient/{patient_id}"},
        "basedOn": [{"reference": f"ServiceRequest/{order_id}"}],
        "started": f"{started}T10:00:00Z",
        "series": [{"uid": f"2.25.{n}.1", "modality": {"system": DCM, "code": MODALITIES[n % 5]}}],
    }


def report(patient_id: str, study_id: str) -> dict[str, Any]:
    return {
        "resourceType": "DiagnosticReport",
        "status": "final",
        "code": {"text": "Imaging report"},
        "subject": {"reference": f"Patient/{patient_id}"},
        "imagingStudy": [{"reference": f"ImagingStudy/{study_id}"}],
        "conclusion": "No acute findings.",
    }


async def load(repository: Repository, resources: int, chunk: int) -> dict[str, Any]:
    """resources/4 patients, each with one order, one study and one report."""
    rng = random.Random(7)
    patients = resources // 4
    started = time.perf_counter()
    written = 0
    for first in range(0, patients, chunk // 4):
        async with repository.bundle_transaction():
            for n in range(first, min(patients, first + chunk // 4)):
                p, o, s, r = (str(uuid.uuid4()) for _ in range(4))
                await repository.create(patient(n, rng), p)
                await repository.create(order(n, p), o)
                await repository.create(study(n, p, o, rng), s)
                await repository.create(report(p, s), r)
                written += 4
        if first % 5000 == 0:
            rate = written / (time.perf_counter() - started)
            print(f"  loaded {written:>7} resources ({rate:.0f}/s)", flush=True)
    seconds = time.perf_counter() - started
    return {
        "resources": written,
        "seconds": round(seconds, 1),
        "per_second": round(written / seconds, 1),
    }


class Queries:
    def __init__(
        self,
        http: aiohttp.ClientSession,
        patients: int,
        ids: dict[str, list[str]],
        headers: dict[str, str] | None = None,
    ) -> None:
        self.http = http
        self.patients = patients
        self.ids = ids
        self.headers = {**HEADERS, **(headers or {})}

    async def _get(self, url: str, expect_entries: bool = True) -> bool:
        async with self.http.get(url, headers=self.headers) as response:
            body = await response.read()
            if response.status != 200:
                return False
            return not expect_entries or bool(orjson.loads(body).get("entry"))

    def _n(self, i: int) -> int:
        return (i * 7919) % self.patients

    async def patient_by_identifier(self, i: int) -> bool:
        return await self._get(f"Patient?identifier={MRN}|MRN{self._n(i):07d}")

    async def patient_ct_since(self, i: int) -> bool:
        patient_id = self.ids["Patient"][self._n(i) % len(self.ids["Patient"])]
        url = (
            f"ImagingStudy?patient=Patient/{patient_id}&modality={DCM}|CT,MR,CR,US,DX"
            "&started=ge2018-01-01&_sort=-started"
        )
        return await self._get(url)

    async def study_by_accession(self, i: int) -> bool:
        return await self._get(f"ImagingStudy?identifier={ACCESSION}|ACC{self._n(i):07d}")

    async def reports_with_study(self, i: int) -> bool:
        patient_id = self.ids["Patient"][self._n(i) % len(self.ids["Patient"])]
        url = f"DiagnosticReport?patient={patient_id}&_include=DiagnosticReport:study"
        return await self._get(url)

    async def patient_by_name(self, i: int) -> bool:
        family = ["simk", "елкин", "petraitiene", "kazlausk"][i % 4]
        return await self._get(f"Patient?family={family}&given=jon,пёт,ona&_count=10", False)

    async def restricted_studies(self, i: int) -> bool:
        return await self._get("ImagingStudy?started=ge2018-01-01&_sort=-started")

    async def restricted_reports(self, i: int) -> bool:
        return await self._get("DiagnosticReport?_include=DiagnosticReport:study")

    async def restricted_read(self, i: int) -> bool:
        return await self._get(f"Patient/{self.ids['Patient'][0]}", False)

    async def restricted_history(self, i: int) -> bool:
        return await self._get("ImagingStudy/_history?_count=10")

    async def transaction(self, i: int) -> bool:
        patient_url = f"urn:uuid:{uuid.uuid4()}"
        rng = random.Random(i)
        entries: list[dict[str, Any]] = [
            {
                "fullUrl": patient_url,
                "resource": patient(10_000_000 + i, rng),
                "request": {"method": "POST", "url": "Patient"},
            }
        ]
        for k in range(9):
            resource = {
                "resourceType": "ServiceRequest",
                "status": "active",
                "intent": "order",
                "code": {"coding": [{"system": DCM, "code": MODALITIES[k % 5]}]},
                "subject": {"reference": patient_url},
            }
            entries.append(
                {"resource": resource, "request": {"method": "POST", "url": "ServiceRequest"}}
            )
        document = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
        async with self.http.post("", data=orjson.dumps(document), headers=HEADERS) as response:
            await response.read()
            return response.status == 200


async def sample_ids(client: AsyncMongoClient[dict[str, Any]], limit: int) -> dict[str, list[str]]:
    cursor = client["bench"]["Patient"].find({}, {"_id": 1}).limit(limit)
    return {"Patient": [doc["_id"] async for doc in cursor]}


async def _counted(client: AsyncMongoClient[dict[str, Any]], reuse: Path) -> dict[str, Any]:
    database = client["bench"]
    total = 0
    for resource_type in ("Patient", "ServiceRequest", "ImagingStudy", "DiagnosticReport"):
        total += await database[resource_type].count_documents({})
    # one study per loaded patient; earlier transaction runs added patients without one
    patients = await database["ImagingStudy"].count_documents({})
    return {
        "reused": str(reuse),
        "resources": total,
        "patients": patients,
        "seconds": 0,
        "per_second": 0,
    }


async def run(
    resources: int,
    requests: int,
    levels: list[int],
    chunk: int,
    transactions: int,
    reuse: Path | None,
    restricted: bool = False,
    audit_rounds: int = 0,
) -> None:
    workdir = reuse or Path(tempfile.mkdtemp(prefix="medbridge-bench-search-"))
    store = EmbeddedMongo(workdir / "store")
    store.start()
    rows: list[Measurement] = []
    server = None
    try:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(store.uri)
        repository = Repository(client, "bench")
        await repository.ensure_indexes()
        if reuse is None:
            print(f"loading {resources} resources via Repository.create (no HTTP) ...", flush=True)
            loaded = await load(repository, resources, chunk)
        else:
            loaded = await _counted(client, reuse)
            resources = loaded["patients"] * 4
        print(f"loaded {loaded['resources']} in {loaded['seconds']} s ({loaded['per_second']}/s)")
        ids = await sample_ids(client, 5000)
        await client.close()
        if audit_rounds:
            await audit_run(workdir, store.uri, resources // 4, ids, requests, levels, audit_rounds)
            return
        server = start_server(workdir / "server", store.uri, database="bench")
        connector = aiohttp.TCPConnector(limit=max(levels))
        async with aiohttp.ClientSession(server.fhir_base + "/", connector=connector) as http:
            queries = Queries(http, resources // 4, ids)
            steps = [
                ("patient by identifier", queries.patient_by_identifier),
                ("patient's studies", queries.patient_ct_since),
                ("study by accession", queries.study_by_accession),
                ("reports +_include", queries.reports_with_study),
                ("patients by name", queries.patient_by_name),
            ]
            for clients in levels:
                for name, operation in steps:
                    rows.append(await measure(name, clients, requests, operation))
                rows.append(
                    await measure("transaction (10)", clients, transactions, queries.transaction)
                )
        if restricted:
            server.stop()
            server = None
            rows += await measure_restricted(workdir, store.uri, ids, requests, levels)
    finally:
        if server is not None:
            server.stop()
        store.stop()
    print()
    print_table(rows)
    for row in rows:
        if row.name == "transaction (10)":
            print(
                f"transaction bundles/s at {row.clients:>2} clients: {row.per_second:.1f} "
                f"({row.per_second * 10:.0f} resources/s)"
            )
    extra = {
        "loaded": loaded,
        "load_path": "Repository.create in transactions of --chunk resources (no HTTP)",
        "mix": "per patient: Patient, ServiceRequest, ImagingStudy, DiagnosticReport",
        "requests_per_step": requests,
    }
    print(f"\nwrote {write_results('fhir_search', rows, extra)}; store kept in {workdir}")


SEARCHES = {
    "patient by identifier": "patient_by_identifier",
    "patient's studies": "patient_ct_since",
    "study by accession": "study_by_accession",
    "reports +_include": "reports_with_study",
    "patients by name": "patient_by_name",
}


async def audit_run(
    workdir: Path,
    uri: str,
    patients: int,
    ids: dict[str, list[str]],
    requests: int,
    levels: list[int],
    rounds: int,
) -> None:
    """The searches with authorization, consent and audit all on, and all off
    (bench/access_on_off.py), in alternating rounds; the on/off ratios and the audit
    write rate."""
    pair = start_pair(workdir / "audit", uri, "bench")
    try:
        sessions = {
            mode: aiohttp.ClientSession(
                pair.servers[mode].fhir_base + "/",
                connector=aiohttp.TCPConnector(limit=max(levels)),
            )
            for mode in pair.servers
        }
        try:
            queries = {mode: Queries(sessions[mode], patients, ids, pair.headers[mode])
                       for mode in pair.servers}  # fmt: skip

            def step(method: str) -> Callable[[str], Operation]:
                return lambda mode: cast(Operation, getattr(queries[mode], method))

            steps = {name: step(method) for name, method in SEARCHES.items()}
            compared = await compare(pair, steps, levels, requests, rounds)
        finally:
            for session in sessions.values():
                await session.close()
    finally:
        pair.stop()
    print()
    print_table(compared.rows)
    print()
    compared.print()
    extra = {**compared.as_json(), "patients": patients, "requests_per_step": requests}
    written = write_results("fhir_search-audit", compared.rows, extra)
    print(f"\nwrote {written}; store kept in {workdir}")


async def measure_restricted(
    workdir: Path, uri: str, ids: dict[str, list[str]], requests: int, levels: list[int]
) -> list[Measurement]:
    """Searches that name no patient, on a server whose authorize hook narrows every FHIR
    access to the first sampled patient."""
    rule = workdir / "restriction.json"
    rule.write_bytes(orjson.dumps({"fhir_only": [ids["Patient"][0]]}))
    env = {
        "MEDBRIDGE_EXTRA_HOOKS": "tests.support.access_hooks:hooks",
        "MEDBRIDGE_TEST_ACCESS_FILE": str(rule),
    }
    server = start_server(workdir / "server-restricted", uri, database="bench", env=env)
    rows: list[Measurement] = []
    try:
        connector = aiohttp.TCPConnector(limit=max(levels))
        async with aiohttp.ClientSession(server.fhir_base + "/", connector=connector) as http:
            queries = Queries(http, len(ids["Patient"]), ids)
            steps = [
                ("restricted: studies", queries.restricted_studies),
                ("restricted: reports +_include", queries.restricted_reports),
                ("restricted: patient read", queries.restricted_read),
                ("restricted: type history", queries.restricted_history),
            ]
            for clients in levels:
                for name, operation in steps:
                    rows.append(await measure(name, clients, requests, operation))
    finally:
        server.stop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--resources", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=500, help="requests per search step")
    parser.add_argument("--transactions", type=int, default=100, help="bundles per level")
    parser.add_argument("--clients", default="1,16", help="comma-separated concurrency levels")
    parser.add_argument("--chunk", type=int, default=200, help="resources per load transaction")
    parser.add_argument("--reuse", type=Path, help="work directory of an earlier run: no load")
    parser.add_argument(
        "--restricted", action="store_true", help="then searches narrowed to one patient"
    )
    parser.add_argument(
        "--audit",
        action="store_true",
        help="instead: the searches with authorization, consent and audit all on and all off",
    )
    parser.add_argument("--rounds", type=int, default=3, help="--audit: alternating rounds")
    args = parser.parse_args()
    levels = [int(c) for c in args.clients.split(",")]
    options = (args.requests, levels, args.chunk, args.transactions, args.reuse)
    rounds = args.rounds if args.audit else 0
    asyncio.run(run(args.resources, *options, restricted=args.restricted, audit_rounds=rounds))


if __name__ == "__main__":
    main()
