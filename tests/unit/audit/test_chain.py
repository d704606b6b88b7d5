"""audit/chain.py: what the hash covers and how a link is read back."""

from __future__ import annotations

from audit.chain import CHAIN_URL, GENESIS, canonical, chain_link, event_id, link_hash, stamped

EVENT = {"resourceType": "AuditEvent", "action": "R", "recorded": "2026-12-06T09:00:00.000Z",
         "outcome": "0"}  # fmt: skip


def test_a_stamped_event_reads_back_its_link() -> None:
    chained, digest = stamped(EVENT, 1, GENESIS)
    link = chain_link(chained)
    assert link is not None
    assert (link.sequence, link.previous, link.hash) == (1, GENESIS, digest)
    assert digest == link_hash(1, GENESIS, chained)


def test_the_hash_ignores_id_meta_and_the_chain_but_nothing_else() -> None:
    chained, digest = stamped(EVENT, 5, "a" * 64)
    stored = {**chained, "id": event_id(5), "meta": {"versionId": "1"}}
    assert link_hash(5, "a" * 64, stored) == digest
    assert link_hash(5, "b" * 64, stored) != digest  # another predecessor
    assert link_hash(6, "a" * 64, stored) != digest  # another place in the chain
    assert link_hash(5, "a" * 64, {**stored, "outcome": "4"}) != digest


def test_other_extensions_are_hashed() -> None:
    extended = {**EVENT, "extension": [{"url": "urn:other", "valueString": "x"}]}
    chained, _ = stamped(extended, 1, GENESIS)
    assert [e["url"] for e in chained["extension"]] == ["urn:other", CHAIN_URL]
    assert b"urn:other" in canonical(chained)
    assert CHAIN_URL.encode() not in canonical(chained)


def test_ids_sort_in_chain_order() -> None:
    ids = [event_id(n) for n in (1, 9, 10, 123456)]
    assert ids == sorted(ids)
    assert chain_link({"extension": [{"url": CHAIN_URL, "extension": []}]}) is None
