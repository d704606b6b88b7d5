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


# The isolated run exists for the production path: isolated transactions, the write gate
# off, several processes on one store. It runs the integration modules whose behaviour
# is the store's (writes, versions, conflicts, transactions, chains, caches across
# processes, DICOM and HL7 ingest into it); every other module (HTTP, TLS, tokens,
# browsers, hostile inputs, protocol tolerance) runs on the embedded store only, each test
# skipped on the isolated run with this reason printed, so `./run test` stays within CI's
# 20 minutes.
PRODUCTION_PATH = {
    "test_multi_process.py", "test_fhir_concurrency.py", "test_fhir_conditional.py",
    "test_fhir_crud.py", "test_fhir_history.py", "test_group_commit.py", "test_bundles.py",
    "test_bundles_pipeline.py", "test_units_of_work.py", "test_fhir_restriction.py",
    "test_consent_processes.py", "test_consent_cache.py", "test_audit_trail.py",
    "test_audit_grouping.py", "test_audit_inline_keys.py", "test_audit_syslog_sink.py",
    "test_large_bodies.py", "test_dimse_store.py", "test_mllp.py", "test_hl7_archive_writes.py",
}  # fmt: skip
ISOLATED_SKIP_REASON = (
    "not about the store: runs on the embedded store (the isolated run keeps the "
    "production path's modules, tests/conftest.py PRODUCTION_PATH)"
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--store") != "isolated":
        return
    for item in items:
        if item.path.parent.name == "integration" and item.path.name not in PRODUCTION_PATH:
            item.add_marker(pytest.mark.skip(reason=ISOLATED_SKIP_REASON))
