"""The table of library internals our code patches or mirrors, and their source hashes.

`tests/data/patched_internals.json` names each function (or class, or property) of a
dependency whose private behaviour a module of ours depends on, with the sha256 of its
`inspect.getsource` at the pinned version. `tests/unit/test_patched_internals.py` fails
when one changes. After reading the new source and adapting our module, record the new
hashes with:

    /work/main/.venv/bin/python -m tests.support.internals --update
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import inspect
import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
TABLE = ROOT / "tests" / "data" / "patched_internals.json"


def load() -> dict[str, Any]:
    return dict(json.loads(TABLE.read_text(encoding="utf-8")))


def resolve(qualified: str) -> Any:
    """`package.module.Class.attribute` -> the object, the longest importable prefix
    being the module; properties give their getter, static/class methods their function."""
    parts = qualified.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target: Any = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for name in parts[cut:]:
            target = inspect.getattr_static(target, name)
        if isinstance(target, property):
            return target.fget
        if isinstance(target, staticmethod | classmethod):
            return target.__func__
        return target
    raise ModuleNotFoundError(qualified)


def source_hash(qualified: str) -> str:
    return hashlib.sha256(inspect.getsource(resolve(qualified)).encode()).hexdigest()


def update() -> list[str]:
    """Rewrite the hashes of the table from the installed libraries; the names changed."""
    table = load()
    changed = []
    for entry in table["internals"]:
        digest = source_hash(entry["name"])
        if entry.get("sha256") != digest:
            entry["sha256"] = digest
            changed.append(entry["name"])
    TABLE.write_text(json.dumps(table, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return changed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--update", action="store_true", help="record the installed hashes")
    if not parser.parse_args().update:
        parser.print_help()
        return
    for name in update():
        print("updated", name)


if __name__ == "__main__":
    main()
