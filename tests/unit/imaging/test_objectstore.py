"""imaging.objectstore: atomic, checked writes; keys never escape the root."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from imaging.objectstore import (
    LocalObjectStore,
    ObjectStoreError,
    check_key,
    instance_key,
    quarantine_key,
)

DIGEST = hashlib.sha256(b"x").hexdigest()


async def test_put_get_stream_exists_delete(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "objects")
    key = instance_key("1.2.3", "1.2.3.4", "1.2.3.4.5", DIGEST)
    stored = await store.put(key, b"x")
    assert stored.size == 1
    assert stored.sha256 == DIGEST
    assert await store.get(key) == b"x"
    assert b"".join([c async for c in store.stream(key)]) == b"x"
    assert await store.exists(key)
    await store.delete(key)
    assert not await store.exists(key)
    assert list((tmp_path / "objects" / ".tmp").iterdir()) == []


@pytest.mark.parametrize(
    ("study", "series", "sop"),
    [("..", "1.2", "1.3"), ("1.2", "../../etc", "1.3"), ("1.2", "1.3", "/etc/passwd"),
     ("1.2", "1.3", "1.4\0"), ("1." + "2" * 70, "1.3", "1.4"), ("1.02", "1.3", "1.4"),
     ("1.2\n", "1.3", "1.4"), ("1.2", "1.3", "1.4\n")],
)  # fmt: skip
def test_instance_keys_need_valid_uids(study: str, series: str, sop: str) -> None:
    with pytest.raises(ObjectStoreError):
        instance_key(study, series, sop, DIGEST)


@pytest.mark.parametrize(
    "key",
    [
        "../x/y",
        "dicom/../../x",
        "/etc/passwd",
        "dicom//x",
        "dicom/x\0/y",
        "a",
        "dicom/X",
        "dicom/x\n/y",
        "dicom/x/y\n",
    ],
)
def test_foreign_keys_are_refused(key: str, tmp_path: Path) -> None:
    with pytest.raises(ObjectStoreError):
        check_key(key)
    with pytest.raises(ObjectStoreError):
        LocalObjectStore(tmp_path).path(key)


def test_quarantine_key_needs_a_digest() -> None:
    assert quarantine_key(DIGEST).startswith("quarantine/")
    with pytest.raises(ObjectStoreError):
        quarantine_key("../../" + DIGEST[:58])


def test_leftover_temporaries_are_cleaned(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    (tmp_path / ".tmp" / "half.part").write_bytes(b"half")
    assert LocalObjectStore(tmp_path).clean_temporary() == 1
    assert store.tmp.is_dir()


async def test_put_many_is_durable_and_checked(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    items = [
        (instance_key("1.2", "1.2.3", f"1.2.3.{n}", DIGEST), f"data{n}".encode(), DIGEST)
        for n in range(20)
    ]
    stored = await store.put_many(items)
    assert [s.size for s in stored] == [len(data) for _, data, _ in items]
    for key, data, _ in items:
        assert await store.get(key) == data
    assert list(store.tmp.iterdir()) == []


async def test_stream_reads_ahead_and_closes_when_left_early(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    key = instance_key("1.2.3", "1.2.3.4", "1.2.3.4.5", "c" * 64)
    data = os.urandom(10_000)
    await store.put(key, data)
    await store.prefetch(key)
    for size in (1, 999, 2_500, 10_000, 20_000):  # chunk sizes around and past the size
        assert b"".join([c async for c in store.stream(key, size)]) == data
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        chunks = store.stream(key, 1_000)
        assert await anext(chunks) == data[:1_000]
        await chunks.aclose()  # a client that goes away mid-instance
    assert len(os.listdir("/proc/self/fd")) <= before
    with pytest.raises(ObjectStoreError):
        await anext(store.stream(instance_key("1.2.3", "1.2.3.4", "1.2.9", "d" * 64)))


async def test_put_many_keeps_what_is_there_when_asked(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    key = instance_key("1.2.3", "1.2.3.4", "1.2.3.4.6", "e" * 64)
    first = await store.put_many([(key, b"one", "e" * 64)], keep_existing=True)
    again = await store.put_many([(key, b"one", "e" * 64)], keep_existing=True)
    assert (first[0].created, again[0].created) == (True, False)
    assert await store.get(key) == b"one"
    forced = await store.put_many([(key, b"one", "e" * 64)])
    assert forced[0].created
