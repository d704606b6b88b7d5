"""hl7_bridge/peers.py: MEDBRIDGE_MLLP_ALLOWED_PEERS parsed and matched."""

from __future__ import annotations

import pytest

from hl7_bridge.peers import AllowedPeers


def test_addresses_networks_and_certificate_names() -> None:
    peers = AllowedPeers.parse(" 10.1.0.0/16, 192.0.2.7 ,2001:db8::/32, cn:ris.example,")
    assert peers.admit("10.1.200.3", None) == "10.1.0.0/16"
    assert peers.admit("192.0.2.7", None) == "192.0.2.7/32"
    assert peers.admit("2001:db8::5", None) == "2001:db8::/32"
    assert peers.admit("203.0.113.9", "ris.example") == "cn:ris.example"
    assert peers.admit("10.2.0.1", None) is None
    assert peers.admit("192.0.2.8", "lis.example") is None
    assert peers.admit("not-an-address", None) is None


def test_ipv4_peers_of_a_dual_stack_socket_match_ipv4_networks() -> None:
    peers = AllowedPeers.parse("10.1.0.0/16")
    assert peers.admit("::ffff:10.1.2.3", None) == "10.1.0.0/16"
    assert peers.admit("::ffff:10.2.2.3", None) is None


def test_empty_list_admits_nobody_and_is_false() -> None:
    peers = AllowedPeers.parse(" , ")
    assert not peers
    assert peers.admit("127.0.0.1", "ris") is None
    assert AllowedPeers.parse("cn:ris")


@pytest.mark.parametrize("text", ["10.1.0.0/33", "ris.example", "cn:", "10.1.2"])
def test_a_bad_entry_is_named(text: str) -> None:
    with pytest.raises(ValueError, match="MLLP allowed peer"):
        AllowedPeers.parse(f"127.0.0.1,{text}")
