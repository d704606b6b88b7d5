"""Shared fixtures: one store and one server per test worker, on free ports.

`--store=embedded` (the default) runs on nx-27017 with the write gate on;
`--store=isolated` runs on SecantusDB with isolated transactions and the gate off
(`MEDBRIDGE_SERIALIZE_WRITES=false`), the production path (docs/scale.md).

Tests that share the session server create their own resources with unique
identifiers, so they never depend on what other tests wrote.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from pymongo import AsyncMongoClient

from medbridge.embedded_mongo import EmbeddedMongo
from tests.support.servers import IsolatedStore, RunningServer, start_server, start_store


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--store",
        choices=("embedded", "isolated"),
        default="embedded",
        help="the MongoDB-wire store under test: embedded nx-27017 (gate on) or "
        "isolated SecantusDB (real transactions, MEDBRIDGE_SERIALIZE_WRITES=false)",
    )


def pytest_report_header(config: pytest.Config) -> str:
    return f"store: {config.getoption('--store')}"


@pytest.fixture(scope="session")
def store_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.config.getoption("--store")
    return kind


@pytest.fixture(scope="session")
def store(
    tmp_path_factory: pytest.TempPathFactory, store_kind: str
) -> Iterator[EmbeddedMongo | IsolatedStore]:
    """The real MongoDB-wire server of this run over a loopback socket."""
    running = start_store(tmp_path_factory.mktemp("store"), store_kind)
    yield running
    running.stop()


def skip_on_isolated(request: pytest.FixtureRequest, reason: str) -> None:
    """Skip (printing why) where SecantusDB differs from MongoDB in a way outside our control."""
    if request.config.getoption("--store") == "isolated":
        pytest.skip(f"isolated store (SecantusDB): {reason}")


@pytest.fixture
async def mongo(
    store: EmbeddedMongo | IsolatedStore,
) -> AsyncIterator[AsyncMongoClient[dict[str, object]]]:
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(store.uri)
    yield client
    await client.close()


@pytest.fixture
def database_name() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def server(
    tmp_path_factory: pytest.TempPathFactory, store: EmbeddedMongo | IsolatedStore
) -> Iterator[RunningServer]:
    """`medbridge serve` as a child process, sharing the worker's store."""
    running = start_server(tmp_path_factory.mktemp("server"), store.uri)
    yield running
    running.stop()


@pytest.fixture
def fhir(server: RunningServer) -> Iterator[httpx.Client]:
    """An HTTP client rooted at the running server's FHIR base."""
    with httpx.Client(base_url=server.fhir_base, timeout=30.0) as client:
        yield client


@pytest.fixture
def unique() -> str:
    """A value no other test uses, for identifiers."""
    return uuid.uuid4().hex


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path


# integration modules whose behaviour is the HTTP, TLS or token layer and not the store's:
# the isolated run (which exists for the store's transactions and the gate off) leaves
# them to the embedded run, printing why, so `./run test` stays within CI's 20 minutes
STORE_AGNOSTIC = {
    "test_smart_browser.py": "a browser through the sign-in pages",
    "test_smart_clients.py": "SMART clients against the authorization server",
    "test_smart_server.py": "the authorization server's OAuth endpoints",
    "test_external_issuer.py": "tokens of an external OpenID Connect issuer",
    "test_https.py": "TLS on the HTTP listener",
    "test_dicom_tls.py": "TLS on the DIMSE port",
    "test_exposure.py": "refusals at start",
    "test_hostile_http.py": "HTTP heads, slowloris and idle connections",
    "test_every_route_tokens.py": "401 over every route (the deny-all sweep runs on both)",
    "test_portal.py": "the portal's pages in a browser (the Consents it writes and the "
    "reads it makes go through the FHIR door, whose consent tests run on both)",
    "test_viewer.py": "OHIF in a browser over DICOMweb",
    "test_audit_syslog.py": "the syslog sink's TLS transport (its store cursor and lease: "
    "test_audit_syslog_sink.py, on both)",
    "test_logs_privacy_signed_in.py": "what a signed-in run writes to the log",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--store") != "isolated":
        return
    for item in items:
        why = STORE_AGNOSTIC.get(item.path.name)
        if why is not None:
            item.add_marker(
                pytest.mark.skip(reason=f"store-agnostic ({why}): runs on the embedded store")
            )
