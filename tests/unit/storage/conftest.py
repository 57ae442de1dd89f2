from __future__ import annotations

import uuid

import pytest

from storage import FilesystemStore, S3Store
from tests.support.s3 import moto_s3_server


@pytest.fixture(scope="session")
def s3_endpoint():
    """``{"endpoint", "access_key", "secret_key", "region"}`` of a moto server
    (or of ``DICOMGATE_TEST_S3_ENDPOINT``), shared by the whole session."""
    with moto_s3_server() as info:
        yield info


def unique_bucket() -> str:
    return f"dg-test-{uuid.uuid4().hex[:20]}"


def make_s3_store(s3_endpoint: dict, **kwargs) -> S3Store:
    kwargs.setdefault("bucket", unique_bucket())
    return S3Store(
        endpoint=s3_endpoint["endpoint"],
        access_key=s3_endpoint["access_key"],
        secret_key=s3_endpoint["secret_key"],
        region=s3_endpoint["region"],
        **kwargs,
    )


def drop_bucket(store: S3Store) -> None:
    """Best-effort removal of a test bucket (keeps moto's memory in check)."""
    from minio.deleteobjects import DeleteObject

    client = store.client
    try:
        names = [o.object_name for o in client.list_objects(store.bucket, recursive=True)]
        for _ in client.remove_objects(store.bucket, (DeleteObject(n) for n in names)):
            pass
        client.remove_bucket(store.bucket)
    except Exception:
        pass


@pytest.fixture(params=["file", pytest.param("s3", marks=pytest.mark.s3)])
def store(request, tmp_path):
    """A fresh, empty store of each backend.  The S3 one lives under a key
    prefix so that prefix handling is exercised by every test."""
    if request.param == "file":
        yield FilesystemStore(tmp_path / "objects")
    else:
        s3_endpoint = request.getfixturevalue("s3_endpoint")
        s3 = make_s3_store(s3_endpoint, prefix="tenant/objects")
        try:
            yield s3
        finally:
            drop_bucket(s3)
