"""Where `medbridge dicom import` finds instances: files, folders, DICOMDIR, zip archives.

A DICOMDIR's ReferencedFileID and a zip member's name only ever select a file to READ,
and only inside the folder or archive given; zip members are read under an absolute
size cap and a compression-ratio cap, so a zip bomb stops early.
"""

from __future__ import annotations

import warnings
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pydicom

MAX_RATIO = 200


@dataclass(frozen=True, slots=True)
class Source:
    """One candidate instance: its bytes, or why they could not be read."""

    name: str
    data: bytes | None
    problem: str | None = None


def sources(paths: list[Path], max_bytes: int) -> Iterator[Source]:
    for path in paths:
        if path.is_dir():
            for child in sorted(p for p in path.rglob("*") if p.is_file()):
                if child.name.upper() != "DICOMDIR":
                    yield from _file(child, max_bytes)
        elif path.name.upper() == "DICOMDIR":
            yield from _dicomdir(path, max_bytes)
        elif zipfile.is_zipfile(path):
            yield from _zip(path, max_bytes)
        else:
            yield from _file(path, max_bytes)


def _file(path: Path, max_bytes: int) -> Iterator[Source]:
    try:
        size = path.stat().st_size
        if size > max_bytes:
            yield Source(str(path), None, f"larger than {max_bytes} bytes")
            return
        yield Source(str(path), path.read_bytes())
    except OSError as error:
        yield Source(str(path), None, f"unreadable: {error.strerror}")


def _dicomdir(path: Path, max_bytes: int) -> Iterator[Source]:
    root = path.parent.resolve()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            directory = pydicom.dcmread(path)
        records = directory.DirectoryRecordSequence
    except Exception as error:
        yield Source(str(path), None, f"not a readable DICOMDIR: {type(error).__name__}")
        return
    for record in records:
        file_id = record.get("ReferencedFileID")
        if file_id is None:
            continue
        parts = [file_id] if isinstance(file_id, str) else list(file_id)
        target = _inside(root, [str(p) for p in parts])
        if target is None:
            yield Source("/".join(map(str, parts))[:80], None, "ReferencedFileID leaves the folder")
            continue
        yield from _file(target, max_bytes)


def _inside(root: Path, parts: list[str]) -> Path | None:
    """root/parts only when every part is a plain name and the result stays under root."""
    if not parts or any(
        not p or p in (".", "..") or "/" in p or "\\" in p or "\0" in p or len(p) > 64
        for p in parts
    ):
        return None
    target = root.joinpath(*parts).resolve()
    return target if root in target.parents else None


def _zip(path: Path, max_bytes: int) -> Iterator[Source]:
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if info.is_dir():
                continue
            name = PurePosixPath(info.filename)
            if name.name.upper() == "DICOMDIR":
                continue
            label = f"{path.name}:{info.filename[:80]}"
            if info.file_size > max_bytes:
                yield Source(label, None, f"larger than {max_bytes} bytes")
                continue
            if info.compress_size and info.file_size / info.compress_size > MAX_RATIO:
                yield Source(label, None, f"compression ratio over {MAX_RATIO}: refused")
                continue
            yield _member(archive, info, label, max_bytes)


def _member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, label: str, max_bytes: int) -> Source:
    # the header's sizes can lie: read at most max_bytes + 1 and judge what came out
    try:
        with archive.open(info) as member:
            data = member.read(max_bytes + 1)
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        return Source(label, None, f"unreadable zip member: {type(error).__name__}")
    if len(data) > max_bytes:
        return Source(label, None, f"inflates past {max_bytes} bytes")
    if info.compress_size and len(data) / info.compress_size > MAX_RATIO:
        return Source(label, None, f"compression ratio over {MAX_RATIO}: refused")
    return Source(label, data)
