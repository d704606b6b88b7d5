"""DIMSE: C-STORE into MedBridge and into Orthanc side by side, and C-FIND latency.

The same small CT instances (pydicom's CT sample with new UIDs) are sent with dcmtk's
`storescu` over one association and over 4 parallel associations, to MedBridge and to
Orthanc (Debian `orthanc`, started here with a temporary config on loopback, default
SQLite index); instances/s and the ratio. Then `--studies` studies are seeded into
MedBridge's index and study-level C-FIND latency is measured with pynetdicom as the SCU
(one association, many queries).

    ./run bench dicom_dimse [--instances 1000] [--studies 10000] [--parallel 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import RESULTS, children_cpu_seconds, cpu_seconds, percentile
from bench.dicom_ingest import ORTHANC, seed_studies, small_instances
from imaging.dimse.sop_classes import StudyRootFind
from medbridge.embedded_mongo import EmbeddedMongo, free_port
from tests.support.servers import start_server


def write_set(root: Path, name: str, count: int) -> list[Path]:
    folder = root / name
    folder.mkdir(parents=True)
    paths = []
    for n, blob in enumerate(small_instances(count)):
        path = folder / f"{n:05}.dcm"
        path.write_bytes(blob)
        paths.append(path)
    return paths


def c_store(
    port: int,
    called: str,
    paths: list[Path],
    parallel: int,
    watched: dict[str, int] | None = None,
) -> dict[str, Any]:
    """storescu over `parallel` associations at once; instances/s and failures, and the
    CPU each of `watched` (name -> pid, with its workers) and storescu spent per
    instance: on a 2-core machine, CPU per instance is what bounds the rate."""
    chunks = [paths[i::parallel] for i in range(parallel)]
    cpu_before = {name: cpu_seconds(pid) for name, pid in (watched or {}).items()}
    peer_before = children_cpu_seconds()
    started = time.perf_counter()
    processes = [
        subprocess.Popen(
            [
                "/usr/bin/storescu",
                "-v",
                "-R",
                "-xe",
                "-nh",
                "-aec",
                called,
                "127.0.0.1",
                str(port),
                *map(str, chunk),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for chunk in chunks
    ]
    outputs = [process.communicate()[0] for process in processes]
    seconds = time.perf_counter() - started
    stored = sum(output.count("Received Store Response (Success)") for output in outputs)
    megabytes = sum(path.stat().st_size for path in paths) / 1e6
    cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in (watched or {}).items()}
    cpu["storescu"] = children_cpu_seconds() - peer_before
    return {
        "cpu_ms_per_instance": {name: round(s * 1000 / len(paths), 2) for name, s in cpu.items()},
        "associations": parallel,
        "instances": len(paths),
        "stored": stored,
        "failures": len(paths) - stored,
        "seconds": round(seconds, 2),
        "instances_per_s": round(len(paths) / seconds, 1),
        "mb_per_s": round(megabytes / seconds, 2),
    }


def stack_alone(paths: list[Path], parallel: int) -> dict[str, Any]:
    """The DICOM stack alone: pynetdicom with MedBridge's association settings (waiting
    threads, quick ACKs, our contexts) answering every C-STORE with success without
    storing it, fed by the same storescu. No archive can answer faster on this stack."""
    from pynetdicom import evt

    from imaging.dimse import quiet
    from imaging.dimse.config import DimseConfig
    from imaging.dimse.service import QuickCopyContexts, _low_latency, build_ae

    ae = build_ae(DimseConfig())
    handlers = [
        (evt.EVT_CONN_OPEN, _low_latency),
        (evt.EVT_CONN_OPEN, quiet.quiet),
        (evt.EVT_CONN_CLOSE, quiet.closed),
        (evt.EVT_C_STORE, lambda event: 0x0000),
    ]
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=handlers)
    assert server is not None
    server.contexts = QuickCopyContexts(server.contexts)
    try:
        return c_store(port, "MEDBRIDGE", paths, parallel, {"stack": os.getpid()})
    finally:
        server.shutdown()


def start_orthanc(root: Path) -> tuple[subprocess.Popen[bytes], int]:
    http_port, dicom_port = free_port(), free_port()
    config = {
        "Name": "bench", "HttpPort": http_port, "DicomPort": dicom_port, "DicomAet": "ORTHANC",
        "StorageDirectory": str(root / "storage"), "IndexDirectory": str(root / "index"),
        "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
        "HttpBindAddress": "127.0.0.1", "DicomServerEnabled": True,
        "DicomCheckCalledAet": False, "DicomAlwaysAllowStore": True, "Plugins": [],
    }  # fmt: skip
    root.mkdir(parents=True, exist_ok=True)
    (root / "orthanc.json").write_text(json.dumps(config))
    log = (root / "orthanc.log").open("wb")
    process = subprocess.Popen([ORTHANC, str(root / "orthanc.json")], stdout=log, stderr=log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            url = f"http://127.0.0.1:{http_port}/system"
            with urllib.request.urlopen(url, timeout=1) as answer:
                if answer.status == 200:
                    return process, dicom_port
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("Orthanc did not start; see " + str(root / "orthanc.log"))


def find_latency(port: int, repeats: int) -> tuple[dict[str, float], dict[str, int]]:
    """Study-level C-FIND p50 per query shape (and its match count), over one association."""
    shapes: dict[str, dict[str, str]] = {
        "PatientID exact": {"PatientID": "SEED-4242"},
        "AccessionNumber": {"AccessionNumber": "ACC777"},
        "StudyDate range": {"StudyDate": "20150101-20150131"},
        "PatientName+ID wildcard": {"PatientName": "Doe^J*", "PatientID": "SEED-423*"},
    }
    ae = AE(ae_title="BENCHFIND")
    ae.add_requested_context(StudyRootFind)
    assoc = ae.associate("127.0.0.1", port, ae_title="MEDBRIDGE")
    assert assoc.is_established, "C-FIND association refused"
    out: dict[str, float] = {}
    matches: dict[str, int] = {}
    try:
        for name, keys in shapes.items():
            latencies = []
            for _ in range(repeats):
                query = Dataset()
                query.QueryRetrieveLevel = "STUDY"
                query.StudyInstanceUID = ""
                query.PatientName = ""
                query.ModalitiesInStudy = ""
                query.NumberOfStudyRelatedInstances = ""
                for keyword, value in keys.items():
                    setattr(query, keyword, value)
                started = time.perf_counter()
                statuses = [int(s.Status) for s, _ in assoc.send_c_find(query, StudyRootFind)]
                latencies.append(time.perf_counter() - started)
                assert statuses[-1] == 0, hex(statuses[-1])
                matches[name] = len(statuses) - 1
            latencies.sort()
            out[name] = round(percentile(latencies, 0.5) * 1000, 2)
    finally:
        assoc.release()
    return out, matches


def run(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="bench-dimse-", dir=args.dir))
    results: dict[str, Any] = {"instances": args.instances, "parallel": args.parallel}
    try:
        sets = {
            "single": write_set(root, "single", args.instances),
            "parallel": write_set(root, "parallel", args.instances),
        }
        store = EmbeddedMongo(root / "store")
        uri = store.start()
        server = start_server(root / "medbridge", uri, database="bench")
        try:
            if not args.find_only:
                port = server.dicom_port
                pids = {"medbridge": server.process.pid, "store": store.process.pid}
                results["medbridge_1"] = c_store(port, "MEDBRIDGE", sets["single"], 1, pids)
                results["medbridge_n"] = c_store(
                    port, "MEDBRIDGE", sets["parallel"], args.parallel, pids
                )
            if not args.find_only:
                results["stack_alone_n"] = stack_alone(sets["parallel"], args.parallel)
            asyncio.run(seed_studies(uri, "bench", args.studies))
            results["find_studies_indexed"] = args.studies + 2 * args.instances // 100
            results["find_p50_ms"], results["find_matches"] = find_latency(
                server.dicom_port, args.repeats
            )
        finally:
            server.stop()
            store.stop()
        if shutil.which(ORTHANC) and not args.no_orthanc and not args.find_only:
            orthanc, port = start_orthanc(root / "orthanc")
            try:
                pids = {"orthanc": orthanc.pid}
                results["orthanc_1"] = c_store(port, "ORTHANC", sets["single"], 1, pids)
                results["orthanc_n"] = c_store(
                    port, "ORTHANC", sets["parallel"], args.parallel, pids
                )
            finally:
                orthanc.terminate()
                orthanc.wait(30)
            for kind in ("1", "n"):
                ours, theirs = results[f"medbridge_{kind}"], results[f"orthanc_{kind}"]
                results[f"ratio_{kind}"] = round(
                    ours["instances_per_s"] / theirs["instances_per_s"], 2
                )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return results


def report(results: dict[str, Any]) -> None:
    print(f"\n{'C-STORE':<16}{'assocs':>8}{'instances':>10}{'inst/s':>10}{'MB/s':>8}"
          f"{'failed':>8}{'vs Orthanc':>12}")  # fmt: skip
    for kind in ("1", "n"):
        for system in ("medbridge", "orthanc"):
            r = results.get(f"{system}_{kind}")
            if r is None:
                continue
            ratio = results.get(f"ratio_{kind}") if system == "medbridge" else None
            print(f"{system:<16}{r['associations']:>8}{r['instances']:>10}"
                  f"{r['instances_per_s']:>10}{r['mb_per_s']:>8}{r['failures']:>8}"
                  f"{(str(ratio) + 'x') if ratio else '':>12}")  # fmt: skip
    alone = results.get("stack_alone_n")
    if alone:
        print(f"{'stack alone':<16}{alone['associations']:>8}{alone['instances']:>10}"
              f"{alone['instances_per_s']:>10}{alone['mb_per_s']:>8}{alone['failures']:>8}"
              "   (pynetdicom + storescu, success without storing)")  # fmt: skip
    print("\nCPU per instance (ms), all processes on this machine's cores:")
    for key in ("medbridge_1", "medbridge_n", "orthanc_1", "orthanc_n", "stack_alone_n"):
        if key in results:
            figures = ", ".join(f"{k} {v}" for k, v in results[key]["cpu_ms_per_instance"].items())
            print(f"  {key:<16}{figures}")
    print(f"\nC-FIND study level, p50 with {results['find_studies_indexed']} studies indexed:")
    for name, value in results["find_p50_ms"].items():
        print(f"  {name:<26}{value:>8} ms  ({results['find_matches'][name]} matches)")
    RESULTS.mkdir(exist_ok=True)
    document = {
        "benchmark": "dicom_dimse",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count()},
        **results,
    }
    path = RESULTS / "dicom_dimse.json"
    path.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\nwrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--instances", type=int, default=1000, help="small CT instances per set")
    parser.add_argument("--parallel", type=int, default=4, help="parallel associations")
    parser.add_argument("--studies", type=int, default=10000, help="studies seeded for C-FIND")
    parser.add_argument("--repeats", type=int, default=200, help="C-FIND queries per shape")
    parser.add_argument("--dir", help="where the temporary stores live (default: system temp)")
    parser.add_argument("--no-orthanc", action="store_true")
    parser.add_argument("--find-only", action="store_true", help="only the C-FIND part")
    report(run(parser.parse_args()))


if __name__ == "__main__":
    main()
