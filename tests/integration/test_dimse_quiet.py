"""The association loop `imaging.dimse.quiet` rewrote ends aborted and idle associations
cleanly: the listener keeps serving, the slot is free again, no thread is left behind.

Peers are real: a raw TCP socket speaking the Upper Layer PDUs by hand (to abort in the
middle of a message, or vanish), and pynetdicom AEs. The listener is in-process, with
one association slot, so a slot that is not released refuses the next association.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.events import Event
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from fhir_server.repository import Repository
from imaging.dimse.bridge import LoopBridge
from imaging.dimse.config import DimseConfig
from imaging.dimse.handlers import Archive
from imaging.dimse.service import DimseService
from imaging.index import DicomIndex
from imaging.ingest import Ingestor, IngestPolicy
from imaging.objectstore import LocalObjectStore
from medbridge.embedded_mongo import free_port

NETWORK_TIMEOUT = 1.0  # seconds of silence before the listener ends an association
WAIT = 30.0  # bound on waiting for a state, never asserted on
VERIFICATION = b"1.2.840.10008.1.1"
IMPLICIT_LE = b"1.2.840.10008.1.2"


@dataclass
class Listener:
    service: DimseService
    port: int
    events: list[tuple[str, Association]]  # (EVT_ABORTED or EVT_RELEASED, acceptor)


@pytest.fixture
async def listener(mongo: object, database_name: str, tmp_path: Path) -> AsyncIterator[Listener]:
    index = DicomIndex(Repository(mongo, database_name))  # type: ignore[arg-type]
    store = LocalObjectStore(tmp_path)
    archive = Archive(Ingestor(store, index, IngestPolicy()), index, store)
    # one slot; the guard's own idle watchdog far away, so only quiet's loop can act
    config = DimseConfig(
        max_associations=1,
        reserved_associations=0,
        idle_timeout=3600.0,
        network_timeout=NETWORK_TIMEOUT,
    )
    service = DimseService(config, LoopBridge(asyncio.get_running_loop(), 20.0), archive)
    port = await asyncio.to_thread(service.start, "127.0.0.1", free_port())
    assert service.server is not None
    events: list[tuple[str, Association]] = []
    for name in ("EVT_ABORTED", "EVT_RELEASED"):
        service.server.bind(getattr(evt, name), partial(_record, events, name))
    yield Listener(service, port, events)
    await asyncio.to_thread(service.stop)
    await mongo.drop_database(database_name)  # type: ignore[attr-defined]


def _record(events: list[tuple[str, Association]], name: str, event: Event) -> None:
    events.append((name, event.assoc))


# --- a raw Upper Layer peer (PS3.8 section 9.3) ------------------------------------------


def _item(kind: int, body: bytes) -> bytes:
    return struct.pack(">BBH", kind, 0, len(body)) + body


def _pdu(kind: int, body: bytes) -> bytes:
    return struct.pack(">BBI", kind, 0, len(body)) + body


def associate_rq(calling: bytes) -> bytes:
    """A-ASSOCIATE-RQ for Verification in implicit VR little endian."""
    context = _item(0x20, b"\x01\0\0\0" + _item(0x30, VERIFICATION) + _item(0x40, IMPLICIT_LE))
    user = _item(0x50, _item(0x51, struct.pack(">I", 16384)) + _item(0x52, b"1.2.3.4"))
    header = struct.pack(">HH", 1, 0) + b"MEDBRIDGE".ljust(16) + calling.ljust(16) + bytes(32)
    return _pdu(0x01, header + _item(0x10, b"1.2.840.10008.3.1.1.1") + context + user)


def command_fragment() -> bytes:
    """P-DATA-TF with the first, not last, fragment of a C-ECHO-RQ command set."""
    fragment = struct.pack("<HHI", 0x0000, 0x0002, len(VERIFICATION)) + VERIFICATION
    pdv = bytes([1, 0x01]) + fragment  # context 1; command, more fragments follow
    return _pdu(0x04, struct.pack(">I", len(pdv)) + pdv)


A_ABORT = _pdu(0x07, bytes([0, 0, 0, 0]))  # source: service user, no reason


def read_pdu(peer: socket.socket) -> tuple[int, bytes]:
    def exactly(count: int) -> bytes:
        data = b""
        while len(data) < count:
            chunk = peer.recv(count - len(data))
            if not chunk:
                raise ConnectionError("closed by the listener")
            data += chunk
        return data

    kind, _, length = struct.unpack(">BBI", exactly(6))
    return kind, exactly(length)


def raw_associate(port: int, calling: bytes) -> socket.socket:
    peer = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
    peer.sendall(associate_rq(calling))
    kind, _ = read_pdu(peer)
    assert kind == 0x02, f"expected A-ASSOCIATE-AC, got PDU type {kind:#x}"
    return peer


# --- what the listener shows ---------------------------------------------------------------


async def until(condition: Callable[[], bool], what: str) -> None:
    deadline = asyncio.get_running_loop().time() + WAIT
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"not {what} after {WAIT:.0f} s")
        await asyncio.sleep(0.02)


def acceptors(service: DimseService) -> list[Association]:
    return [a for a in service.ae.active_associations if a.is_acceptor]


async def the_acceptor(service: DimseService) -> Association:
    await until(lambda: any(a.is_established for a in acceptors(service)), "established")
    (association,) = acceptors(service)
    # the rewritten loop is the one running: quiet() installed its wake-up sockets
    assert hasattr(association, "_quiet_wake"), "quiet() did not take this association"
    return association


async def ended_cleanly(listener: Listener, association: Association, how: str) -> None:
    """Ended by quiet's loop (which triggers `how` for the handlers), nothing left over."""
    service = listener.service
    await until(lambda: not association.is_alive(), "association thread ended")
    await until(lambda: not association.dul.is_alive(), "DUL thread ended")
    await until(lambda: not acceptors(service), "association slot released")
    wake: tuple[socket.socket, ...] = association._quiet_wake  # type: ignore[attr-defined]
    await until(lambda: all(end.fileno() == -1 for end in wake), "wake-up sockets closed")
    assert not association.is_established
    assert [name for name, which in listener.events if which is association] == [how]


def echo(port: int) -> tuple[bool, int | None]:
    """A pynetdicom C-ECHO: (accepted, status)."""
    ae = AE(ae_title="ECHOPEER")
    ae.add_requested_context(Verification)
    association = ae.associate("127.0.0.1", port, ae_title="MEDBRIDGE")
    if not association.is_established:
        return False, None
    status = association.send_c_echo()
    association.release()
    return True, int(status.Status) if "Status" in status else None


async def still_serving(listener: Listener) -> None:
    service = listener.service
    accepted, status = await asyncio.to_thread(echo, listener.port)
    assert accepted, "the next association was refused: the slot was not released"
    assert status == 0x0000
    await until(lambda: not acceptors(service), "echo association ended")


# --- the tests -----------------------------------------------------------------------------


async def test_a_abort_in_the_middle_of_a_message(listener: Listener) -> None:
    service, port = listener.service, listener.port
    peer = await asyncio.to_thread(raw_associate, port, b"RAWPEER")
    try:
        association = await the_acceptor(service)
        # the one slot is taken: an association now is refused (what the last check relies on)
        accepted, _ = await asyncio.to_thread(echo, port)
        assert not accepted
        await asyncio.to_thread(peer.sendall, command_fragment())
        await until(lambda: association.dimse.message is not None, "command half received")
        await asyncio.to_thread(peer.sendall, A_ABORT)
        await ended_cleanly(listener, association, "EVT_ABORTED")
        assert association.is_aborted
    finally:
        peer.close()
    await still_serving(listener)


async def test_peer_vanishes_without_a_pdu(listener: Listener) -> None:
    service, port = listener.service, listener.port
    peer = await asyncio.to_thread(raw_associate, port, b"RAWPEER")
    association = await the_acceptor(service)
    # a reset, as from a modality switched off: no A-ABORT, no A-RELEASE
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    peer.close()
    await ended_cleanly(listener, association, "EVT_ABORTED")
    await still_serving(listener)


def silent_peer(port: int, aborted: list[Event], released: list[Event]) -> Association:
    ae = AE(ae_title="IDLEPEER")
    ae.network_timeout = None  # the listener's timer must be the one that fires
    ae.add_requested_context(Verification)
    handlers: list[Any] = [
        (evt.EVT_ABORTED, aborted.append),
        (evt.EVT_RELEASED, released.append),
    ]
    association = ae.associate("127.0.0.1", port, ae_title="MEDBRIDGE", evt_handlers=handlers)
    assert association.is_established
    return association


async def test_idle_past_the_network_timeout_is_aborted(
    listener: Listener,
) -> None:
    service, port = listener.service, listener.port
    aborted: list[Event] = []
    released: list[Event] = []
    peer = await asyncio.to_thread(silent_peer, port, aborted, released)
    try:
        association = await the_acceptor(service)
        await until(lambda: bool(aborted), "A-ABORT received by the silent peer")
        await ended_cleanly(listener, association, "EVT_ABORTED")
        assert association.is_aborted
        assert not released
    finally:
        with contextlib.suppress(Exception):
            peer.abort()
    await still_serving(listener)


async def test_idle_past_the_network_timeout_released_when_configured(
    listener: Listener,
) -> None:
    service, port = listener.service, listener.port

    def release_when_idle(event: Event) -> None:
        event.assoc.network_timeout_response = "A-RELEASE"

    assert service.server is not None
    service.server.bind(evt.EVT_CONN_OPEN, release_when_idle)
    aborted: list[Event] = []
    released: list[Event] = []
    peer = await asyncio.to_thread(silent_peer, port, aborted, released)
    try:
        association = await the_acceptor(service)
        await until(lambda: association.is_released, "released by the listener")
        await ended_cleanly(listener, association, "EVT_RELEASED")
        await until(lambda: bool(released), "A-RELEASE answered by the silent peer")
        assert not aborted
    finally:
        with contextlib.suppress(Exception):
            peer.abort()
    await still_serving(listener)
