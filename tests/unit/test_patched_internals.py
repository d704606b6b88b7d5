"""Each library internal we patch, subclass or mirror still has the source we adapted to.

A failure names the library function and our module that depends on it: read the new
source, adapt our module, then record the hashes (`python -m tests.support.internals
--update`, see docs/architecture.md "Patched library internals").
"""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest

from mappings.hl7v2 import message
from tests.support import internals

TABLE = internals.load()
PACKAGES = ("access", "fhir_server", "hl7_bridge", "imaging", "medbridge", "mappings", "profiles")
# a private name of a pinned library, imported or reached through the module
PRIVATE_USE = re.compile(
    r"from (?:pydicom|pynetdicom|jsonpatch|jsonpointer|uvicorn|hl7)\b[\w.]* import [^\n]*\b_\w"
    r"|\b(?:pydicom|pynetdicom|jsonpatch|jsonpointer|uvicorn|hl7)(?:\.\w+)*\._[a-z]\w*"
)


def _label(entry: dict[str, Any]) -> str:
    return str(entry["name"])


@pytest.mark.parametrize("entry", TABLE["internals"], ids=_label)
def test_source_unchanged(entry: dict[str, Any]) -> None:
    try:
        digest = internals.source_hash(entry["name"])
    except (AttributeError, ImportError, OSError, TypeError) as error:
        pytest.fail(f"{entry['name']} is gone ({error!r}); {', '.join(entry['ours'])} rely on it")
    assert digest == entry["sha256"], (
        f"the source of {entry['name']} changed: {', '.join(entry['ours'])} "
        f"depend(s) on it ({entry['why']}); adapt, then update {internals.TABLE.name}"
    )


@pytest.mark.parametrize("entry", TABLE["present"], ids=_label)
def test_name_present(entry: dict[str, Any]) -> None:
    try:
        internals.resolve(entry["name"])
    except (AttributeError, ImportError) as error:
        pytest.fail(f"{entry['name']} is gone ({error!r}); {', '.join(entry['ours'])} rely on it")


def test_every_dependent_module_exists() -> None:
    for entry in TABLE["internals"] + TABLE["present"]:
        for ours in entry["ours"]:
            assert (internals.ROOT / ours).is_file(), f"{entry['name']}: no module {ours}"


def test_every_private_import_is_in_the_table() -> None:
    """A module of ours that reaches a library's private name is listed as depending on it."""
    listed = {ours for entry in TABLE["internals"] + TABLE["present"] for ours in entry["ours"]}
    unlisted = []
    for package in PACKAGES:
        for path in sorted((internals.ROOT / package).rglob("*.py")):
            module = str(path.relative_to(internals.ROOT))
            if PRIVATE_USE.search(path.read_text(encoding="utf-8")) and module not in listed:
                unlisted.append(module)
    assert not unlisted, f"private library names used but not in the table: {unlisted}"


def test_pins_match_the_table() -> None:
    """The libraries with patched internals are pinned, so a lock refresh cannot move them."""
    pyproject = (internals.ROOT / "pyproject.toml").read_text(encoding="utf-8")
    pins = ('"pynetdicom==3.0.4"', '"jsonpatch==1.47"', '"pydicom>=3.0,<3.1"', '"hl7==0.4.5"')
    for pin in pins:
        assert pin in pyproject, f"pyproject.toml lost the pin {pin}"


def test_python_hl7_loggers_are_the_ones_demoted() -> None:
    """python-hl7 logs field text (patient data); its module loggers, named after their
    files, carry the filter that demotes those records to DEBUG."""
    import hl7.containers
    import hl7.util

    for module in (hl7.util, hl7.containers):
        logger = logging.getLogger(module.__file__)
        assert module.logger is logger, f"{module.__name__} no longer logs as its file"
        assert any(isinstance(f, message._AtDebug) for f in logger.filters)
