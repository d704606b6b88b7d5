"""free_port: a port below the kernel's ephemeral range, so an outgoing connection's
source port cannot take it between the choice and the listener's bind."""

from __future__ import annotations

import socket

from medbridge.embedded_mongo import EPHEMERAL_RANGE, LOWEST_CHOSEN_PORT, free_port


def test_the_port_is_below_the_ephemeral_range_and_bindable() -> None:
    ephemeral_low = int(EPHEMERAL_RANGE.read_text().split()[0])
    for _ in range(20):
        port = free_port()
        assert LOWEST_CHOSEN_PORT <= port < ephemeral_low
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", port))


def test_a_listening_port_is_never_chosen() -> None:
    listeners = []
    try:
        taken = set()
        for _ in range(200):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", free_port()))
            sock.listen()
            listeners.append(sock)
            taken.add(sock.getsockname()[1])
        assert len(taken) == 200
    finally:
        for sock in listeners:
            sock.close()
