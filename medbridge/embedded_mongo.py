"""The embedded MongoDB-wire server (`nx-27017`, SQLite underneath) as a child process.

Started on a free loopback port with its data under the data directory; stopped with
the server. On Linux the child is told to die with its parent, so a `kill -9` of
MedBridge does not leave an orphan holding the database.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from pymongo import MongoClient
from pymongo.errors import PyMongoError

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1


EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LOWEST_CHOSEN_PORT = 20000
# the OS's randomness: the module's generator is shared state that a library or a test
# may seed, and then parallel test workers would choose the same ports in turn
_PORTS = random.SystemRandom()


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on, chosen below the kernel's ephemeral range where it can.

    A port from `bind(0)` comes from the ephemeral range, which is also where every
    outgoing connection takes its source port: between the choice and the listener's bind
    any connect() may take it. Below that range only another listener can.
    """
    low, high = _below_ephemeral()
    for _ in range(64):
        port = _PORTS.randint(low, high)
        if _bindable(host, port):
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        chosen: int = sock.getsockname()[1]
        return chosen


def _below_ephemeral() -> tuple[int, int]:
    try:
        ephemeral_low = int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 49152  # IANA's dynamic range (RFC 6335)
    return LOWEST_CHOSEN_PORT, max(LOWEST_CHOSEN_PORT, ephemeral_low - 1)


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class StoreProcess:
    """A MongoDB-wire server run as a child process on a free loopback port: started,
    waited for until it answers `ping`, told to die with its parent, stopped."""

    name = "MongoDB-wire server"
    output = "store.out"  # the child's stdout and stderr, in its data directory
    stop_wait = 10.0

    def __init__(self, data_dir: Path, host: str = "127.0.0.1") -> None:
        self.data_dir = data_dir
        self.host = host
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"mongodb://{self.host}:{self.port}/?directConnection=true"

    def _spawn(self, command: list[str], timeout: float, cwd: Path | None = None) -> None:
        with (self.data_dir / self.output).open("ab") as log_file:
            self.process = subprocess.Popen(
                command,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=cwd,
                preexec_fn=_die_with_parent,
            )
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                output = (self.data_dir / self.output).read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}: {output}")
            try:
                client: MongoClient[dict[str, object]]
                with MongoClient(self.uri, serverSelectionTimeoutMS=500) as client:
                    client.admin.command("ping")
                return
            except PyMongoError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} did not answer in time")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=self.stop_wait)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


class EmbeddedMongo(StoreProcess):
    """A running nx-27017 child; `uri` is what AsyncMongoClient connects to."""

    name = "embedded MongoDB-wire server"
    output = "nx-27017.out"

    def start(self, timeout: float = 30.0) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port(self.host)
        command = [
            sys.executable,
            "-c",
            # nx-27017 with the lock fix of medbridge/embedded_store.py (a client-level
            # bulkWrite locks the databases it writes, not `admin`)
            "from medbridge.embedded_store import main; main()",
            "--data-dir",
            str(self.data_dir),
            "--host",
            self.host,
            "-p",
            str(self.port),
            # nx-27017 refuses to start while its PID file names a live process: one
            # file per data directory lets several servers (and test workers) coexist
            "--pid-file",
            str(self.data_dir / "nx-27017.pid"),
            "--log-file",
            str(self.data_dir / "nx-27017.log"),
        ]
        self._spawn(command, timeout)
        log.info(
            "embedded MongoDB-wire server on %s:%d (data %s)", self.host, self.port, self.data_dir
        )
        return self.uri
