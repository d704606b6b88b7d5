"""What a page of instance rows costs the embedded store: as neosqlite reads it, with SQLite
removing the fields a find's projection leaves out (medbridge/embedded_store.py
`sql_exclusion`), and with each chunk also chosen by row id before any JSON is read
(`page_by_ids`).

In-process neosqlite (the store under nx-27017), no wire: a study of `--instances` rows
shaped like the DICOM index's (imaging/index.py: `meta` is the instance's DICOM JSON as a
string; here pydicom's CT_small header, 13.6 KB), read as QIDO and C-FIND read them
(imaging/index_query.py `chunked`: `{"meta": 0}`, sorted by `_id`, `--chunks` rows per
request). CPU per page, the three in turn, medians of `--rounds`.

    ./run bench store_projection [--instances 1031] [--chunks 200,100,50,25] [--rounds 5]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import neosqlite
import orjson
import pydicom
from neosqlite.collection import cursor as neo_cursor
from pydicom.data import get_testdata_file

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import median, write_results
from medbridge import embedded_store

STUDY = "1.2.826.0.1.3680043.8.498.1"


def header() -> str:
    dataset = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    del dataset.PixelData
    return orjson.dumps(dataset.to_json_dict()).decode()


def fill(rows: Any, instances: int, meta: str) -> None:
    rows.create_index("st")
    rows.insert_many(
        [
            {"_id": f"{STUDY}.{n:06d}", "st": STUDY, "se": f"{STUDY}.{n % 7}", "InstanceNumber": n,
             "SOPClassUID": "1.2.840.10008.5.1.4.1.1.2", "key": f"ab/cd/{n:060d}",
             "size": 526_000, "lu": 1_765_000_000.0 + n, "meta": meta}
            for n in range(instances)
        ]
    )  # fmt: skip


def page(rows: Any, instances: int, chunk: int) -> float:
    """CPU seconds to read the study's rows in chunks, as `chunked` does."""
    started = time.process_time()
    found = 0
    for skip in range(0, instances, chunk):
        cursor = rows.find({"st": STUDY}, {"meta": 0}).sort([("_id", 1)])
        found += len(list(cursor.skip(skip).limit(chunk)))
    assert found == instances
    return time.process_time() - started


def run(instances: int, chunks: list[int], rounds: int) -> None:
    embedded_store.install_shallow_projection()
    original = neo_cursor.Cursor._get_filtered_documents
    patched = embedded_store.sql_exclusion(original)
    by_ids = embedded_store.page_by_ids
    with tempfile.TemporaryDirectory(prefix="medbridge-bench-projection-") as workdir:
        connection = neosqlite.Connection(str(Path(workdir) / "store.db"))
        rows = connection["dicom_instances"]
        meta = header()
        fill(rows, instances, meta)
        times: dict[str, list[float]] = {}
        for _ in range(rounds):
            for label, function, paging in (
                ("whole", original, by_ids),
                ("removed", patched, lambda cursor: None),
                ("by ids", patched, by_ids),
            ):
                neo_cursor.Cursor._get_filtered_documents = function
                embedded_store.page_by_ids = paging  # type: ignore[assignment]
                for chunk in chunks:
                    times.setdefault(f"{label} {chunk}", []).append(page(rows, instances, chunk))
        neo_cursor.Cursor._get_filtered_documents = original
        embedded_store.page_by_ids = by_ids
        connection.close()
    figures = {name: round(median(values) * 1000, 1) for name, values in times.items()}
    print(f"{instances} rows with a {len(meta)}-byte header, CPU ms per page (median of {rounds}):")
    heads = ("decoded whole", 16), ("removed by SQLite", 20), ("+ page by ids", 16)
    print(f"{'rows per request':>18}" + "".join(f"{head:>{width}}" for head, width in heads))
    for chunk in chunks:
        print(
            f"{chunk:>18}{figures[f'whole {chunk}']:>16}{figures[f'removed {chunk}']:>20}"
            f"{figures[f'by ids {chunk}']:>16}"
        )
    per_round = {name: [round(v * 1000, 1) for v in values] for name, values in times.items()}
    extra = {"instances": instances, "header_bytes": len(meta), "rounds": rounds,
             "cpu_ms_median": figures, "cpu_ms_rounds": per_round}  # fmt: skip
    print(f"wrote {write_results('store_projection', [], extra)}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--instances", type=int, default=1031)
    parser.add_argument("--chunks", default="200,100,50,25", help="rows per request")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    run(args.instances, [int(c) for c in args.chunks.split(",")], args.rounds)


if __name__ == "__main__":
    main()
