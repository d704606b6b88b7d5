"""Where a running server can be reached by the admin commands of the same data directory.

`medbridge serve` writes `server.json` in its data directory once it listens: its pid,
HTTP base and a random admin token. The file is readable by the server's user only, so
holding the token proves local operator access to that data directory. Admin commands
(`hl7 replay`, `dicom pending`, ...) find the server there and call its `/admin` routes,
so their work goes through the server's pipeline instead of beside it on its store.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import secrets
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

FILE_NAME = "server.json"


@dataclass(frozen=True, slots=True)
class RunningServer:
    pid: int
    http_base: str
    admin_token: str
    certificate: str | None = None  # the HTTPS listener's own certificate file


def announce(data_dir: Path, http_base: str, certificate: Path | None = None) -> RunningServer:
    """Write `server.json` atomically (mode 0600) for this process."""
    path_of_certificate = str(certificate.resolve()) if certificate is not None else None
    running = RunningServer(os.getpid(), http_base, secrets.token_urlsafe(32), path_of_certificate)
    path = data_dir / FILE_NAME
    temporary = path.with_suffix(".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        json.dump({"pid": running.pid, "http": http_base, "admin_token": running.admin_token,
                   "certificate": running.certificate}, handle)  # fmt: skip
    os.replace(temporary, path)
    return running


def withdraw(data_dir: Path, running: RunningServer) -> None:
    """Remove `server.json` if it is still this process's."""
    found = find_running(data_dir)
    if found is not None and found.admin_token == running.admin_token:
        with contextlib.suppress(FileNotFoundError):
            (data_dir / FILE_NAME).unlink()


def find_running(data_dir: Path) -> RunningServer | None:
    """The server announced in data_dir, if its process is alive."""
    try:
        document = json.loads((data_dir / FILE_NAME).read_text())
        certificate = document.get("certificate")
        running = RunningServer(int(document["pid"]), str(document["http"]),
                                str(document["admin_token"]),
                                str(certificate) if certificate else None)  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        os.kill(running.pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, another user's: its token file was readable, so use it
    return running


def call_admin(
    running: RunningServer, name: str, payload: dict[str, Any], timeout: float = 600.0
) -> dict[str, Any]:
    """POST payload to `/admin/{name}` of the running server; its JSON answer.

    Raises RuntimeError with the server's message when it refuses.
    """
    response = httpx.post(
        f"{running.http_base}/admin/{name}",
        json=payload,
        headers={
            "Authorization": f"Bearer {running.admin_token}",
            # the operator the audit names; the token is what proves the right to call
            "X-MedBridge-Operator": getpass.getuser(),
        },
        timeout=timeout,
        verify=_verify(running),
    )
    if response.status_code != 200:
        raise RuntimeError(f"server answered {response.status_code}: {response.text[:500]}")
    answer = response.json()
    if not isinstance(answer, dict):
        raise RuntimeError("server answered something other than a JSON object")
    return answer


def _verify(running: RunningServer) -> ssl.SSLContext | bool:
    """Over HTTPS, trust exactly the server's own certificate: it is named for the
    public host, while the admin command calls the loopback address."""
    if running.certificate is None:
        return True
    context = ssl.create_default_context(cafile=running.certificate)
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN  # the leaf itself is the anchor
    context.check_hostname = False  # pinned to the one certificate instead
    return context
