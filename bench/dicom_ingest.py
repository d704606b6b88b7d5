"""DICOM archive: STOW-RS ingest vs Orthanc, disk ceiling, QIDO latency, WADO-RS throughput.

One run on one machine: generates instances from pydicom's CT sample (small CT slices,
new UIDs) and large synthetic 16-bit CT frames, stores the same set by STOW-RS into
MedBridge and into Orthanc (Debian `orthanc` + `orthanc-dicomweb`, started here with a
temporary config on loopback), measures the disk's fsync'd sequential write bandwidth
as the ceiling, QIDO-RS p50 with `--studies` studies indexed, and WADO-RS retrieval
MB/s against a raw read of the same files. `--store` names the stores MedBridge runs on
(bench/stores.py), each one a target of the same interleaved STOW rounds; QIDO and WADO
are measured on the first.

    ./run bench dicom_ingest [--small 2000] [--large 100] [--studies 10000] [--clients 4]
                             [--store embedded,isolated,isolated-nogate,isolated-2proc]

`--audit` instead measures QIDO-RS and WADO-RS with authorization (a SMART token),
consent and audit all on, and all off, in alternating rounds (bench/access_on_off.py),
with the audit write rate (docs/audit.md, Cost):

    ./run bench dicom_ingest --audit [--studies 10000] [--requests 300] [--audit-clients 1,16]
                             [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pydicom
from pydicom.uid import generate_uid

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import stores
from bench.common import RESULTS, cpu_seconds, median, percentile
from medbridge.embedded_mongo import free_port
from tests.support.dicom import sample_path

BOUNDARY = "bench-boundary"
CONTENT_TYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
ORTHANC = "/usr/sbin/Orthanc"
ORTHANC_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
LARGE_ROUND = 50  # large instances per alternation at least
COLD_ROUNDS = 3  # from-disk reads of the study by WADO-RS and raw, alternating


def small_instances(count: int, per_study: int = 100) -> list[bytes]:
    template = pydicom.dcmread(sample_path("CT_small.dcm"))
    out = []
    for n in range(count):
        if n % per_study == 0:
            study, series = generate_uid(), generate_uid()
        ds = template.copy()
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.PatientID = f"BENCH-{n // per_study}"
        ds.InstanceNumber = n % per_study + 1
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        out.append(buffer.getvalue())
    return out


def large_instances(count: int, side: int = 1024) -> list[bytes]:
    template = pydicom.dcmread(sample_path("CT_small.dcm"))
    study, series = generate_uid(), generate_uid()
    rng = np.random.default_rng(7)
    out = []
    for n in range(count):
        ds = template.copy()
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.PatientID = "BENCH-LARGE"
        ds.InstanceNumber = n + 1
        ds.Rows = ds.Columns = side
        ds.PixelData = rng.integers(0, 4096, (side, side), dtype=np.uint16).tobytes()
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        out.append(buffer.getvalue())
    return out


def multipart(parts: list[bytes]) -> bytes:
    head = f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
    return b"".join(head + p + b"\r\n" for p in parts) + f"--{BOUNDARY}--\r\n".encode()


async def stow_all(
    url: str | list[str], instances: list[bytes], clients: int, per_request: int
) -> dict[str, Any]:
    """STOW `instances` over `clients` workers; with several URLs (processes behind one
    client pool) worker n sends to URL n % len."""
    urls = [url] if isinstance(url, str) else url
    batches = [instances[i : i + per_request] for i in range(0, len(instances), per_request)]
    pending = iter(batches)
    failures = 0

    async def worker(session: aiohttp.ClientSession, url: str) -> None:
        nonlocal failures
        for batch in pending:
            async with session.post(
                url, data=multipart(batch), headers={"Content-Type": CONTENT_TYPE}
            ) as r:
                await r.read()
                if r.status != 200:
                    failures += len(batch)

    timeout = aiohttp.ClientTimeout(total=3600)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        started = time.perf_counter()
        await asyncio.gather(*(worker(session, urls[n % len(urls)]) for n in range(clients)))
        seconds = time.perf_counter() - started
    size = sum(map(len, instances))
    return {
        "instances": len(instances),
        "megabytes": round(size / 1e6, 1),
        "seconds": round(seconds, 2),
        "instances_per_s": round(len(instances) / seconds, 1),
        "mb_per_s": round(size / 1e6 / seconds, 1),
        "failures": failures,
    }


def disk_ceiling(directory: Path, megabytes: int = 512) -> float:
    """Sequential write bandwidth with fsync, MB/s: what no archive can beat."""
    path = directory / "ceiling.bin"
    block = os.urandom(4 << 20)
    started = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for _ in range(megabytes // 4):
            os.write(fd, block)
        os.fsync(fd)
    finally:
        os.close(fd)
    seconds = time.perf_counter() - started
    path.unlink()
    return round(megabytes * 1.048576 / seconds, 1)


def object_write_ceiling(directory: Path, blobs: list[bytes], threads: int = 16) -> float:
    """Instances/s of the object writes alone (temporary file, fsync, rename, fsync of
    the folder: the object store's own code on 16 threads), without HTTP, parse or index:
    what durable storage of each instance costs on this disk before anything else."""
    from concurrent.futures import ThreadPoolExecutor

    from imaging.objectstore import LocalObjectStore

    store = LocalObjectStore(directory / "ceiling-objects")
    # the archive's own layout: a folder per study, series and instance
    keys = [f"dicom/1.2/1.2.{n // 100}/1.2.{n // 100}.{n}/{n:020x}.dcm" for n in range(len(blobs))]

    def write(n: int) -> bool:
        return store._store(blobs[n], store.path(keys[n]))

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(write, range(len(blobs))))
    seconds = time.perf_counter() - started
    shutil.rmtree(directory / "ceiling-objects", ignore_errors=True)
    return round(len(blobs) / seconds, 1)


def start_orthanc(root: Path) -> tuple[subprocess.Popen[bytes], str]:
    port, dicom_port = free_port(), free_port()
    config = {
        "Name": "bench", "HttpPort": port, "DicomPort": dicom_port,
        "StorageDirectory": str(root / "storage"), "IndexDirectory": str(root / "index"),
        "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
        "Plugins": [ORTHANC_PLUGIN], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        "HttpBindAddress": "127.0.0.1", "DicomServerEnabled": False,
    }  # fmt: skip
    root.mkdir(parents=True, exist_ok=True)
    (root / "orthanc.json").write_text(json.dumps(config))
    log = (root / "orthanc.log").open("wb")
    process = subprocess.Popen([ORTHANC, str(root / "orthanc.json")], stdout=log, stderr=log)
    base = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            import urllib.request

            with urllib.request.urlopen(f"{base}/system", timeout=1) as answer:  # noqa: S310
                if answer.status == 200:
                    return process, base
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("Orthanc did not start; see " + str(root / "orthanc.log"))


async def seed_studies(uri: str, database: str, count: int) -> None:
    """Index rows shaped like ingest's, inserted directly: 10,000 STOWs would take minutes."""
    from pymongo import AsyncMongoClient

    from imaging.parse import fold

    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
    studies, series = client[database]["dicom_studies"], client[database]["dicom_series"]
    names = ["Kazlauskas^Jonas", "Petraitienė^Ona", "Šimkus^Petras", "Doe^John"]
    for start in range(0, count, 1000):
        rows, series_rows = [], []
        for n in range(start, min(count, start + 1000)):
            uid, series_uid = generate_uid(), generate_uid()
            name = names[n % 4]
            rows.append({
                "_id": uid, "pk": f"|SEED-{n}", "lu": n, "dirty": False, "ns": 1, "ni": 1,
                "StudyInstanceUID": uid, "PatientID": f"SEED-{n}", "PatientName": name,
                "_pn": fold(name), "StudyDate": f"20{10 + n % 15:02d}0{1 + n % 9}{10 + n % 18}",
                "AccessionNumber": f"ACC{n}", "StudyDescription": "seeded",
            })  # fmt: skip
            series_rows.append(
                {"_id": series_uid, "st": uid, "n": 1, "Modality": ["CT", "MR"][n % 2]}
            )
            rows[-1]["mods"] = ["CT", "MR"][n % 2]
        await studies.insert_many(rows)
        await series.insert_many(series_rows)
    await client.close()


async def qido_latency(base: str, repeats: int = 200) -> dict[str, float]:
    queries = {
        "PatientID exact": {"PatientID": "SEED-4242"},
        "StudyDate range": {"StudyDate": "20150101-20150331", "limit": "20"},
        "AccessionNumber": {"AccessionNumber": "ACC777"},
        "PatientName fuzzy": {"PatientName": "simkus", "fuzzymatching": "true", "limit": "20"},
        "StudyInstanceUID list": {},
    }
    out: dict[str, float] = {}
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/studies", params={"limit": "3"}) as r:
            uids = [item["0020000D"]["Value"][0] for item in await r.json()]
        queries["StudyInstanceUID list"] = {"StudyInstanceUID": ",".join(uids)}
        for name, params in queries.items():
            latencies = []
            for _ in range(repeats):
                started = time.perf_counter()
                async with session.get(f"{base}/studies", params=params) as r:
                    await r.read()
                    assert r.status == 200, r.status
                latencies.append(time.perf_counter() - started)
            latencies.sort()
            out[name] = round(percentile(latencies, 0.5) * 1000, 2)
    return out


async def wado_throughput(base: str, study: str) -> tuple[float, int]:
    async with aiohttp.ClientSession() as session:
        started = time.perf_counter()
        size = 0
        headers = {"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}
        async with session.get(f"{base}/studies/{study}", headers=headers) as r:
            async for chunk in r.content.iter_chunked(1 << 20):
                size += len(chunk)
        seconds = time.perf_counter() - started
    return round(size / 1e6 / seconds, 1), size


def drop_page_cache() -> bool:
    """Empty Linux's page cache so the next reads come from the disk; False if not allowed."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        return False
    return True


def raw_read(folder: Path) -> float:
    started = time.perf_counter()
    size = 0
    for path in folder.rglob("*.dcm"):
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                size += len(chunk)
    return round(size / 1e6 / (time.perf_counter() - started), 1)


async def interleaved(
    targets: dict[str, str | list[str]],
    instances: list[bytes],
    rounds: int,
    clients: int,
    per_request: int,
    watched: dict[str, dict[str, int]] | None = None,
) -> dict[str, dict[str, Any]]:
    """STOW the same set to every target in alternating rounds, so a busy machine (other
    processes come and go) weighs on both sides alike; totals per target, with the CPU
    per instance of each target's processes (`watched`: target -> name -> pid) and of
    this benchmark's client."""
    size = max(1, len(instances) // rounds)
    chunks = [instances[i : i + size] for i in range(0, len(instances), size)]
    totals: dict[str, dict[str, Any]] = {}
    for chunk in chunks:
        for name, url in targets.items():
            pids = (watched or {}).get(name, {})
            before = {process: cpu_seconds(pid) for process, pid in pids.items()}
            client_before = time.process_time()  # this process alone (servers are children)
            one = await stow_all(url, chunk, clients, per_request)
            total = totals.setdefault(
                name, {"instances": 0, "bytes": 0, "seconds": 0.0, "failures": 0, "cpu": {}}
            )
            total["instances"] += one["instances"]
            total["bytes"] += sum(map(len, chunk))
            total["seconds"] += one["seconds"]
            total["failures"] += one["failures"]
            spent = {process: cpu_seconds(pid) - before[process] for process, pid in pids.items()}
            spent["client"] = time.process_time() - client_before
            for process, seconds in spent.items():
                total["cpu"][process] = total["cpu"].get(process, 0.0) + seconds
    return {
        name: {
            "instances": t["instances"],
            "megabytes": round(t["bytes"] / 1e6, 1),
            "seconds": round(t["seconds"], 2),
            "instances_per_s": round(t["instances"] / t["seconds"], 1),
            "mb_per_s": round(t["bytes"] / 1e6 / t["seconds"], 1),
            "failures": t["failures"],
            "cpu_ms_per_instance": {
                process: round(seconds * 1000 / t["instances"], 2)
                for process, seconds in t["cpu"].items()
            },
        }
        for name, t in totals.items()
    }


async def run(args: argparse.Namespace) -> None:
    small = small_instances(args.small)
    large = large_instances(args.large)
    print(f"generated {len(small)} small ({sum(map(len, small)) / 1e6:.0f} MB) and "
          f"{len(large)} large ({sum(map(len, large)) / 1e6:.0f} MB) instances")  # fmt: skip
    root = Path(tempfile.mkdtemp(prefix="bench-dicom-", dir=args.dir))
    results: dict[str, Any] = {"clients": args.clients, "per_request": args.per_request}
    orthanc = None
    stacks: dict[str, stores.Stack] = {}
    try:
        results["disk_fsync_write_mb_s"] = disk_ceiling(root)
        results["object_writes_alone_per_s"] = object_write_ceiling(root, small)
        # every store's MedBridge is a target of the same interleaved rounds
        targets: dict[str, str | list[str]] = {}
        watched: dict[str, dict[str, int]] = {}
        for kind in stores.kinds(args.store):
            stack = stacks[kind] = stores.start(kind, root / kind)
            name = "medbridge" if kind == "embedded" else f"medbridge-{kind}"
            targets[name] = [f"{s.base_url}/dicomweb/studies" for s in stack.servers]
            assert stack.store.process is not None
            watched[name] = {f"medbridge{n}": s.process.pid for n, s in enumerate(stack.servers)}
            watched[name]["store"] = stack.store.process.pid
        first = next(iter(stacks.values()))
        server, uri = first.servers[0], first.uri
        base = f"{server.base_url}/dicomweb"
        results["first_target"] = next(iter(targets))
        if shutil.which(ORTHANC) and not args.no_orthanc:
            orthanc, orthanc_base = start_orthanc(root / "orthanc")
            targets["orthanc"] = f"{orthanc_base}/dicom-web/studies"
            watched["orthanc"] = {"orthanc": orthanc.pid}
        try:
            # large rounds hold at least LARGE_ROUND instances: 100 large ones in 5 rounds
            # were 10 requests a round, and each round's start and tail (fewer clients
            # busy) weighed on both servers more than the storing did
            large_rounds = max(1, min(args.rounds, len(large) // LARGE_ROUND))
            for kind, instances, per_request, rounds in (
                ("small", small, args.per_request, args.rounds),
                ("large", large, 2, large_rounds),
            ):
                measured = await interleaved(
                    targets, instances, rounds, args.clients, per_request, watched
                )
                for name, figures in measured.items():
                    results[f"{name}_{kind}"] = figures
                if "orthanc" in measured and "medbridge" in measured:
                    results[f"ratio_{kind}"] = round(
                        measured["medbridge"]["instances_per_s"]
                        / measured["orthanc"]["instances_per_s"],
                        2,
                    )
            results["disk_fsync_write_mb_s_after"] = disk_ceiling(root)
            study = pydicom.dcmread(io.BytesIO(large[0]), stop_before_pixels=True).StudyInstanceUID
            folder = server.data_dir / "objects" / "dicom" / study
            # warm: both from the page cache; cold: both from the disk, when the page
            # cache can be dropped (root on Linux), which is what "raw disk read" means
            results["wado_rs_mb_s"], _ = await wado_throughput(base, study)
            results["raw_read_mb_s"] = raw_read(folder)
            if drop_page_cache():
                # the disk's speed varies from one read to the next here: alternate the
                # two readers a few times and compare medians, not one draw of each
                colds, raws = [], []
                for _ in range(COLD_ROUNDS):
                    colds.append((await wado_throughput(base, study))[0])
                    drop_page_cache()
                    raws.append(raw_read(folder))
                    drop_page_cache()
                results["wado_rs_cold_mb_s"] = median(colds)
                results["raw_read_cold_mb_s"] = median(raws)
                results["cold_rounds"] = {"wado_rs": colds, "raw_read": raws}
            await seed_studies(uri, "bench", args.studies)
            results["qido_studies_indexed"] = args.studies + len(small) // 100 + 1
            results["qido_p50_ms"] = await qido_latency(base)
        finally:
            for stack in stacks.values():
                stack.stop()
    finally:
        if orthanc is not None:
            orthanc.terminate()
            orthanc.wait(30)
        shutil.rmtree(root, ignore_errors=True)
    results["load_average"] = os.getloadavg()
    report(results)


def report(results: dict[str, Any]) -> None:
    print(f"\n{'STOW-RS':<34}{'instances':>10}{'MB':>8}{'inst/s':>10}{'MB/s':>8}{'failed':>8}")
    measured = [key for key in results if key.endswith(("_small", "_large"))]
    for key in measured:
        if isinstance(results[key], dict):
            r = results[key]
            print(f"{key:<34}{r['instances']:>10}{r['megabytes']:>8}{r['instances_per_s']:>10}"
                  f"{r['mb_per_s']:>8}{r['failures']:>8}")  # fmt: skip
    print("CPU per instance (ms), all processes on this machine's cores:")
    for key in measured:
        if isinstance(results[key], dict):
            cpu = results[key]["cpu_ms_per_instance"]
            print(f"  {key:<32} " + ", ".join(f"{k} {v}" for k, v in cpu.items()))
    for key in ("ratio_small", "ratio_large"):
        if key in results:
            print(f"{key:<24}{results[key]:>10}x (MedBridge / Orthanc instances per second)")
    if "object_writes_alone_per_s" in results:
        print(f"{'object writes alone':<24}{'':>18}{results['object_writes_alone_per_s']:>10}"
              "   (the small instances written with fsync by the object store's code, "
              "16 threads, no HTTP, parse or index)")  # fmt: skip
    ceiling = max(results["disk_fsync_write_mb_s"], results["disk_fsync_write_mb_s_after"])
    large_share = results[f"{results['first_target']}_large"]["mb_per_s"] / ceiling
    print(f"\nload average at the end {results['load_average']} on {os.cpu_count()} CPUs")
    print(f"disk fsync'd sequential write (best of before/after): {ceiling} MB/s; "
          f"MedBridge large STOW at {large_share:.0%} of it")  # fmt: skip
    print(f"WADO-RS study retrieval: {results['wado_rs_mb_s']} MB/s; raw read of the same "
          f"files: {results['raw_read_mb_s']} MB/s "
          f"({results['wado_rs_mb_s'] / results['raw_read_mb_s']:.0%}), "
          "both from the page cache")  # fmt: skip
    if "raw_read_cold_mb_s" in results:
        cold, raw = results["wado_rs_cold_mb_s"], results["raw_read_cold_mb_s"]
        print(f"WADO-RS from the disk (page cache dropped, median of {COLD_ROUNDS}): {cold} MB/s; "
              f"raw disk read of the same files: {raw} MB/s ({cold / raw:.0%})")  # fmt: skip
    print(f"QIDO-RS p50 with {results['qido_studies_indexed']} studies indexed:")
    for name, value in results["qido_p50_ms"].items():
        print(f"  {name:<24}{value:>8} ms")
    RESULTS.mkdir(exist_ok=True)
    document = {
        "benchmark": "dicom_ingest",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count()},
        "median_qido_p50_ms": median(list(results["qido_p50_ms"].values())),
        **results,
    }
    path = RESULTS / "dicom_ingest.json"
    path.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\nwrote {path}")


WADO_ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'
AUDIT_STUDIES = 20  # stored by STOW-RS, one instance each, for WADO-RS


async def audit_run(args: argparse.Namespace) -> None:
    """QIDO-RS and WADO-RS with authorization, consent and audit all on, and all off
    (bench/access_on_off.py), in alternating rounds, on `--studies` indexed studies; the
    on/off ratios and the audit write rate (docs/audit.md, Cost)."""
    from bench.access_on_off import compare, getter, start_pair
    from bench.common import print_table, write_results
    from tests.support.servers import start_store

    levels = [int(c) for c in args.audit_clients.split(",")]
    root = Path(tempfile.mkdtemp(prefix="bench-dicom-audit-", dir=args.dir))
    store = start_store(root / "store")
    try:
        pair = start_pair(root, store.uri, "bench")
        try:
            await seed_studies(store.uri, "bench", args.studies)
            connector = aiohttp.TCPConnector(limit=max(levels) * 2)
            async with aiohttp.ClientSession(connector=connector) as http:
                paths = await stow_one_each(http, pair.url("off", "/dicomweb/studies"))
                seeded = args.studies

                def by_patient(i: int) -> str:
                    return f"/dicomweb/studies?PatientID=SEED-{(i * 7919) % seeded}"

                def by_date(i: int) -> str:
                    year = 2010 + i % 15
                    return f"/dicomweb/studies?StudyDate={year}0101-{year}0331&limit=20"

                steps = {
                    "qido PatientID": getter(http, pair, by_patient),
                    "qido StudyDate range": getter(http, pair, by_date),
                    "wado instance": getter(
                        http, pair, lambda i: paths[i % len(paths)], {"Accept": WADO_ACCEPT}
                    ),
                }
                compared = await compare(pair, steps, levels, args.requests, args.rounds)
        finally:
            pair.stop()
    finally:
        store.stop()
        shutil.rmtree(root, ignore_errors=True)
    print_table(compared.rows)
    print()
    compared.print()
    extra = {
        **compared.as_json(),
        "studies_indexed": args.studies + AUDIT_STUDIES,
        "requests_per_step": args.requests,
        "load_average": os.getloadavg(),
    }
    print(f"\nwrote {write_results('dicom_ingest-audit', compared.rows, extra)}")


async def stow_one_each(http: aiohttp.ClientSession, url: str) -> list[str]:
    """STOW-RS `AUDIT_STUDIES` studies of one small instance each; their WADO-RS paths."""
    paths = []
    for instance in small_instances(AUDIT_STUDIES, per_study=1):
        dataset = pydicom.dcmread(io.BytesIO(instance), stop_before_pixels=True)
        headers = {"Content-Type": CONTENT_TYPE}
        for attempt in range(5):  # 409: lost a write conflict to the study linker; again
            async with http.post(url, data=multipart([instance]), headers=headers) as answer:
                await answer.read()
                if answer.status == 200:
                    break
                if answer.status != 409 or attempt == 4:
                    raise RuntimeError(f"STOW-RS answered {answer.status}")
            await asyncio.sleep(0.5)
        paths.append(
            f"/dicomweb/studies/{dataset.StudyInstanceUID}/series/{dataset.SeriesInstanceUID}"
            f"/instances/{dataset.SOPInstanceUID}"
        )
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=2000, help="small CT instances")
    parser.add_argument("--large", type=int, default=100, help="large (2 MB) CT instances")
    parser.add_argument("--studies", type=int, default=10000, help="studies indexed for QIDO")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--per-request", type=int, default=10, help="instances per STOW request")
    parser.add_argument("--dir", help="where the temporary stores live (default: system temp)")
    parser.add_argument("--no-orthanc", action="store_true")
    parser.add_argument("--rounds", type=int, default=5, help="alternations between servers")
    parser.add_argument("--store", default=stores.ALL, help=f"comma-separated: {stores.ALL}")
    parser.add_argument(
        "--audit",
        action="store_true",
        help="instead: QIDO-RS and WADO-RS with authorization, consent and audit on and off",
    )
    parser.add_argument("--audit-clients", default="1,16", help="--audit: concurrency levels")
    parser.add_argument("--requests", type=int, default=300, help="--audit: requests per step")
    args = parser.parse_args()
    if args.audit:
        asyncio.run(audit_run(args))
        return
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
