"""imaging.dimse.quiet: associations whose threads wait instead of polling still work."""

from __future__ import annotations

import socket
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
