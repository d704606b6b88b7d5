"""Where DICOM instances (and quarantined bytes) live: one small async interface.

Keys are built only by `instance_key` / `quarantine_key` from validated UIDs and hex
digests, and every store re-checks them, so a header value can never choose a path.
Writes are atomic (temporary name, fsync, rename, fsync of the directory) and checked
(size and SHA-256) before they count as stored.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import re
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from imaging.durable_write import write_durably
from imaging.uids import is_uid

# 1 MiB: a 4 MiB chunk outgrew the socket's send buffer, so the event loop copied the
# rest aside and paused the stream; WADO-RS from the page cache went from ~680 to
# ~1,000-1,130 MB/s and from the disk from ~54-72 % to ~86-95 % of a raw read
CHUNK = 1024 * 1024
T = TypeVar("T")
_SEGMENT = re.compile(r"[0-9a-z][0-9a-z._-]{0,79}")  # whole segments: fullmatch


class ObjectStoreError(Exception):
    """The store could not keep or find an object."""


@dataclass(frozen=True, slots=True)
class StoredObject:
    key: str
    size: int
    sha256: str
    created: bool = True  # False: the key was already there (`keep_existing`)


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
        not _SEGMENT.fullmatch(s) or s.startswith("..") or ".." in s for s in segments
    ):
        raise ObjectStoreError("not a valid object key")
    return segments


class ObjectStore(Protocol):
    async def put(self, key: str, data: bytes, sha256: str | None = None) -> StoredObject:
        """Store `data` under `key` atomically; checks size and digest before returning."""
        ...

    async def put_many(
        self, items: list[tuple[str, bytes, str]], keep_existing: bool = False
    ) -> list[StoredObject]:
        """Several puts (key, data, sha256) at once; all durable when it returns.
        `keep_existing`: a key already stored is left as it is (keys name their content)."""
        ...

    async def get(self, key: str) -> bytes: ...

    def stream(self, key: str, chunk_size: int = CHUNK) -> AsyncIterator[bytes]: ...

    async def prefetch(self, key: str) -> None:
        """A hint: the object will be read soon (may do nothing)."""
        ...

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

    async def put_many(
        self, items: list[tuple[str, bytes, str]], keep_existing: bool = False
    ) -> list[StoredObject]:
        loop = asyncio.get_running_loop()
        paths = [self.path(key) for key, _, _ in items]
        # one trip to a thread per object: fsync latency, not bandwidth, bounds small ones
        created = await asyncio.gather(
            *(
                loop.run_in_executor(self._pool, self._store, data, path, keep_existing)
                for (_, data, _), path in zip(items, paths, strict=True)
            )
        )
        return [
            StoredObject(key, len(data), sha, new)
            for (key, data, sha), new in zip(items, created, strict=True)
        ]

    def _store(self, data: bytes, path: Path, keep_existing: bool = False) -> bool:
        """Temporary file, fsync, rename into place, fsync of the folder; False when
        `keep_existing` and the object is already there (renamed in whole, so complete)."""
        if keep_existing and path.is_file():
            return False
        temporary = self._write_temporary(data)
        path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(temporary, path)
        _fsync_dir(path.parent)
        return True

    def _write_temporary(self, data: bytes) -> Path:
        temporary = self.tmp / f"{uuid.uuid4().hex}.part"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        try:
            write_durably(fd, data)  # large objects in steps: other fsyncs are not held up
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
        self._store(data, path)
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
            fd = await loop.run_in_executor(self._pool, _open_sequential, path)
        except FileNotFoundError as error:
            raise ObjectStoreError("object not found") from error
        # the next chunk is read while this one is sent: disk and socket overlap
        pending: asyncio.Future[bytes] | None = loop.run_in_executor(
            self._pool, os.pread, fd, chunk_size, 0
        )
        offset = 0
        try:
            while pending is not None:
                chunk = await pending
                pending = None
                if not chunk:
                    break
                offset += len(chunk)
                if len(chunk) == chunk_size:
                    pending = loop.run_in_executor(self._pool, os.pread, fd, chunk_size, offset)
                yield chunk
        finally:
            if pending is not None:  # never close under a read still running
                with contextlib.suppress(Exception):
                    await pending
            os.close(fd)

    async def prefetch(self, key: str) -> None:
        """Ask the kernel to start reading the object now (the next one to be sent)."""
        path = self.path(key)
        await asyncio.get_running_loop().run_in_executor(self._pool, _will_need, path)

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


def _open_sequential(path: Path) -> int:
    fd = os.open(path, os.O_RDONLY)
    if hasattr(os, "posix_fadvise"):
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)  # a larger read-ahead window
    return fd


def _will_need(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return  # only a hint
    try:
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class S3ObjectStore:
    """Objects in an S3-compatible bucket; a PUT is atomic there, and checked by MD5."""

    def __init__(
        self,
        bucket: str,
        endpoint_url: str | None = None,
        prefix: str = "",
        region: str | None = None,
        threads: int = 16,
    ) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.client = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            config=Config(max_pool_connections=threads, retries={"max_attempts": 3}),
        )
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="s3store")

    def _key(self, key: str) -> str:
        check_key(key)
        return self.prefix + key

    async def _run(self, function: Callable[..., T], *args: object) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: function(*args))

    async def put(self, key: str, data: bytes, sha256: str | None = None) -> StoredObject:
        digest = sha256 or hashlib.sha256(data).hexdigest()
        await self._run(self._put, self._key(key), data, digest)
        return StoredObject(key, len(data), digest)

    def _put(self, name: str, data: bytes, digest: str) -> None:
        md5 = base64.b64encode(hashlib.md5(data).digest()).decode()  # noqa: S324 - S3's check
        self.client.put_object(
            Bucket=self.bucket, Key=name, Body=data, ContentMD5=md5, Metadata={"sha256": digest}
        )
        head = self.client.head_object(Bucket=self.bucket, Key=name)
        if head["ContentLength"] != len(data):
            raise ObjectStoreError("stored size differs from the size sent")

    async def put_many(
        self, items: list[tuple[str, bytes, str]], keep_existing: bool = False
    ) -> list[StoredObject]:
        async def one(key: str, data: bytes, sha: str) -> StoredObject:
            if keep_existing and await self.exists(key):
                return StoredObject(key, len(data), sha, created=False)
            return await self.put(key, data, sha)

        return list(await asyncio.gather(*(one(key, data, sha) for key, data, sha in items)))

    async def get(self, key: str) -> bytes:
        name = self._key(key)
        try:
            body: bytes = await self._run(self._get, name)
        except self.client.exceptions.NoSuchKey as error:
            raise ObjectStoreError("object not found") from error
        return body

    def _get(self, name: str) -> bytes:
        body: bytes = self.client.get_object(Bucket=self.bucket, Key=name)["Body"].read()
        return body

    async def stream(self, key: str, chunk_size: int = CHUNK) -> AsyncIterator[bytes]:
        name = self._key(key)
        try:
            answer = await self._run(self._open, name)
        except self.client.exceptions.NoSuchKey as error:
            raise ObjectStoreError("object not found") from error
        body = answer["Body"]
        try:
            while chunk := await self._run(body.read, chunk_size):
                yield chunk
        finally:
            body.close()

    def _open(self, name: str) -> dict[str, Any]:
        answer: dict[str, Any] = self.client.get_object(Bucket=self.bucket, Key=name)
        return answer

    async def prefetch(self, key: str) -> None:
        self._key(key)  # checked like every key; nothing to warm in a bucket

    async def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            await self._run(self._head, self._key(key))
        except ClientError:
            return False
        return True

    def _head(self, name: str) -> None:
        self.client.head_object(Bucket=self.bucket, Key=name)

    async def delete(self, key: str) -> None:
        await self._run(self._delete, self._key(key))

    def _delete(self, name: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=name)
