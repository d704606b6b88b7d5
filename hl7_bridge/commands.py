"""`medbridge hl7 send` and `medbridge hl7 replay`."""

from __future__ import annotations

import argparse
import asyncio
import re
import ssl
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from hl7_bridge.ack import original_of
from hl7_bridge.client import MllpClient, as_message

if TYPE_CHECKING:  # the CLI imports this module for every command: the store stays lazy
    from fhir_server.repository import Repository
    from hl7_bridge.processor import Processor

MESSAGE_START = re.compile(rb"\r(?=MSH)")
NO_ACK_WAIT = 5.0  # seconds to wait for an ACK the message asked not to get


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    hl7 = commands.add_parser("hl7", help="HL7 v2 tools: send messages, replay archived ones")
    actions = hl7.add_subparsers(dest="hl7_command", required=True)
    send = actions.add_parser("send", help="send HL7 files over MLLP and print each ACK")
    send.add_argument("files", nargs="+", type=Path, help="files of one or more messages")
    send.add_argument("--host", default="127.0.0.1")
    send.add_argument("--port", type=int, default=2575)
    send.add_argument("--tls", action="store_true", help="connect with TLS")
    send.add_argument("--tls-ca", type=Path, help="CA certificate to verify the server")
    send.add_argument("--tls-cert", type=Path, help="client certificate (PEM)")
    send.add_argument("--tls-key", type=Path, help="client key (PEM)")
    send.add_argument("--timeout", type=float, default=60.0)
    replay = actions.add_parser("replay", help="process archived messages again")
    replay.add_argument("id", nargs="?", help="archive id (hl7_messages _id)")
    replay.add_argument("--failed", action="store_true", help="every dead-lettered message")
    replay.add_argument("--mongodb-uri", help="MongoDB (MEDBRIDGE_MONGODB_URI)")
    replay.add_argument("--database", help="MongoDB database name (MEDBRIDGE_DATABASE)")
    replay.add_argument("--data-dir", type=Path, help="data directory (MEDBRIDGE_DATA_DIR)")


def split_messages(data: bytes) -> list[bytes]:
    """A file's messages: CR/LF/CRLF segment ends become CR; each MSH starts a message."""
    text = as_message(data)
    return [part if part.endswith(b"\r") else part + b"\r" for part in MESSAGE_START.split(text)]


def acknowledged(message: bytes) -> bool:
    """False when enhanced mode asks for no ACK at all (MSH-15 and MSH-16 NE)."""
    original = original_of(message.decode("latin-1"))
    return not (original.get(15).strip().upper() == original.get(16).strip().upper() == "NE")


async def receive_for(client: MllpClient, message: bytes, wait: float) -> bytes:
    """The ACK whose MSA-2 is this message's MSH-10 (late ACKs of earlier ones skipped)."""
    control = original_of(message.decode("latin-1")).get(10)
    while True:
        ack = await client.receive(wait)
        original = original_of(ack.decode("latin-1"))
        for segment in ack.split(b"\r"):
            if segment.startswith(b"MSA"):
                fields = segment.decode("latin-1").split(original.field_separator)
                if len(fields) > 2 and fields[2] == control:
                    return ack


async def send(args: argparse.Namespace) -> int:
    tls = None
    if args.tls or args.tls_ca:
        tls = ssl.create_default_context(cafile=str(args.tls_ca) if args.tls_ca else None)
        tls.minimum_version = ssl.TLSVersion.TLSv1_2
        if args.tls_cert:
            tls.load_cert_chain(str(args.tls_cert), str(args.tls_key) if args.tls_key else None)
    client = await MllpClient.connect(args.host, args.port, tls, args.timeout)
    worst = 0
    try:
        for path in args.files:
            for message in split_messages(path.read_bytes()):
                await client.post(message)
                asked = acknowledged(message)
                try:
                    ack = await receive_for(client, message, args.timeout if asked else NO_ACK_WAIT)
                except TimeoutError:
                    if asked:
                        raise
                    print("(no acknowledgment: MSH-15 and MSH-16 ask for none)\n", flush=True)
                    continue
                text = ack.decode("utf-8", "replace")
                print(text.replace("\r", "\n").rstrip("\n"), end="\n\n", flush=True)
                if "|AA|" not in text and "|CA|" not in text:
                    worst = 1
    finally:
        await client.close()
    return worst


@dataclass(frozen=True, slots=True)
class ReplayTarget:
    """Where `hl7 replay` runs: through the running server when there is one (`remote`,
    its `hl7/replay` admin call), else on the store, with a router and processor built
    as the server builds them."""

    remote: Callable[[dict[str, Any]], dict[str, Any]] | None
    uri: str | None
    database: str
    embedded: Callable[[], Store]
    # the processor on the store, with the router and hooks the server has (composition)
    processor: Callable[[Repository], Awaitable[Processor]]


def replay_payload(args: argparse.Namespace) -> dict[str, Any]:
    """The admin call's body; `database` only when named: the server refuses another."""
    payload: dict[str, Any] = {"failed": True} if args.failed else {"ids": [args.id]}
    if args.database is not None:
        payload["database"] = args.database
    return payload


def report(args: argparse.Namespace, results: list[dict[str, str]]) -> int:
    """Print one line per message; 1 when any was not applied, 2 when nothing was named."""
    if not results and not args.failed:
        print("nothing to replay", file=sys.stderr)
        return 2
    if not results:
        print("nothing to replay", file=sys.stderr)
        return 0
    failures = 0
    for result in results:
        if "error" in result:
            print(f"{result['id']}: {result['error']}", file=sys.stderr)
            failures += 1
            continue
        print(f"{result['id']}: {result['code'] or 'no ACK requested'}", flush=True)
        failures += result["code"] not in ("AA", "CA", "")
    return 1 if failures else 0


async def replay_on_store(
    args: argparse.Namespace, target: ReplayTarget, uri: str
) -> list[dict[str, str]]:
    from pymongo import AsyncMongoClient

    from fhir_server.repository import Repository
    from hl7_bridge.replay import replay

    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(uri, tz_aware=True)
    try:
        repository = Repository(client, target.database)
        processor = await target.processor(repository)
        return await replay(processor, None if args.failed else [args.id])
    finally:
        await client.close()


class Store(Protocol):
    def start(self) -> str: ...
    def stop(self) -> None: ...


def run(args: argparse.Namespace, target: ReplayTarget | None = None) -> int:
    """`hl7 send` needs only the network; `hl7 replay` the running server, else the store
    (embedded when no URI)."""
    if args.hl7_command == "send":
        return asyncio.run(send(args))
    assert target is not None
    if args.id is None and not args.failed:
        print("replay needs an archive id or --failed", file=sys.stderr)
        return 2
    if target.remote is not None:
        try:
            answer = target.remote(replay_payload(args))
        except Exception as error:  # refused (RuntimeError) or unreachable (httpx)
            print(f"replay through the running server failed: {error}", file=sys.stderr)
            return 1
        return report(args, list(answer.get("results", [])))
    if target.uri is not None:
        return report(args, asyncio.run(replay_on_store(args, target, target.uri)))
    store = target.embedded()  # no server runs: the embedded store is ours for a moment
    try:
        return report(args, asyncio.run(replay_on_store(args, target, store.start())))
    finally:
        store.stop()
