"""Fixtures of the embedded store's tests: nx-27017's handler in-process, with
MedBridge's patches installed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from nx_27017.handler import NeoSQLiteHandler

from medbridge import embedded_store


@pytest.fixture
def handler(tmp_path: Path) -> Iterator[NeoSQLiteHandler]:
    embedded_store.install()
    handler = NeoSQLiteHandler(data_dir=str(tmp_path))
    try:
        yield handler
    finally:
        handler.close_all()
        assert not getattr(handler, "_medbridge_readers", {}), "readers outlived close_all"
