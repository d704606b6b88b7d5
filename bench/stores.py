"""The stores a benchmark can run on (`--store`), each with its MedBridge processes.

- `embedded`: nx-27017 (SQLite underneath), one process, the write gate on (the default).
- `isolated`: SecantusDB (WiredTiger, isolated transactions), one process, gate on.
- `isolated-nogate`: SecantusDB, one process, `MEDBRIDGE_SERIALIZE_WRITES=false`.
- `isolated-2proc`: SecantusDB, two processes with the gate off; the client sends
  request i to process i % 2 (one client pool in front of both, as a load balancer).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from medbridge.embedded_mongo import EmbeddedMongo
from tests.support.servers import IsolatedStore, RunningServer, start_server

KINDS = ("embedded", "isolated", "isolated-nogate", "isolated-2proc")
ALL = ",".join(KINDS)


@dataclass
class Stack:
    kind: str
    store: EmbeddedMongo | IsolatedStore
    servers: list[RunningServer]

    @property
    def uri(self) -> str:
        return self.store.uri

    @property
    def serialize_writes(self) -> bool:
        return self.kind in ("embedded", "isolated")

    def server(self, i: int) -> RunningServer:
        return self.servers[i % len(self.servers)]

    def stop(self) -> None:
        for server in self.servers:
            server.stop()
        self.store.stop()


def start(
    kind: str, workdir: Path, database: str = "bench", env: dict[str, str] | None = None
) -> Stack:
    """The store of `kind` and its MedBridge processes, all on free ports under workdir."""
    if kind not in KINDS:
        raise SystemExit(f"--store {kind}: one of {ALL}")
    store: EmbeddedMongo | IsolatedStore
    if kind == "embedded":
        store = EmbeddedMongo(workdir / "store")
    else:
        store = IsolatedStore(workdir / "store")
    store.start()
    gate = "true" if kind in ("embedded", "isolated") else "false"
    servers = []
    try:
        for n in range(2 if kind == "isolated-2proc" else 1):
            servers.append(
                start_server(
                    workdir / f"server{n}",
                    store.uri,
                    database=database,
                    env={"MEDBRIDGE_SERIALIZE_WRITES": gate, **(env or {})},
                )
            )
    except BaseException:
        for server in servers:
            server.stop()
        store.stop()
        raise
    return Stack(kind, store, servers)


def kinds(option: str) -> list[str]:
    chosen = [kind.strip() for kind in option.split(",") if kind.strip()]
    for kind in chosen:
        if kind not in KINDS:
            raise SystemExit(f"--store {kind}: one of {ALL}")
    return chosen
