"""fhir_server/server_meta.py: the body's security labels are replaced by the stored
version's; ordinary tags and the rest of meta are the body's."""

from __future__ import annotations

from typing import Any

import orjson

from fhir_server.repository import Stored
from fhir_server.server_meta import own_meta, security_label_systems

CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
RESTRICTED = {"system": CONFIDENTIALITY, "code": "R"}
NORMAL = {"system": CONFIDENTIALITY, "code": "N"}
PSY = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "PSY"}
REVIEWED = {"system": "https://example.org/workflow", "code": "reviewed"}


def stored(resource: dict[str, Any] | None) -> Stored:
    raw = orjson.dumps(resource) if resource is not None else None
    return Stored("Observation", "o1", 1, 0, raw, "PUT")


def test_create_drops_every_label_and_keeps_ordinary_tags() -> None:
    body = {"resourceType": "Observation",
            "meta": {"security": [NORMAL], "tag": [PSY, REVIEWED], "source": "app"}}  # fmt: skip
    own_meta(body, None)
    assert body["meta"] == {"tag": [REVIEWED], "source": "app"}


def test_update_keeps_the_stored_labels_whatever_the_body_says() -> None:
    previous = stored({"resourceType": "Observation",
                       "meta": {"security": [RESTRICTED], "tag": [PSY, REVIEWED]}})  # fmt: skip
    removing = {"resourceType": "Observation", "meta": {"tag": [REVIEWED]}}
    own_meta(removing, previous)
    assert removing["meta"] == {"security": [RESTRICTED], "tag": [REVIEWED, PSY]}
    relabelling = {"resourceType": "Observation", "meta": {"security": [NORMAL]}}
    own_meta(relabelling, previous)
    assert relabelling["meta"] == {"security": [RESTRICTED], "tag": [PSY]}


def test_no_meta_stays_no_meta_and_a_deleted_version_gives_nothing() -> None:
    body: dict[str, Any] = {"resourceType": "Observation"}
    own_meta(body, stored(None))
    assert "meta" not in body
    odd: dict[str, Any] = {"resourceType": "Observation", "meta": {"security": "x", "tag": 3}}
    own_meta(odd, None)
    assert "meta" not in odd


def test_the_label_systems_are_those_of_the_r4_value_set() -> None:
    systems = security_label_systems()
    assert CONFIDENTIALITY in systems
    assert "https://example.org/workflow" not in systems
