"""DICOM header parse (imaging.parse.parse) per instance: the lean path vs pydicom's full read.

CPU time per instance on one core, best of `--rounds`, for the small CT slice of the
ingest benchmark (pydicom's CT_small with new UIDs, 40 KB), the large 2 MB CT frame, and
a few pydicom samples (JPEG, JPEG 2000, RLE, an undefined-length sequence, implicit VR).
"old" is `_parse_reference` (dcmread + checks, today's fallback); "new" is `parse`.

    ./run bench dicom_parse [--count 300] [--rounds 7]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import RESULTS
from bench.dicom_ingest import large_instances, small_instances
from imaging.parse import Limits, ParsedInstance, _parse_reference, _parse_scanned, parse
from tests.support.dicom import sample_bytes

SAMPLES = {
    "jpeg_baseline": "SC_rgb_jpeg_dcmtk.dcm",
    "jpeg2000": "JPEG2000.dcm",
    "rle": "MR_small_RLE.dcm",
    "undefined_length_sq": "liver_1frame.dcm",
    "implicit_vr": "MR_small_implicit.dcm",
}


def cpu_per_instance(function: Callable[[bytes], object], data: list[bytes], rounds: int) -> float:
    """Best per-instance CPU seconds over `rounds` passes over `data`."""
    for instance in data[:10]:
        function(instance)  # warm caches (dictionary lookups, mapping tables)
    best = float("inf")
    for _ in range(rounds):
        started = time.process_time()
        for instance in data:
            function(instance)
        best = min(best, (time.process_time() - started) / len(data))
    return best


def reference(limits: Limits) -> Callable[[bytes], ParsedInstance]:
    def run(data: bytes) -> ParsedInstance:
        with warnings.catch_warnings():  # as parse does
            warnings.simplefilter("ignore")
            return _parse_reference(data, limits, False)

    return run


def case(name: str, data: list[bytes], rounds: int) -> dict[str, Any]:
    limits = Limits()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lean = _parse_scanned(data[0], limits) is not None
    assert parse(data[0], limits) == reference(limits)(data[0]), name
    old = cpu_per_instance(reference(limits), data, rounds)
    new = cpu_per_instance(lambda d: parse(d, limits), data, rounds)
    return {
        "case": name,
        "bytes": len(data[0]),
        "lean_path": lean,
        "old_us": round(old * 1e6, 1),
        "new_us": round(new * 1e6, 1),
        "old_per_s": round(1 / old),
        "new_per_s": round(1 / new),
        "speedup": round(old / new, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=300, help="instances per case")
    parser.add_argument("--rounds", type=int, default=7, help="passes; the best counts")
    args = parser.parse_args()
    cases = [
        ("ct_small_40kb", small_instances(args.count)),
        ("ct_large_2mb", large_instances(max(args.count // 10, 10))),
        *((name, [sample_bytes(file)] * args.count) for name, file in SAMPLES.items()),
    ]
    rows = [case(name, data, args.rounds) for name, data in cases]
    print(f"{'case':<22}{'KB':>7}{'lean':>6}{'old us':>9}{'new us':>9}"
          f"{'old/s':>8}{'new/s':>8}{'x':>7}")  # fmt: skip
    for r in rows:
        print(f"{r['case']:<22}{r['bytes'] // 1024:>7}{'yes' if r['lean_path'] else 'no':>6}"
              f"{r['old_us']:>9}{r['new_us']:>9}{r['old_per_s']:>8}{r['new_per_s']:>8}"
              f"{r['speedup']:>7}")  # fmt: skip
    print("\nCPU time per instance on one core (best pass); per second = 1 / CPU time.")
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "dicom_parse.json"
    document = {
        "benchmark": "dicom_parse",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "load_average": os.getloadavg(),
        "count": args.count,
        "rounds": args.rounds,
        "cases": rows,
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
