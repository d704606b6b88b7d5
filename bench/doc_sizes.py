"""Measure what MedBridge stores per unit of work, for sizing (docs/scale.md).

Starts SecantusDB and `medbridge serve` (gate off), then sends real traffic through the
doors: ADT^A01 + ORM^O01 per patient over MLLP, one CT series by STOW-RS per patient
(pydicom's CT_small with new UIDs), and the FHIR Patient creates of the REST benchmark.
Then it reads every document back and reports, per collection, the documents and their
mean BSON size (`bson.encode`, what MongoDB stores before compression), and the mean
number of index entries per document with their mean key bytes.

    ./run bench doc_sizes [--patients 20] [--instances 20]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import sys
import tempfile
from pathlib import Path
from typing import Any

import bson
import httpx
import pydicom
from pymongo import MongoClient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import stores
from hl7_bridge.client import MllpClient
from tests.integration.test_mllp import adt, orm
from tests.support.dicom import renamed

BOUNDARY = "sizes-boundary"


async def traffic(stack: stores.Stack, patients: int, instances: int) -> int:
    server = stack.servers[0]
    client = await MllpClient.connect("127.0.0.1", server.mllp_port)
    stored_bytes = 0
    try:
        async with httpx.AsyncClient(timeout=120) as http:
            for n in range(patients):
                patient = f"SZ{n:06d}"
                await client.send(adt("A01", f"a{n}", patient).encode(), 60)
                await client.send(orm(f"o{n}", patient, "NW", f"ORD{n}", f"ACC{n}").encode(), 60)
                study, series = None, None
                parts = []
                for _ in range(instances):
                    data = renamed("CT_small.dcm", study=study, series=series, patient_id=patient)
                    if study is None:
                        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
                        study, series = ds.StudyInstanceUID, ds.SeriesInstanceUID
                    parts.append(data)
                    stored_bytes += len(data)
                head = f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
                body = b"".join(head + p + b"\r\n" for p in parts) + f"--{BOUNDARY}--\r\n".encode()
                content_type = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
                response = await http.post(
                    f"{server.base_url}/dicomweb/studies",
                    content=body,
                    headers={"Content-Type": content_type, "Accept": "application/dicom+json"},
                )
                assert response.status_code == 200, response.text[:300]
    finally:
        await client.close()
    return stored_bytes


def sizes(uri: str, database: str) -> list[dict[str, Any]]:
    rows = []
    with MongoClient(uri) as client:
        db = client[database]
        for name in sorted(db.list_collection_names()):
            documents = list(db[name].find())
            if not documents:
                continue
            indexes = db[name].index_information()
            fields = [key[0][0] for key in (info["key"] for info in indexes.values())]
            entries = 0
            key_bytes = 0
            for document in documents:
                for field in fields:
                    value = document.get(field)
                    if value is None and field != "_id":
                        continue
                    entries += 1
                    key_bytes += len(bson.encode({"k": value})) - 7
            total = sum(len(bson.encode(document)) for document in documents)
            rows.append({
                "collection": name,
                "documents": len(documents),
                "mean_bson_bytes": round(total / len(documents)),
                "indexes": len(fields),
                "index_entries_per_doc": round(entries / len(documents), 1),
                "mean_key_bytes": round(key_bytes / max(1, entries), 1),
            })  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--patients", type=int, default=20)
    parser.add_argument("--instances", type=int, default=20, help="CT instances per study")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="medbridge-sizes-"))
    stack = stores.start("isolated-nogate", workdir, database="sizes")
    try:
        stored = asyncio.run(traffic(stack, args.patients, args.instances))
        rows = sizes(stack.uri, "sizes")
    finally:
        stack.stop()
    print(f"{'collection':<26}{'docs':>7}{'bytes/doc':>11}{'indexes':>9}{'entries/doc':>13}"
          f"{'key bytes':>11}")  # fmt: skip
    for row in rows:
        print(f"{row['collection']:<26}{row['documents']:>7}{row['mean_bson_bytes']:>11}"
              f"{row['indexes']:>9}{row['index_entries_per_doc']:>13}"
              f"{row['mean_key_bytes']:>11}")  # fmt: skip
    instances = args.patients * args.instances
    print(f"\nDICOM objects: {instances} instances, {stored / instances:.0f} bytes each (CT_small)")


if __name__ == "__main__":
    main()
