"""The S3-compatible object store, against moto's S3 server over real HTTP."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from pathlib import Path

import boto3
import httpx
import pydicom
import pytest
from moto.server import ThreadedMotoServer

from imaging.objectstore import ObjectStoreError, S3ObjectStore, instance_key
from medbridge.embedded_mongo import EmbeddedMongo, free_port
from tests.support.dicom import renamed
from tests.support.servers import start_server

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
BOUNDARY = "s3-boundary"


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def bucket(s3_endpoint: str, unique: str, monkeypatch: pytest.MonkeyPatch) -> str:
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    name = f"dicom-{unique[:16]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    return name


async def test_s3_store_put_get_stream_delete(s3_endpoint: str, bucket: str) -> None:
    store = S3ObjectStore(bucket, s3_endpoint, prefix="archive")
    data = b"dicom bytes" * 1000
    digest = hashlib.sha256(data).hexdigest()
    key = instance_key("1.2.3", "1.2.3.4", "1.2.3.4.5", digest)
    stored = await store.put(key, data, digest)
    assert (stored.size, stored.sha256) == (len(data), digest)
    assert await store.get(key) == data
    assert b"".join([chunk async for chunk in store.stream(key, 1000)]) == data
    assert await store.exists(key)
    head = boto3.client("s3", endpoint_url=s3_endpoint).head_object(
        Bucket=bucket, Key=f"archive/{key}"
    )
    assert head["Metadata"]["sha256"] == digest
    await store.delete(key)
    assert not await store.exists(key)
    with pytest.raises(ObjectStoreError):
        await store.get(key)
    with pytest.raises(ObjectStoreError):
        await store.put("../escape/key", data)


def test_stow_and_wado_through_s3(
    s3_endpoint: str, bucket: str, tmp_path: Path, store: EmbeddedMongo
) -> None:
    env = {
        **CREDENTIALS,
        "MEDBRIDGE_S3_BUCKET": bucket,
        "MEDBRIDGE_S3_ENDPOINT_URL": s3_endpoint,
    }
    server = start_server(tmp_path / "server", store.uri, env=env)
    try:
        data = renamed("CT_small.dcm")
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
        body = (
            f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
            + data
            + f"\r\n--{BOUNDARY}--\r\n".encode()
        )
        content_type = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
        base = f"{server.base_url}/dicomweb"
        answer = httpx.post(
            f"{base}/studies", content=body, headers={"Content-Type": content_type}, timeout=60
        )
        assert answer.status_code == 200
        listed = boto3.client("s3", endpoint_url=s3_endpoint).list_objects_v2(Bucket=bucket)
        keys = [item["Key"] for item in listed["Contents"]]
        digest = hashlib.sha256(data).hexdigest()
        uids = (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
        assert keys == [instance_key(*uids, digest)]
        back = httpx.get(
            f"{base}/wado",
            params={"requestType": "WADO", "studyUID": ds.StudyInstanceUID,
                    "seriesUID": ds.SeriesInstanceUID, "objectUID": ds.SOPInstanceUID,
                    "contentType": "application/dicom"},
            timeout=60,
        )  # fmt: skip
        assert back.content == data
        assert not (tmp_path / "server" / "objects" / "dicom").exists()
    finally:
        server.stop()
