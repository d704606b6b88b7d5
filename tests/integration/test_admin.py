"""The admin routes the commands use: found through server.json, guarded by its token."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from medbridge.running import call_admin, find_running
from tests.support.servers import RunningServer, start_server

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(tmp_path_factory.mktemp("admin"), None)
    yield running
    running.stop()


def test_the_server_announces_itself_to_commands_of_its_data_directory(
    server: RunningServer,
) -> None:
    found = find_running(server.data_dir)
    assert found is not None
    assert found.pid == server.process.pid
    assert found.http_base == server.base_url
    mode = stat.S_IMODE(os.stat(server.data_dir / "server.json").st_mode)
    assert mode == 0o600
    assert call_admin(found, "status", {})["pid"] == server.process.pid


def test_admin_routes_refuse_a_missing_or_wrong_token(server: RunningServer) -> None:
    found = find_running(server.data_dir)
    assert found is not None
    assert httpx.post(f"{server.base_url}/admin/status", json={}).status_code == 401
    with pytest.raises(RuntimeError, match="401"):
        call_admin(replace(found, admin_token="x" * 43), "status", {})
    with pytest.raises(RuntimeError, match="404"):
        call_admin(found, "no-such-operation", {})


def test_a_stopped_server_is_not_found(tmp_path: Path) -> None:
    running = start_server(tmp_path / "stopped", None)
    assert find_running(running.data_dir) is not None
    running.stop()
    assert find_running(running.data_dir) is None
