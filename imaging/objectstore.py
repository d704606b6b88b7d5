"""Where DICOM instances (and quarantined bytes) live: one small async interface.

Keys are built only by `instance_key` / `quarantine_key` from validated UIDs and hex
digests, and every store re-checks them, so a header value can never choose a path.
Writes are atomic (temporary name, fsync, rename, fsync of the directory) and checked
(size and SHA-256) before they count as stored.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from imaging.uids import is_uid

CHUNK = 4 * 1024 * 1024
_SEGMENT = re.compile(r"^[0-9a-z][0-9a-z._-]{0,79}$")


class ObjectStoreError(Exception):
    """The store could not keep or find an object."""


@dataclass(frozen=True, slots=True)
class StoredObject:
    key: str
    size: int
    sha256: str


def instance_key(study: str, series: str, sop: str, sha256: str) -> str:
    """The key of one instance version: UIDs as folders, the content digest as name."""
    if not (is_uid(study) and is_uid(series) and is_uid(sop)):
        raise ObjectStoreError("instance key needs three valid UIDs")
    if not re.fullmatch(r"[0-9a-f]{64}", sha256):
        raise ObjectStoreError("instance key needs a SHA-256 hex digest")
    return f"dicom/{study}/{series}/{sop}/{sha256[:20]}.dcm"


def quarantine_key(sha256: str) -> str:
    if not re.fullmatch(r"[0-9a-f]{64}", sha256):
        raise ObjectStoreError("quarantine key needs a SHA-256 hex digest")
    return f"quarantine/{sha256[:2]}/{sha256}.bin"


def check_key(key: str) -> list[str]:
    """The key's segments; refuses anything that is not one of our own keys."""
    segments = key.split("/")
    if not 2 <= len(segments) <= 8 or any(
        not _SEGMENT.match(s) or s.startswith("..") or ".." in s for s in segments
    ):
        raise ObjectStoreError("not a valid object key")
    return segments


class ObjectStore(Protocol):
    async def put(self, key: str, data: bytes, sha256: str | None = None) -> StoredObject:
        """Store `data` under `key` atomically; checks size and digest before returning."""
        ...

    async def put_many(self, items: list[tuple[str, bytes, str]]) -> list[StoredObject]:
        """Several puts (key, data, sha256) at once; all durable when it returns."""
        ...

    async def get(self, key: str) -> bytes: ...

    def stream(self, key: str, chunk_size: int = CHUNK) -> AsyncIterator[bytes]: ...

    async def exists(self, key: str) -> bool: ...

    async def delete(self, key: str) -> None: ...


class LocalObjectStore:
    """Objects as files under `root`; the default for a single server."""

    def __init__(self, root: Path, threads: int = 16) -> None:
        self.root = root.resolve()
        self.tmp = self.root / ".tmp"
        self.tmp.mkdir(parents=True, exist_ok=True)
        # fsync latency, not bandwidth, bounds small writes: overlap many of them
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="objectstore")

    async def put_many(self, items: list[tuple[str, bytes, str]]) -> list[StoredObject]:
        loop = asyncio.get_running_loop()
        paths = [self.path(key) for key, _, _ in items]
        temporaries = await asyncio.gather(
            *(loop.run_in_executor(self._pool, self._write_temporary, data) for _, data, _ in items)
        )
        directories: set[Path] = set()
        for temporary, path in zip(temporaries, paths, strict=True):
            path.parent.mkdir(parents=True, exist_ok=True)
            os.replace(temporary, path)
            directories.add(path.parent)
        # one fsync per directory makes all the renames into it durable
        await asyncio.gather(
            *(loop.run_in_executor(self._pool, _fsync_dir, d) for d in sorted(directories))
        )
        return [StoredObject(key, len(data), sha) for key, data, sha in items]

    def _write_temporary(self, data: bytes) -> Path:
        temporary = self.tmp / f"{uuid.uuid4().hex}.part"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        if temporary.stat().st_size != len(data):
            temporary.unlink(missing_ok=True)
            raise ObjectStoreError("short write")
        return temporary

    def path(self, key: str) -> Path:
        path = self.root.joinpath(*check_key(key))
        if self.root not in path.parents:
            raise ObjectStoreError("key escapes the store root")
        return path

    async def put(self, key: str, data: bytes, sha256: str | None = None) -> StoredObject:
        path = self.path(key)
        return await asyncio.to_thread(self._put, path, key, data, sha256)

    def _put(self, path: Path, key: str, data: bytes, sha256: str | None) -> StoredObject:
        digest = sha256 or hashlib.sha256(data).hexdigest()
        temporary = self.tmp / f"{uuid.uuid4().hex}.part"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        written = temporary.stat().st_size
        if written != len(data):
            temporary.unlink(missing_ok=True)
            raise ObjectStoreError(f"wrote {written} of {len(data)} bytes")
        path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(temporary, path)
        _fsync_dir(path.parent)
        return StoredObject(key, len(data), digest)

    async def get(self, key: str) -> bytes:
        path = self.path(key)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError as error:
            raise ObjectStoreError("object not found") from error

    async def stream(self, key: str, chunk_size: int = CHUNK) -> AsyncIterator[bytes]:
        path = self.path(key)
        loop = asyncio.get_running_loop()
        try:
            handle = await loop.run_in_executor(self._pool, path.open, "rb")
        except FileNotFoundError as error:
            raise ObjectStoreError("object not found") from error
        try:
            # one thread hop per chunk: large chunks keep the hops from bounding throughput
            while chunk := await loop.run_in_executor(self._pool, handle.read, chunk_size):
                yield chunk
        finally:
            handle.close()

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self.path(key).is_file)

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self.path(key).unlink, True)

    def clean_temporary(self) -> int:
        """Remove half-written temporaries a crash left behind; how many were removed."""
        removed = 0
        for leftover in self.tmp.glob("*.part"):
            leftover.unlink(missing_ok=True)
            removed += 1
        return removed


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
