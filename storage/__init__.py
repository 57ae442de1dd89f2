"""Object storage for dicomgate: a small streaming key -> bytes store with a
filesystem and an S3 backend.  Imports nothing from the rest of the project.

    store = open_store("file:///srv/dicomgate/objects")
    store = open_store("s3://bucket/prefix", s3_endpoint="https://s3.example:9000",
                       s3_access_key=..., s3_secret_key=...)
"""

from __future__ import annotations

from urllib.parse import urlsplit

from .base import READ_CHUNK_SIZE, InvalidKey, ObjectNotFound, ObjectStore, StorageError
from .filesystem import FilesystemStore
from .keys import (
    account_prefix,
    check_key,
    check_prefix,
    instance_key,
    is_safe_segment,
    study_prefix,
    validate_account_id,
    validate_segment,
)
from .s3 import S3Store

__all__ = [
    "READ_CHUNK_SIZE",
    "StorageError",
    "ObjectNotFound",
    "InvalidKey",
    "ObjectStore",
    "FilesystemStore",
    "S3Store",
    "open_store",
    "is_safe_segment",
    "validate_segment",
    "validate_account_id",
    "instance_key",
    "account_prefix",
    "study_prefix",
    "check_key",
    "check_prefix",
]


def open_store(
    url: str,
    *,
    s3_endpoint: str | None = None,
    s3_access_key: str | None = None,
    s3_secret_key: str | None = None,
    s3_region: str | None = None,
) -> ObjectStore:
    """Open the store named by *url*.

    * ``file:///abs/path`` or ``file://relative/path`` -- everything after
      ``file://`` is taken literally as a path (no host, no %-decoding).
    * ``s3://BUCKET`` or ``s3://BUCKET/PREFIX`` -- on *s3_endpoint*
      (default ``http://127.0.0.1:9000``) with the given credentials.

    Anything else raises ``ValueError``.
    """
    if not isinstance(url, str) or not url:
        raise ValueError("storage URL must be a non-empty string")
    if url.startswith("file://"):
        path = url[len("file://"):]
        if not path:
            raise ValueError(f"storage URL {url!r} has no path (use file:///abs/path)")
        return FilesystemStore(path)
    if url.startswith("s3://"):
        parts = urlsplit(url)
        if parts.query or parts.fragment or "@" in parts.netloc or ":" in parts.netloc:
            raise ValueError(
                f"storage URL {url!r} must be s3://BUCKET[/PREFIX] "
                "(endpoint and credentials are configured separately)"
            )
        bucket = parts.netloc
        if not bucket:
            raise ValueError(f"storage URL {url!r} has no bucket (use s3://BUCKET[/PREFIX])")
        kwargs = {}
        if s3_endpoint is not None:
            kwargs["endpoint"] = s3_endpoint
        return S3Store(
            bucket,
            prefix=parts.path.strip("/"),
            access_key=s3_access_key,
            secret_key=s3_secret_key,
            region=s3_region,
            **kwargs,
        )
    raise ValueError(
        f"unsupported storage URL {url!r}: expected file:///abs/path, "
        "file://relative/path or s3://BUCKET[/PREFIX]"
    )
