"""The installed OHIF build (`@ohif/app` dist/) as this server serves it under /viewer/.

OHIF's build expects to live at `/`: its index.html, webpack's public path in each bundle
and its stylesheet name absolute paths. Rather than rebuilding OHIF (a node toolchain
MedBridge does not carry), the few places are rewritten as files are served, from the
table in `rewrites.json`; the installed files stay as npm verified them.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import json
from dataclasses import asdict, dataclass
from functools import cache
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Any

INDEX = "index.html"
# files of the build this server never serves: what `./run` drops, plus the pages that
# load code from a CDN or cache images in the browser (docs/viewer.md, "No request
# leaves the machine")
NOT_SERVED = frozenset({"sw.js", "init-service-worker.js", "silent-refresh.html", "google.js"})


CHECKED_MARKER = ".medbridge-checked"  # hidden: never served (Build.locate)


class BuildChanged(Exception):
    """The installed build no longer has what a rewrite expects (another OHIF version)."""


@dataclass(frozen=True)
class Rewrite:
    files: str  # a glob over the file's path relative to dist/
    old: str
    new: str
    count: int | None  # how often `old` occurs in each file it names; None: any


@cache
def rewrites() -> tuple[Rewrite, ...]:
    table: dict[str, Any] = json.loads(
        resources.files("viewer").joinpath("rewrites.json").read_text("utf-8")
    )
    return tuple(
        Rewrite(row["files"], row["old"], row["new"], row["count"]) for row in table["rewrites"]
    )


class Build:
    """The files of one installed build, rewritten for `base` (e.g. "/viewer")."""

    def __init__(self, dist: Path, base: str) -> None:
        self.dist = dist.resolve()
        self.base = base
        self._rewritten: dict[str, bytes | None] = {}

    def installed(self) -> bool:
        return (self.dist / INDEX).is_file()

    def locate(self, relative: str) -> Path | None:
        """The file a request path names inside dist/, or None: no `..`, no hidden or
        dropped files, nothing outside the folder (symlinks resolved)."""
        if not relative or "\\" in relative or "\x00" in relative:
            return None
        parts = PurePosixPath(relative).parts
        if any(part in ("..", ".") or part.startswith(".") for part in parts):
            return None
        if relative in NOT_SERVED:
            return None
        path = (self.dist / relative).resolve()
        if not path.is_relative_to(self.dist) or not path.is_file():
            return None
        return path

    def applies(self, relative: str) -> list[Rewrite]:
        return [r for r in rewrites() if fnmatch.fnmatchcase(relative, r.files)]

    def content(self, relative: str) -> bytes | None:
        """The rewritten bytes of a file some rewrite names, else None (serve the file
        as it is). Kept in memory once made: the build does not change while serving."""
        if relative in self._rewritten:
            return self._rewritten[relative]
        applies = self.applies(relative)
        if not applies:
            return None
        original = (self.dist / relative).read_text("utf-8")
        text = original
        for rewrite in applies:
            found = text.count(rewrite.old)
            # `*.js` names every bundle: only those that set a public path have one
            if rewrite.count is not None and found not in (0, rewrite.count):
                raise BuildChanged(f"{relative}: {rewrite.old!r} {found} times")
            if relative == INDEX and rewrite.count is not None and found != rewrite.count:
                raise BuildChanged(f"{relative}: {rewrite.old!r} {found} times")
            text = text.replace(rewrite.old, rewrite.new.replace("{base}", self.base))
        # a file none of its rewrites changed is served from disk, not kept in memory
        data = None if text == original else text.encode("utf-8")
        self._rewritten[relative] = data
        return data

    def check(self) -> None:
        """Every rewrite finds what it expects somewhere in the build (a newer OHIF that
        moved one fails here, at start, not in a browser loading from /)."""
        names = sorted(
            str(path.relative_to(self.dist))
            for path in self.dist.iterdir()
            if path.is_file() and path.name not in NOT_SERVED and not path.name.startswith(".")
        )
        # reading the bundles costs seconds of CPU: a build found good is remembered by
        # a stamp of its files and the rewrite table (every start, every test server)
        marker = self.dist / CHECKED_MARKER
        stamp = self._stamp(names)
        with contextlib.suppress(OSError):
            if marker.read_text("utf-8") == stamp:
                return
        for rewrite in rewrites():
            matched = [n for n in names if fnmatch.fnmatchcase(n, rewrite.files)]
            hits = [n for n in matched if rewrite.old in (self.dist / n).read_text("utf-8")]
            if not hits:
                raise BuildChanged(f"no {rewrite.files} holds {rewrite.old!r}")
        self.content(INDEX)
        with contextlib.suppress(OSError):  # a read-only install: checked at every start
            marker.write_text(stamp, "utf-8")

    def _stamp(self, names: list[str]) -> str:
        digest = hashlib.sha256(json.dumps([asdict(r) for r in rewrites()]).encode())
        for name in names:
            status = (self.dist / name).stat()
            digest.update(f"{name}\0{status.st_size}\0{status.st_mtime_ns}\n".encode())
        return digest.hexdigest()


# where `./run` installs the package (.viewer/, pinned by .viewer/package-lock.json)
DEFAULT_DIST = Path(__file__).resolve().parents[1] / ".viewer/node_modules/@ohif/app/dist"
