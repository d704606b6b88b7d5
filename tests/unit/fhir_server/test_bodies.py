"""Large bodies in the object store (fhir_server/bodies.py), on a real local object store."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from access.errors import AccessError
from fhir_server.bodies import HASH_OFF_LOOP_BYTES, Bodies, resolve
from imaging.objectstore import LocalObjectStore


def bodies(tmp_path: Path, threshold: int = 1024) -> Bodies:
    return Bodies(LocalObjectStore(tmp_path), threshold)


def test_only_bodies_from_the_threshold_are_wanted(tmp_path: Path) -> None:
    kept = bodies(tmp_path)
    assert not kept.wanted(None)
    assert not kept.wanted(b"x" * 1023)
    assert kept.wanted(b"x" * 1024)
    assert not bodies(tmp_path, 0).wanted(b"x" * 10_000)  # 0: everything inline


@pytest.mark.parametrize("size", [1024, HASH_OFF_LOOP_BYTES + 1])
async def test_keep_then_fetch_is_byte_exact(tmp_path: Path, size: int) -> None:
    kept = bodies(tmp_path)
    raw = os.urandom(size)
    reference = await kept.keep("fhir", raw)
    digest = hashlib.sha256(raw).hexdigest()
    assert reference == {"key": f"fhir/{digest[:2]}/{digest}.bin", "size": size, "sha256": digest}
    assert (tmp_path / reference["key"]).read_bytes() == raw
    assert await kept.fetch(reference) == raw


async def test_resolve_puts_back_raw_and_leaves_inline_documents(tmp_path: Path) -> None:
    kept = bodies(tmp_path)
    raw = b"{" + b" " * 2000 + b"}"
    documents = [{"_id": "a", "raw": b"", "body": await kept.keep("fhir", raw)},
                 {"_id": "b", "raw": b"{}"}, {"_id": "c", "raw": b"{}", "body": None}]  # fmt: skip
    await kept.resolve(documents)
    assert [d["raw"] for d in documents] == [raw, b"{}", b"{}"]


async def test_missing_or_short_object_is_mb_1120(tmp_path: Path) -> None:
    kept = bodies(tmp_path)
    reference = await kept.keep("hl7", b"m" * 4096)
    (tmp_path / reference["key"]).write_bytes(b"m" * 10)
    with pytest.raises(AccessError) as short:
        await kept.fetch(reference)
    assert short.value.code == "MB-1120"
    (tmp_path / reference["key"]).unlink()
    with pytest.raises(AccessError) as gone:
        await kept.resolve([{"raw": b"", "body": reference}])
    assert gone.value.code == "MB-1120"
    assert reference["key"] in gone.value.diagnostics


async def test_without_an_object_store_a_reference_is_mb_1120(tmp_path: Path) -> None:
    await resolve(None, [{"raw": b"{}"}])  # nothing named: nothing to do
    with pytest.raises(AccessError) as caught:
        await resolve(None, [{"raw": b"", "body": {"key": "fhir/ab/x.bin", "size": 3}}])
    assert caught.value.code == "MB-1120"
