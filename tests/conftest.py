"""Shared fixtures: one embedded store and one server per test worker, on free ports.

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
from tests.support.servers import RunningServer, start_server, start_store


@pytest.fixture(scope="session")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedMongo]:
    """The real embedded MongoDB-wire server (nx-27017) over a loopback socket."""
    embedded = start_store(tmp_path_factory.mktemp("store"))
    yield embedded
    embedded.stop()


@pytest.fixture
async def mongo(store: EmbeddedMongo) -> AsyncIterator[AsyncMongoClient[dict[str, object]]]:
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(store.uri)
    yield client
    await client.close()


@pytest.fixture
def database_name() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def server(
    tmp_path_factory: pytest.TempPathFactory, store: EmbeddedMongo
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
