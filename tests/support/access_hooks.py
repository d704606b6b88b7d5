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
