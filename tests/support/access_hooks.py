"""Access hooks for a `medbridge serve` child process, loaded through the composition by
`MEDBRIDGE_EXTRA_HOOKS=tests.support.access_hooks:hooks`.

What they do is read on every request from the JSON file `MEDBRIDGE_TEST_ACCESS_FILE`
names, so one running server can be switched between rules by the test:
`{"only": ["<FHIR Patient id>", ...]}` narrows every DICOM access to those patients,
`{"deny": true}` refuses every DICOM access (MB-4001), `{"hide": [...]}` hides those
patients' items at consent-show, `{}` leaves everything as is.
They act on the DICOM doors only, so the test's own FHIR calls stay unaffected; the
FHIR door has rules of its own: `{"fhir_only": [...]}` narrows every FHIR access (bundle
entries included) to those patients, `{"fhir_deny": true}` refuses it (MB-1030).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson

from access.context import Door
from access.errors import AccessError
from access.pipeline import Exchange, Stage
from access.restriction import Restriction
from medbridge.compose import HookSpec

FILE = "MEDBRIDGE_TEST_ACCESS_FILE"
DICOM_DOORS = frozenset({Door.DICOMWEB, Door.DIMSE})


def rules() -> dict[str, Any]:
    path = os.environ.get(FILE)
    if not path or not Path(path).exists():
        return {}
    loaded: dict[str, Any] = orjson.loads(Path(path).read_bytes() or b"{}")
    return loaded


async def authorize(exchange: Exchange[Any, Any]) -> None:
    if exchange.context.door is Door.FHIR:
        fhir_authorize(exchange, rules())
    if exchange.context.door not in DICOM_DOORS:
        return
    rule = rules()
    if rule.get("deny"):
        raise AccessError("MB-4001", "refused by the test's authorize hook")
    if rule.get("only") is not None:
        exchange.narrow(Restriction(patients=frozenset(rule["only"])))


def fhir_authorize(exchange: Exchange[Any, Any], rule: dict[str, Any]) -> None:
    if rule.get("fhir_deny"):
        raise AccessError("MB-1030", "refused by the test's authorize hook")
    if rule.get("fhir_only") is not None:
        exchange.narrow(Restriction(patients=frozenset(rule["fhir_only"])))


async def show(exchange: Exchange[Any, Any]) -> None:
    if exchange.context.door not in DICOM_DOORS or exchange.items is None:
        return
    hidden = frozenset(rules().get("hide", ()))
    if hidden:
        exchange.items.hide(lambda item: bool(item.patients & hidden))


def hooks() -> list[HookSpec]:
    return [
        HookSpec(Stage.AUTHORIZE, authorize, "test.dicom-authorize"),
        HookSpec(Stage.CONSENT_SHOW, show, "test.dicom-show"),
    ]


# Every door (issue 12's proofs: tests/integration/test_every_route.py and
# test_audit_per_door.py), loaded by `MEDBRIDGE_EXTRA_HOOKS=tests.support.access_hooks:
# every_door_hooks`: `{"deny_all": true}` in the rule file refuses every access of every
# door (MB-4001, the code tests use until a generic "access denied" code exists), and
# every access's audit stage is written as one JSON line to `MEDBRIDGE_TEST_AUDIT_FILE`.
DENY_ALL_CODE = "MB-4001"
AUDIT_FILE = "MEDBRIDGE_TEST_AUDIT_FILE"


async def deny_every_door(exchange: Exchange[Any, Any]) -> None:
    if rules().get("deny_all"):
        raise AccessError(DENY_ALL_CODE, "refused by the test's deny-all authorize hook")


def audit_record(exchange: Exchange[Any, Any]) -> dict[str, Any]:
    """What the audit stage received, as plain JSON."""
    access = exchange.access
    record: dict[str, Any] = {
        "door": str(exchange.context.door),
        "request_id": exchange.context.request_id,
        "outcome": exchange.error.code if exchange.error is not None else "ok",
        "touched": list(exchange.touched),
    }
    if access is not None:
        record.update(
            action=str(access.action),
            actor={"kind": access.actor.kind, "identifier": access.actor.identifier},
            event=access.event,
            resource_types=sorted(access.resource_types),
            resource_id=access.resource_id,
            patients=sorted(access.patients),
            patient_query=[list(pair) for pair in access.patient_query],
            studies=sorted(access.studies),
            series=sorted(access.series),
            instances=sorted(access.instances),
            parent=None if access.parent is None else access.parent.request_id,
        )
    return record


async def record_audit(exchange: Exchange[Any, Any]) -> None:
    path = os.environ.get(AUDIT_FILE)
    if not path:
        return
    line = orjson.dumps(audit_record(exchange)) + b"\n"
    # one write of an O_APPEND descriptor: concurrent accesses never interleave a line
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(descriptor, line)
    finally:
        os.close(descriptor)


def every_door_hooks() -> list[HookSpec]:
    return [
        HookSpec(Stage.AUTHORIZE, deny_every_door, "test.deny-every-door"),
        HookSpec(Stage.AUDIT, record_audit, "test.record-audit"),
    ]
