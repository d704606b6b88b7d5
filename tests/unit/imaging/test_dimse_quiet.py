"""imaging.dimse.quiet: associations whose threads wait instead of polling still work."""

from __future__ import annotations

import os
import socket
import threading
from typing import Any

from pynetdicom import AE, evt
from pynetdicom.association import Association

from imaging.dimse import quiet
from imaging.dimse.sop_classes import Verification
from medbridge.embedded_mongo import free_port


def test_echo_release_and_wake_sockets_closed() -> None:
    seen: list[Association] = []

    def remember(event: evt.Event) -> None:
        seen.append(event.assoc)

    server_ae = AE(ae_title="QUIET")
    server_ae.add_supported_context(Verification)
    port = free_port()
    handlers: list[Any] = [
        (evt.EVT_CONN_OPEN, quiet.quiet),
        (evt.EVT_CONN_OPEN, remember),
        (evt.EVT_CONN_CLOSE, quiet.closed),
    ]
    server = server_ae.start_server(("127.0.0.1", port), block=False, evt_handlers=handlers)
    assert server is not None
    try:
        client = AE(ae_title="CALLER")
        client.add_requested_context(Verification)
        for _ in range(2):  # two associations one after the other
            assoc = client.associate("127.0.0.1", port, ae_title="QUIET")
            assert assoc.is_established
            assert [int(assoc.send_c_echo().Status) for _ in range(3)] == [0, 0, 0]
            assoc.release()
            assert assoc.is_released
    finally:
        server.shutdown()
    assert len(seen) == 2
    for accepted in seen:
        wake = accepted._quiet_wake  # type: ignore[attr-defined]
        assert all(isinstance(end, socket.socket) and end.fileno() == -1 for end in wake)
        assert not accepted.dul.is_alive()


def test_whole_reads_reads_all_that_was_asked_across_sends() -> None:
    ours, peer = socket.socketpair()
    data = os.urandom(3 * quiet.RECV_BYTES + 17)
    sender = threading.Thread(target=_send_slowly, args=(peer, data, False))
    sender.start()
    try:
        recv = quiet.whole_reads(ours)
        assert recv(6) == data[:6]
        rest = recv(len(data) - 6)
        assert isinstance(rest, bytearray)
        assert rest == data[6:]
    finally:
        sender.join()
        ours.close()
        peer.close()


def test_whole_reads_answers_what_came_when_the_peer_closes() -> None:
    ours, peer = socket.socketpair()
    sender = threading.Thread(target=_send_slowly, args=(peer, b"x" * 1000, True))
    sender.start()
    try:
        # a PDU header claiming 4 GiB: the buffer holds only what arrived
        assert quiet.whole_reads(ours)(0xFFFFFFFF) == b"x" * 1000
    finally:
        sender.join()
        ours.close()


def _send_slowly(peer: socket.socket, data: bytes, close: bool) -> None:
    for start in range(0, len(data), 700_000):  # several sends, not one
        peer.sendall(data[start : start + 700_000])
    if close:
        peer.close()
