"""Which MLLP peers may send: addresses, CIDR networks and TLS client certificate CNs
(`MEDBRIDGE_MLLP_ALLOWED_PEERS`, docs/hl7.md "Limits and TLS").

A peer outside the list has its connection closed before any message is read: it is
not yet a sender whose MSH could be acknowledged, and an AR would tell a scanner which
port speaks HL7.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

CN_PREFIX = "cn:"
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class AllowedPeers:
    networks: tuple[Network, ...] = ()
    common_names: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, text: str) -> AllowedPeers:
        """`10.1.0.0/16, 192.0.2.7, ::1, cn:ris.example`; ValueError names a bad entry."""
        networks: list[Network] = []
        names: set[str] = set()
        for entry in (part.strip() for part in text.split(",")):
            if not entry:
                continue
            if entry.lower().startswith(CN_PREFIX):
                name = entry[len(CN_PREFIX) :].strip()
                if not name:
                    raise ValueError("MLLP allowed peer 'cn:' needs a certificate name")
                names.add(name)
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError as error:
                raise ValueError(
                    f"MLLP allowed peer {entry!r}: not an address, CIDR or cn:"
                ) from error
        return cls(tuple(networks), frozenset(names))

    def __bool__(self) -> bool:
        return bool(self.networks or self.common_names)

    def admit(self, address: str, common_name: str | None) -> str | None:
        """The entry that admits this peer (for the record), or None: refused."""
        if common_name is not None and common_name in self.common_names:
            return f"cn:{common_name}"
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return None
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # a dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d
        for network in self.networks:
            if ip.version == network.version and ip in network:
                return str(network)
        return None
