"""Bad input, framing, limits and crashes against a dedicated `medbridge serve`.

The server gets small limits (64 KiB messages, 30 connections, 2 s per frame) so the
limits are reached quickly.
"""

from __future__ import annotations

import contextlib
import socket
import string
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from pymongo import MongoClient

from hl7_bridge.errors import TABLE_0357
from medbridge.embedded_mongo import EmbeddedMongo
from tests.integration.test_mllp import LTPK, RIS, adt, msh, orm, segment
from tests.support.servers import RunningServer, start_server

CAP = 64 * 1024
LIMITS = {
    "MEDBRIDGE_MLLP_MAX_MESSAGE_BYTES": str(CAP),
    "MEDBRIDGE_MLLP_MAX_CONNECTIONS": "30",
    "MEDBRIDGE_MLLP_FRAME_DEADLINE": "2",
    "MEDBRIDGE_MLLP_READ_TIMEOUT": "1",
}


@pytest.fixture(scope="module")
def limited(
    tmp_path_factory: pytest.TempPathFactory, store: EmbeddedMongo
) -> Iterator[RunningServer]:
    running = start_server(tmp_path_factory.mktemp("limited"), store.uri, env=LIMITS)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def messages(limited: RunningServer, store: EmbeddedMongo) -> Iterator[Any]:
    client: MongoClient[dict[str, Any]] = MongoClient(store.uri)
    yield client[limited.database]["hl7_messages"]
    client.close()


class Sender:
    """A blocking MLLP connection: one frame out, one frame back."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    def send(self, payload: bytes) -> str:
        self.sock.sendall(b"\x0b" + payload + b"\x1c\x0d")
        return self.receive()

    def receive(self) -> str:
        while b"\x1c\x0d" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed without an ACK")
            self.buffer += chunk
        frame, _, self.buffer = self.buffer.partition(b"\x1c\x0d")
        return frame[frame.index(b"\x0b") + 1 :].decode("latin-1")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def msa(ack: str) -> list[str]:
    return next(s for s in ack.split("\r") if s.startswith("MSA")).split(ack[3])


def err3(ack: str) -> str:
    """ERR-3 code (v2.5+) or the code inside ERR-1 (earlier versions)."""
    separator, component, subcomponent = ack[3], ack[4], ack[7]
    fields = next(s for s in ack.split("\r") if s.startswith("ERR")).split(separator)
    if len(fields) > 3 and fields[3]:
        return fields[3].split(component)[0]
    return fields[1].split(component)[3].split(subcomponent)[0]


# mutated corpus --------------------------------------------------------------------

BASE = adt("A08", "{control}", "M{control}", "Šimkutė^Rūta")
MUST_FAIL = {"msh1", "msh2", "no-type", "no-control", "no-version", "version", "event", "garbage"}


def _mutate(kind: str, control: str, junk: bytes, text: str) -> bytes:
    message = BASE.replace("{control}", control)
    fields = message.split("\r")[0].split("|")
    if kind == "msh1":
        message = "MSH" + (text[:1] or "A") + message[4:]  # a letter cannot separate fields
    elif kind == "msh2":
        message = message.replace("^~\\&", "^^\\&", 1)
    elif kind in ("no-type", "no-control", "no-version"):
        index = {"no-type": 8, "no-control": 9, "no-version": 11}[kind]
        fields[index] = ""
        message = "|".join(fields) + message[len(message.split("\r")[0]) :]
    elif kind == "version":
        fields[11] = "9." + (text[:3] or "x")
        message = "|".join(fields) + message[len(message.split("\r")[0]) :]
    elif kind == "event":
        message = message.replace("ADT^A08", "ADT^Z" + (text[:2] or "9"), 1)
    elif kind == "mismatch":
        return message.replace("UNICODE UTF-8", "8859/5").encode("utf-8")
    elif kind == "invalid-utf8":
        return message.encode("utf-8").replace("Rūta".encode(), b"R\xff\xfeta")
    elif kind == "huge-field":
        return message.replace("Rūta", "R" * (1024 * 1024)).encode()  # a 1 MiB field
    elif kind == "garbage":
        return bytes(b for b in junk if b not in (0x0B, 0x1C)) or b"\x00"
    elif kind == "truncate":
        return message.encode()[: max(1, len(junk))]
    elif kind == "flip":
        raw = bytearray(message.encode())
        for position, value in zip(junk[::2], junk[1::2], strict=False):
            if value not in (0x0B, 0x1C):
                raw[position % len(raw)] = value
        return bytes(raw)
    return message.encode("utf-8")


KINDS = sorted(MUST_FAIL | {"mismatch", "invalid-utf8", "huge-field", "truncate", "flip"})
SENT: list[tuple[str, bytes, str]] = []


@settings(
    max_examples=1100,
    deadline=None,
    derandomize=True,
    phases=[Phase.explicit, Phase.generate],  # a failure is reported as found, not shrunk
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    kind=st.sampled_from(KINDS),
    control=st.text(string.ascii_letters + string.digits, min_size=1, max_size=12),
    junk=st.binary(max_size=64),
    text=st.text(string.ascii_letters + string.digits, max_size=4),
)
def test_mutated_corpus_is_answered(
    limited: RunningServer, corpus_sender: Sender, kind: str, control: str, junk: bytes, text: str
) -> None:
    payload = _mutate(kind, f"{kind}-{control}", junk, text)
    ack = corpus_sender.send(payload)
    code = msa(ack)[1]
    assert code in ("AA", "AE", "AR"), ack
    if code != "AA":
        assert err3(ack) in TABLE_0357
    if kind in MUST_FAIL:
        assert code in ("AE", "AR"), (kind, payload[:200], ack)
    if kind == "huge-field":
        assert code == "AR"  # over the 64 KiB cap
    SENT.append((kind, payload, code))


@pytest.fixture(scope="module")
def corpus_sender(limited: RunningServer) -> Iterator[Sender]:
    sender = Sender(limited.mllp_port)
    yield sender
    sender.close()


def test_corpus_was_archived_and_server_still_works(
    limited: RunningServer, messages: Any, corpus_sender: Sender
) -> None:
    # runs after the corpus (file order); alone it still checks a valid message passes
    ack = corpus_sender.send(adt("A08", "after-corpus", "AFTER").encode())
    assert msa(ack)[1] == "AA"
    if SENT:
        assert len(SENT) >= 1000
        assert {kind for kind, _, _ in SENT} == set(KINDS)
        archived = messages.count_documents({})
        assert archived >= len(SENT)
        sample = [payload for _, payload, _ in SENT[:: max(1, len(SENT) // 10)]]
        for payload in sample:
            head = payload[:4096]  # what is kept of a frame over the cap
            found = messages.count_documents({"raw": head}) + messages.count_documents(
                {"raw": payload}
            )
            assert found >= 1, payload[:120]


# framing ---------------------------------------------------------------------------


def test_junk_split_and_double_frames(limited: RunningServer, messages: Any) -> None:
    sender = Sender(limited.mllp_port)
    try:
        first = adt("A08", "split-1", "S1").encode()
        wire = b"\x00junk\r\n" + b"\x0b" + first + b"\x1c\x0d"
        size = len(wire) // 100 + 1
        for i in range(0, len(wire), size):  # one frame over about 100 writes
            sender.sock.sendall(wire[i : i + size])
        assert msa(sender.receive())[1:3] == ["AA", "A08-split-1"]
        two = b"".join(
            b"\x0b" + adt("A08", f"pair-{n}", f"S{n}").encode() + b"\x1c\x0d" for n in (2, 3)
        )
        sender.sock.sendall(two)
        assert msa(sender.receive())[2] == "A08-pair-2"
        assert msa(sender.receive())[2] == "A08-pair-3"
    finally:
        sender.close()
    assert messages.count_documents({"control_id": "A08-split-1"}) == 1


def test_disconnect_and_timeout_mid_frame_store_nothing(
    limited: RunningServer, messages: Any
) -> None:
    cut = Sender(limited.mllp_port)
    cut.sock.sendall(b"\x0b" + adt("A08", "cut-1", "C1").encode()[:80])
    cut.close()
    stalled = Sender(limited.mllp_port)
    stalled.sock.sendall(b"\x0b" + adt("A08", "stall-1", "C2").encode()[:80])
    # the frame deadline (2 s) closes the stalled connection without an answer
    with pytest.raises(ConnectionError):
        stalled.receive()
    stalled.close()
    after = Sender(limited.mllp_port)
    try:
        assert msa(after.send(adt("A08", "after-cut", "C3").encode()))[1] == "AA"
    finally:
        after.close()
    assert messages.count_documents({"control_id": {"$in": ["A08-cut-1", "A08-stall-1"]}}) == 0


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_oversize_frame_is_ar_and_memory_stays_bounded(
    limited: RunningServer, messages: Any
) -> None:
    sender = Sender(limited.mllp_port)
    try:
        assert msa(sender.send(adt("A08", "warm", "W1").encode()))[1] == "AA"
        before = _rss_kib(limited.process.pid)
        big = adt("A08", "big-1", "B1", "R" * (8 * 1024 * 1024) + "^X").encode()
        ack = sender.send(big)
        assert msa(ack)[1:3] == ["AR", "A08-big-1"]
        assert err3(ack) == "207"
        grown = _rss_kib(limited.process.pid) - before
        assert grown * 1024 < 8 * 1024 * 1024  # the 8 MiB frame was never held
        # the connection is kept
        assert msa(sender.send(adt("A08", "after-big", "B2").encode()))[1] == "AA"
    finally:
        sender.close()
    document = messages.find_one({"control_id": "A08-big-1"})
    assert document is not None
    assert document["status"] == "rejected"
    assert document["size"] > 8 * 1024 * 1024
    assert document["raw"].startswith(b"MSH|")


def test_a_large_message_is_read_on_the_body_worker_and_answered_as_any(
    limited: RunningServer, messages: Any
) -> None:
    """From 16 KiB (fhir_server/body_pool.py POOLED_BYTES) a message is decoded and
    parsed on the body worker process: what comes back (the text, the parsed segments
    with their separators and escapes, a refusal with its ERR) answers as inline."""
    note = segment("NTE", {1: "1", 3: "N" * (40 * 1024)})  # over 16 KiB, under the 64 KiB cap
    assert 16 * 1024 < len(note) < CAP
    applied = adt("A08", "large-1", "LARGE-1", "Kazlauskait\\T\\\u0117^Ona", note)
    refused = applied.replace("|2.5.1|", "|9.9|", 1).replace("A08-large-1", "A08-large-2")
    sender = Sender(limited.mllp_port)
    try:
        assert msa(sender.send(applied.encode()))[1:3] == ["AA", "A08-large-1"]
        ack = sender.send(refused.encode())
        assert msa(ack)[1:3] == ["AR", "A08-large-2"]
        assert err3(ack) == "203"  # unsupported version, with its ERR as inline
    finally:
        sender.close()
    with httpx.Client(base_url=limited.fhir_base, timeout=30) as fhir:
        found = fhir.get("Patient", params={"identifier": f"{LTPK}|LARGE-1"}).json()
    assert [e["resource"]["name"][0]["family"] for e in found["entry"]] == ["Kazlauskait&\u0117"]
    assert messages.find_one({"control_id": "A08-large-1"})["status"] == "processed"
    refusal = messages.find_one({"control_id": "A08-large-2"})
    assert (refusal["status"], refusal["err3"]) == ("dead-letter", "203")


def test_idle_and_slow_connections_cannot_starve_a_sender(limited: RunningServer) -> None:
    hogs: list[socket.socket] = []
    try:
        for n in range(300):
            hog = socket.create_connection(("127.0.0.1", limited.mllp_port), timeout=10)
            if n % 2:
                hog.sendall(b"\x0bMSH|")  # a frame started and never finished
            hogs.append(hog)
        # Wait until the server has admitted every hog: admitting the last ones closed the
        # earlier ones (cap 30), so an early idle hog (even index) reading end-of-stream shows it.
        hogs[-32].settimeout(30)
        with contextlib.suppress(OSError):
            assert hogs[-32].recv(1) == b""
        sender = Sender(limited.mllp_port)
        try:
            ack = sender.send(adt("A08", "starved", "ST").encode())
        finally:
            sender.close()
        assert msa(ack)[1] == "AA"
    finally:
        for hog in hogs:
            hog.close()


# crash safety ----------------------------------------------------------------------


# MongoDB aborts the open transaction of a client that died after 60 s
# (transactionLifetimeLimitSeconds); until then its documents refuse other writers
ORPHANED_TRANSACTION_SECONDS = 90


def _until_applied(sender: Sender, payload: bytes, store_kind: str) -> str:
    """The ACK code; on the isolated store an AR ("send it again") is resent, as a sender
    does, while a killed process's open transaction still holds the message's records."""
    deadline = time.monotonic() + ORPHANED_TRANSACTION_SECONDS
    code = msa(sender.send(payload))[1]
    while code == "AR" and store_kind == "isolated" and time.monotonic() < deadline:
        time.sleep(2)
        code = msa(sender.send(payload))[1]
    return code


def test_kill_9_mid_stream_loses_no_acknowledged_order(
    tmp_path: Path, store: EmbeddedMongo, unique: str, store_kind: str
) -> None:
    total = 40
    orders = [orm(f"{unique}-{n}", f"K{unique}", "NW", f"KO-{unique}-{n}", f"KA{n}")
              for n in range(total)]  # fmt: skip
    acked: set[int] = set()
    database = f"k{unique[:12]}"
    pending = list(range(total))
    for _round in range(3):
        server = start_server(tmp_path / "kill", store.uri, database=database)
        sent_enough = threading.Event()

        def stream(
            port: int = server.mllp_port,
            todo: tuple[int, ...] = tuple(pending),
            sent_enough: threading.Event = sent_enough,
        ) -> None:
            sender = Sender(port)
            try:
                for index in todo:
                    if msa(sender.send(orders[index].encode()))[1] == "AA":
                        acked.add(index)
                        if len(acked) % 5 == 0:
                            sent_enough.set()
            except (OSError, ConnectionError, StopIteration, ValueError):
                pass  # the server was killed under us: that is the point
            finally:
                sender.close()
                sent_enough.set()

        thread = threading.Thread(target=stream)
        thread.start()
        sent_enough.wait(60)
        server.kill()
        thread.join(60)
        pending = [n for n in range(total) if n not in acked]
    server = start_server(tmp_path / "kill", store.uri, database=database)
    try:
        with httpx.Client(base_url=server.fhir_base, timeout=30) as fhir:
            for n in sorted(acked):  # everything acknowledged survived the kills
                bundle = fhir.get(
                    "ServiceRequest", params={"identifier": f"{RIS}|KO-{unique}-{n}"}
                ).json()
                assert len(bundle.get("entry", [])) == 1, n
        sender = Sender(server.mllp_port)
        try:
            for n in range(total):  # resend everything: acknowledged ones must not duplicate
                assert _until_applied(sender, orders[n].encode(), store_kind) == "AA"
        finally:
            sender.close()
        with httpx.Client(base_url=server.fhir_base, timeout=30) as fhir:
            for n in range(total):
                bundle = fhir.get(
                    "ServiceRequest", params={"identifier": f"{RIS}|KO-{unique}-{n}"}
                ).json()
                assert len(bundle.get("entry", [])) == 1, n
            patients = fhir.get("Patient", params={"identifier": f"{LTPK}|K{unique}"}).json()
            assert len(patients["entry"]) == 1
    finally:
        server.stop()
    assert acked  # some orders were acknowledged before the kills


def test_unknown_message_shapes_do_not_crash(limited: RunningServer) -> None:
    sender = Sender(limited.mllp_port)
    try:
        for payload in (
            msh("ORU^R01", "no-obr") + segment("PID", {3: "1^^^LTPK"}),
            msh("ORM^O01", "no-orc") + segment("PID", {3: "1^^^LTPK"}),
            msh("ADT^A40", "no-mrg") + segment("PID", {3: "1^^^LTPK"}),
            msh("ADT^A01", "no-pid") + segment("EVN", {1: "A01"}),
        ):
            ack = sender.send(payload.encode())
            assert msa(ack)[1] == "AE"
            assert err3(ack) == "100"
    finally:
        sender.close()
