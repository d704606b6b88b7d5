"""Start the real embedded store and the real `medbridge serve` for tests.

Everything binds a free loopback port and lives in a temp directory, so pytest-xdist
workers never collide.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from medbridge.embedded_mongo import EmbeddedMongo, free_port


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

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

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
) -> RunningServer:
    """Run `medbridge serve` and wait until /health answers 200."""
    data_dir.mkdir(parents=True, exist_ok=True)
    http_port, mllp_port, dicom_port = free_port(), free_port(), free_port()
    database = database or f"t{uuid.uuid4().hex[:12]}"
    args = [
        sys.executable, "-m", "medbridge", "serve",
        "--data-dir", str(data_dir),
        "--http-port", str(http_port),
        "--mllp-port", str(mllp_port),
        "--dicom-port", str(dicom_port),
        "--database", database,
        *(extra_args or []),
    ]  # fmt: skip
    if mongodb_uri:
        args += ["--mongodb-uri", mongodb_uri]
    log_path = data_dir / f"server-{http_port}.log"
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(
            args,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
        )
    server = RunningServer(
        process, data_dir, http_port, mllp_port, dicom_port,
        mongodb_uri or "", database, log_path, extra_args or [],
    )  # fmt: skip
    wait_healthy(server, timeout)
    return server


def wait_healthy(server: RunningServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"medbridge serve exited early:\n{server.log()[-4000:]}")
        try:
            if httpx.get(f"{server.base_url}/health", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    server.kill()
    raise RuntimeError(f"medbridge serve not healthy in {timeout}s:\n{server.log()[-4000:]}")


def start_store(data_dir: Path) -> EmbeddedMongo:
    store = EmbeddedMongo(data_dir)
    store.start()
    return store
