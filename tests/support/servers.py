"""Start the real stores and the real `medbridge serve` for tests.

Two stores: the embedded nx-27017 (the default) and SecantusDB (`--store=isolated`), a
MongoDB-wire server on WiredTiger with isolated multi-document transactions, run as a
separate database process (GPL-2.0: never imported by MedBridge). Servers started on the
isolated store run with `MEDBRIDGE_SERIALIZE_WRITES=false`, the production setting.

Everything binds a free loopback port and lives in a temp directory, so pytest-xdist
workers never collide.
"""

from __future__ import annotations

import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from medbridge.embedded_mongo import EmbeddedMongo, StoreProcess, free_port

PR_SET_PDEATHSIG = 1

# URIs of running isolated stores: a server started on one gets the write gate off
ISOLATED_URIS: set[str] = set()


@dataclass
class RunningServer:
    """A `medbridge serve` child process and where to reach it."""

    process: subprocess.Popen[bytes]
    data_dir: Path
    http_port: int
    mllp_port: int
    dicom_port: int
    mongodb_uri: str
    database: str
    log_path: Path
    extra_args: list[str] = field(default_factory=list)
    https_ca: Path | None = None  # the HTTP listener speaks TLS, its certificate from this CA

    @property
    def base_url(self) -> str:
        scheme = "http" if self.https_ca is None else "https"
        return f"{scheme}://127.0.0.1:{self.http_port}"

    @property
    def verify(self) -> ssl.SSLContext | bool:
        """httpx's `verify` for this server: its test CA over HTTPS."""
        return True if self.https_ca is None else ssl.create_default_context(cafile=self.https_ca)

    @property
    def fhir_base(self) -> str:
        return f"{self.base_url}/fhir"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL: no cleanup runs, as in a crash."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


def start_server(
    data_dir: Path,
    mongodb_uri: str | None,
    database: str | None = None,
    extra_args: list[str] | None = None,
    timeout: float = 60.0,
    env: dict[str, str] | None = None,
    auth: bool = False,
    https_ca: Path | None = None,
) -> RunningServer:
    """Run `medbridge serve` and wait until /health answers 200. Without tokens (`--no-auth`,
    on loopback) unless `auth`: the tests of the doors are not about authentication, and
    tests/integration/test_smart_enforce.py starts its servers with auth on."""
    data_dir.mkdir(parents=True, exist_ok=True)
    database = database or f"t{uuid.uuid4().hex[:12]}"
    spawn = (data_dir, mongodb_uri, database, extra_args, env, auth, https_ca)
    for _ in range(PORT_ATTEMPTS - 1):
        server = _spawn_server(*spawn)
        try:
            wait_healthy(server, timeout)
        except PortTaken:
            # a port free when chosen can still be bound by another worker's listener
            # before the server binds it: new ports, not a failed test
            continue
        return server
    server = _spawn_server(*spawn)
    wait_healthy(server, timeout)
    return server


class PortTaken(RuntimeError):
    """The server exited at start because a chosen port was bound by someone else."""


PORT_ATTEMPTS = 3


def _spawn_server(
    data_dir: Path,
    mongodb_uri: str | None,
    database: str,
    extra_args: list[str] | None,
    env: dict[str, str] | None,
    auth: bool,
    https_ca: Path | None,
) -> RunningServer:
    http_port, mllp_port, dicom_port = free_port(), free_port(), free_port()
    args = [
        sys.executable, "-m", "medbridge", "serve",
        "--data-dir", str(data_dir),
        "--http-port", str(http_port),
        "--mllp-port", str(mllp_port),
        "--dicom-port", str(dicom_port),
        "--database", database,
        *([] if auth else ["--no-auth"]),
        *(extra_args or []),
    ]  # fmt: skip
    if mongodb_uri:
        args += ["--mongodb-uri", mongodb_uri]
    if mongodb_uri in ISOLATED_URIS:
        env = {"MEDBRIDGE_SERIALIZE_WRITES": "false", **(env or {})}
    log_path = data_dir / f"server-{http_port}.log"
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(
            args,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
        )
    return RunningServer(
        process, data_dir, http_port, mllp_port, dicom_port,
        mongodb_uri or "", database, log_path, extra_args or [], https_ca,
    )  # fmt: skip


def wait_healthy(server: RunningServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            log = server.log()
            # asyncio says "Address already in use", uvloop "address already in use"
            error = PortTaken if "address already in use" in log.lower() else RuntimeError
            raise error(f"medbridge serve exited early:\n{log[-4000:]}")
        try:
            health = httpx.get(f"{server.base_url}/health", timeout=1.0, verify=server.verify)
            if health.status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    server.kill()
    raise RuntimeError(f"medbridge serve not healthy in {timeout}s:\n{server.log()[-4000:]}")


class IsolatedStore(StoreProcess):
    """A running `secantusd-py` child; the same face as EmbeddedMongo (uri, stop)."""

    name = "secantusd-py"
    output = "secantusd.out"
    stop_wait = 15.0

    def start(self, timeout: float = 60.0) -> str:
        executable = shutil.which("secantusd-py", path=str(Path(sys.executable).parent))
        if executable is None:
            raise RuntimeError("secantusd-py not installed: `pip install secantusdb` (dev extra)")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port(self.host)
        command = [
            executable,
            "--host", self.host,
            "--port", str(self.port),
            "--storage-path", str(self.data_dir / "wiredtiger"),
            "--log-level", "WARNING",
        ]  # fmt: skip
        # cwd: no secantusd.toml of the checkout is picked up
        self._spawn(command, timeout, cwd=self.data_dir)
        ISOLATED_URIS.add(self.uri)
        return self.uri

    def stop(self) -> None:
        ISOLATED_URIS.discard(self.uri)
        super().stop()


def start_store(data_dir: Path, kind: str = "embedded") -> EmbeddedMongo | IsolatedStore:
    """Start the store a test run asked for: `embedded` (nx-27017) or `isolated`."""
    store: EmbeddedMongo | IsolatedStore
    store = IsolatedStore(data_dir) if kind == "isolated" else EmbeddedMongo(data_dir)
    store.start()
    return store


def start_isolated_store(data_dir: Path) -> IsolatedStore:
    store = IsolatedStore(data_dir)
    store.start()
    return store
