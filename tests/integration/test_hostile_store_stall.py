"""Issue 17, H3-accepted: searches alongside writes must never stop the embedded store.

nx-27017 ran a client-level `bulkWrite` (every FHIR write) under the `admin` lock while a
`$regex` find held the same database's SQLite connection and called back into Python:
GIL against connection, and the store stopped answering for good. Here one client repeats
`:contains` searches against a 200,000-character family (both shapes: a literal found by
SQLite's `instr()`, and one that is part of the parameter's name, still a `$regex`) while
others create Patients; afterwards the server must still answer a read and a search.
The stall was a race, so the flood cannot make it certain, but before the fix it stopped
the store within a few hundred such requests; no timing is asserted, only answers.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from medbridge.embedded_mongo import EmbeddedMongo
from tests.support.servers import RunningServer, start_server

FHIR_JSON = {"Content-Type": "application/fhir+json"}
SEARCHES = 60
WRITES = 60
# generous: a healthy store answers in milliseconds; a stalled one never does
TIMEOUT = 120.0


@pytest.fixture(scope="module")
def own_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedMongo]:
    """A store of its own: if it stalls, no other test module's store does."""
    store = EmbeddedMongo(Path(tmp_path_factory.mktemp("stall-store")))
    store.start()
    yield store
    store.stop()


@pytest.fixture(scope="module")
def stall_server(
    tmp_path_factory: pytest.TempPathFactory, own_store: EmbeddedMongo
) -> Iterator[RunningServer]:
    running = start_server(tmp_path_factory.mktemp("stall"), own_store.uri)
    yield running
    running.stop()


def _search(base_url: str, needle: str) -> list[int]:
    with httpx.Client(base_url=base_url, timeout=TIMEOUT) as http:
        return [
            http.get("/fhir/Patient", params={"family:contains": needle}).status_code
            for _ in range(SEARCHES)
        ]


def _write(base_url: str, marker: str) -> list[int]:
    with httpx.Client(base_url=base_url, timeout=TIMEOUT) as http:
        return [
            http.post(
                "/fhir/Patient",
                json={"resourceType": "Patient", "name": [{"family": f"{marker}{n}"}]},
                headers=FHIR_JSON,
            ).status_code
            for n in range(WRITES)
        ]


@pytest.mark.parametrize("needle", ["a" * 1_000 + "b", "am"], ids=["instr", "in-the-code"])
def test_contains_searches_alongside_writes_leave_the_store_answering(
    stall_server: RunningServer, needle: str
) -> None:
    base = stall_server.base_url
    with httpx.Client(base_url=base, timeout=TIMEOUT) as http:
        stored = http.post(
            "/fhir/Patient",
            json={"resourceType": "Patient", "name": [{"family": "a" * 200_000}]},
            headers=FHIR_JSON,
        )
        assert stored.status_code == 201, stored.text
        long_id = stored.json()["id"]

    marker = f"w{uuid.uuid4().hex[:8]}"
    with ThreadPoolExecutor(max_workers=3) as pool:
        searches = pool.submit(_search, base, needle)
        writes = [pool.submit(_write, base, f"{marker}x{n}") for n in range(2)]
        assert set(searches.result()) == {200}
        assert all(set(w.result()) == {201} for w in writes)

    with httpx.Client(base_url=base, timeout=TIMEOUT) as http:
        read = http.get(f"/fhir/Patient/{long_id}")
        assert read.status_code == 200
        assert read.json()["name"][0]["family"] == "a" * 200_000
        written = http.get("/fhir/Patient", params={"family": marker, "_count": "200"})
        assert written.status_code == 200
        assert written.json().get("total", len(written.json().get("entry", []))) == 2 * WRITES
