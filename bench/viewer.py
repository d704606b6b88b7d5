"""The image viewer opening a study: time to the first WADO response and the bytes
moved, for a 300-slice CT, on loopback and through a link shaped to 256 kbit/s.

Starts the embedded store and one `medbridge serve` (auth on), stores a 300-slice CT by
STOW-RS (pydicom's CT_small, one series, new UIDs, ImagePositionPatient and
InstanceNumber stepped so it is a volume), and then replays what OHIF 3.13 asks
DICOMweb for when a study is opened (seen in tests/integration/test_viewer.py): the study
by QIDO-RS, its series, the series' metadata (WADO-RS, every instance's header), then the
first frame (`/frames/1`, octet-stream). "First image" is the end of that frame's
answer. The throttled runs go through an asyncio TCP proxy written here that paces
bytes in both directions to the given rate. Loopback and throttled rounds alternate;
figures are medians. The viewer's own static files (loaded once per page load) are
counted separately from the installed build.

    ./run bench viewer [--slices 300] [--kbit 256] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pydicom
from pydicom.uid import generate_uid

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import median, write_results
from bench.dicom_ingest import CONTENT_TYPE, multipart
from medbridge.embedded_mongo import EmbeddedMongo
from tests.support.dicom import sample_path
from tests.support.servers import start_server
from tests.support.smart_apps import admin_token
from viewer.build import DEFAULT_DIST

FRAME_ACCEPT = "multipart/related; type=application/octet-stream; transfer-syntax=*"
CHUNK = 1024  # bytes the proxy sends per pacing step


def volume(slices: int) -> tuple[str, list[bytes]]:
    """A CT series of `slices` instances 1 mm apart, from one sample slice."""
    template = pydicom.dcmread(sample_path("CT_small.dcm"))
    study, series = generate_uid(), generate_uid()
    out = []
    for n in range(slices):
        ds = template.copy()
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = n + 1
        x, y, _ = (float(v) for v in template.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y, float(n)]
        ds.SliceLocation = float(n)
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        out.append(buffer.getvalue())
    return study, out


class ShapedProxy:
    """A TCP proxy to `target` pacing each direction to `bits_per_second`, counting bytes."""

    def __init__(self, target: tuple[str, int], bits_per_second: float) -> None:
        self.target, self.rate = target, bits_per_second / 8
        self.moved = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        try:
            await asyncio.gather(
                self._pipe(reader, upstream_writer), self._pipe(upstream_reader, writer),
                return_exceptions=True,
            )  # fmt: skip
        except asyncio.CancelledError:  # the proxy stopped with a keep-alive connection open
            return

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        started, sent = time.monotonic(), 0
        try:
            while data := await reader.read(CHUNK):
                sent += len(data)
                self.moved += len(data)
                # the link: byte n leaves at n / rate after the first
                wait = started + sent / self.rate - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()
                if time.monotonic() - started > 5:  # pace per burst, not since connect
                    started, sent = time.monotonic(), 0
        finally:
            writer.close()


@dataclass
class Opening:
    first_image_seconds: float
    bytes_to_first_image: int  # response bodies (what the proxy counts adds headers)
    metadata_bytes: int


async def open_study(base: str, token: str, study: str) -> Opening:
    """OHIF's requests for a study, in order, timed to the end of the first frame."""
    headers = {"Authorization": f"Bearer {token}"}
    moved = 0
    start = time.perf_counter()
    async with httpx.AsyncClient(base_url=base + "/dicomweb", headers=headers,
                                 timeout=600) as http:  # fmt: skip
        found = await http.get("/studies", params={"StudyInstanceUID": study},
                               headers={"Accept": "application/dicom+json"})  # fmt: skip
        series = await http.get(f"/studies/{study}/series",
                                headers={"Accept": "application/dicom+json"})  # fmt: skip
        uid = series.json()[0]["0020000E"]["Value"][0]
        metadata = await http.get(f"/studies/{study}/series/{uid}/metadata",
                                  headers={"Accept": "application/dicom+json"})  # fmt: skip
        instances = metadata.json()
        first = min(instances, key=lambda i: i["00200013"]["Value"][0])["00080018"]["Value"][0]
        frame = await http.get(f"/studies/{study}/series/{uid}/instances/{first}/frames/1",
                               headers={"Accept": FRAME_ACCEPT})  # fmt: skip
        elapsed = time.perf_counter() - start
        for answer in (found, series, metadata, frame):
            assert answer.status_code == 200, (answer.request.url, answer.status_code)
            moved += len(answer.content)
    return Opening(elapsed, moved, len(metadata.content))


def static_bytes() -> dict[str, int]:
    """What a browser loads of the viewer itself before it asks DICOMweb anything."""
    if not (DEFAULT_DIST / "index.html").is_file():
        return {}
    names = [
        "index.html",
        "app.bundle.css",
        *(p.name for p in DEFAULT_DIST.glob("app.bundle.*.js")),
    ]
    sizes = {name: (DEFAULT_DIST / name).stat().st_size for name in names}
    sizes["dist_total"] = sum(p.stat().st_size for p in DEFAULT_DIST.rglob("*") if p.is_file())
    return sizes


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-viewer-") as scratch:
        root = Path(scratch)
        store = EmbeddedMongo(root / "mongo", "127.0.0.1")
        uri = store.start()
        server = start_server(root / "server", uri, auth=True)
        try:
            token = admin_token(server, "system/*.cruds")
            study, instances = volume(args.slices)
            async with httpx.AsyncClient(timeout=600) as http:
                for at in range(0, len(instances), 50):
                    answer = await http.post(
                        f"{server.base_url}/dicomweb/studies",
                        content=multipart(instances[at : at + 50]),
                        headers={"Content-Type": CONTENT_TYPE, "Authorization": f"Bearer {token}"},
                    )
                    assert answer.status_code == 200, answer.text[:300]
            proxy = ShapedProxy(("127.0.0.1", server.http_port), args.kbit * 1000)
            shaped = f"http://127.0.0.1:{await proxy.start()}"
            loopback: list[Opening] = []
            throttled: list[Opening] = []
            print(f"stored {len(instances)} instances", flush=True)
            await open_study(server.base_url, token, study)  # warm: header cache, files
            for round_number in range(args.rounds):
                print(f"round {round_number + 1} of {args.rounds}", flush=True)
                loopback.append(await open_study(server.base_url, token, study))
                proxy.moved = 0
                throttled.append(await open_study(shaped, token, study))
                throttled[-1].bytes_to_first_image = proxy.moved  # on the wire, both ways
            await proxy.stop()
        finally:
            server.stop()
            store.stop()
    return {"loopback": loopback, "throttled": throttled, "study_instances": len(instances)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--kbit", type=float, default=256.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    found = asyncio.run(run(args))
    figures: dict[str, Any] = {"slices": args.slices, "kbit_per_second": args.kbit}
    for link in ("loopback", "throttled"):
        runs: list[Opening] = found[link]
        figures[link] = {
            "first_image_seconds_median": round(median([r.first_image_seconds for r in runs]), 3),
            "first_image_seconds": [round(r.first_image_seconds, 3) for r in runs],
            "bytes_to_first_image": median([float(r.bytes_to_first_image) for r in runs]),
            "metadata_bytes": runs[0].metadata_bytes,
        }
    figures["viewer_static_bytes"] = static_bytes()
    for link in ("loopback", "throttled"):
        row = figures[link]
        print(f"{link:10} first image {row['first_image_seconds_median']:8.3f} s (median of "
              f"{len(row['first_image_seconds'])}), {row['bytes_to_first_image'] / 1e3:9.1f} kB "
              f"to it, of which series metadata {row['metadata_bytes'] / 1e3:.1f} kB")  # fmt: skip
    app = figures["viewer_static_bytes"]
    if app:
        first_load = sum(v for k, v in app.items() if k != "dist_total")
        print(
            f"viewer's own first load (index, app bundle, css): {first_load / 1e6:.1f} MB; "
            f"at {args.kbit:g} kbit/s {first_load * 8 / (args.kbit * 1000) / 60:.1f} min"
        )
    path = write_results("viewer", [], figures)
    print(f"results: {path}")


if __name__ == "__main__":
    main()
