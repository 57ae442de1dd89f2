"""Object store on S3 (AWS, MinIO, Ceph RGW, moto, ...) via the ``minio`` SDK.

Object ``a/b/c.dcm`` is stored as ``<prefix>/a/b/c.dcm`` in the bucket.

Atomicity comes from S3 itself: a single PUT and a CompleteMultipartUpload
both make the object visible all at once, so readers see the previous
version or the complete new one, never a partial object; parts of an
unfinished multipart upload are never visible as an object.  Durability is
the service's: it acknowledges a PUT/Complete only once the data is stored.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any, ContextManager, Iterable, Iterator
from urllib.parse import urlsplit

import urllib3.exceptions
from minio import Minio
from minio.deleteobjects import DeleteObject
from minio.error import MinioException, S3Error

from .base import READ_CHUNK_SIZE, ClosingIterator, InvalidKey, ObjectNotFound, StorageError, check_range
from .keys import check_key, check_prefix

__all__ = ["S3Store", "DEFAULT_PART_SIZE", "validate_bucket_name"]

#: Multipart part size.  ``put`` buffers one part (+1 byte) in memory.
DEFAULT_PART_SIZE = 16 * 1024 * 1024
_MIN_PART_SIZE = 5 * 1024 * 1024

#: errors of the SDK and transport that are reported as StorageError
_TRANSPORT_ERRORS = (MinioException, OSError, urllib3.exceptions.HTTPError)

_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NoSuchObject", "ResourceNotFound"})
_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def validate_bucket_name(bucket: str) -> str:
    """S3 bucket naming rules (the DNS-compatible subset)."""
    if (
        not isinstance(bucket, str)
        or _BUCKET_RE.fullmatch(bucket) is None
        or ".." in bucket
        or re.fullmatch(r"\d+\.\d+\.\d+\.\d+", bucket)
    ):
        raise ValueError(f"{bucket!r} is not a valid S3 bucket name")
    return bucket


class _ChunkReader:
    """Raw file-like ``read(n)`` over an iterator of byte chunks.

    Returns exactly *n* bytes per call except at end of stream, so the SDK's
    part assembly does not degrade to many small concatenations.  Holds at
    most one pending chunk besides what it returns.  Exceptions raised by the
    iterator propagate unchanged out of ``read`` (and thus out of
    ``put_object``, which aborts a started multipart upload first).
    """

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._it = iter(chunks)
        self._pending: memoryview | None = None
        self._eof = False
        self.total = 0
        #: exception raised by the caller's iterator (re-raised unchanged)
        self.error: BaseException | None = None

    def _next_chunk(self) -> memoryview | None:
        while not self._eof:
            try:
                chunk = next(self._it)
                view = memoryview(chunk).cast("B")  # TypeError for non-bytes-like
            except StopIteration:
                self._eof = True
                return None
            except BaseException as exc:
                self.error = exc
                raise
            if view:
                return view
        return None

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            parts = []
            while True:
                b = self.read(_MIN_PART_SIZE)
                if not b:
                    return b"".join(parts)
                parts.append(b)
        out = bytearray()
        while len(out) < n:
            view = self._pending
            if view is None:
                view = self._next_chunk()
                if view is None:
                    break
            take = n - len(out)
            out += view[:take]
            rest = view[take:]
            self._pending = rest if rest else None
        self.total += len(out)
        return bytes(out)

    def readable(self) -> bool:
        return True


class _ResponseChunkIterator(ClosingIterator):
    """Iterator over a ``get_object`` response; always closes and releases
    the connection (at exhaustion, error, ``close()`` or garbage collection)."""

    def __init__(self, response: Any, key: str, chunk_size: int) -> None:
        self._response = response
        self._key = key
        self._stream = response.stream(chunk_size) if response is not None else iter(())

    def __iter__(self) -> "_ResponseChunkIterator":
        return self

    def __next__(self) -> bytes:
        if self._response is None:
            raise StopIteration
        try:
            return next(self._stream)
        except StopIteration:
            self.close()
            raise
        except Exception as exc:
            self.close()
            raise StorageError(f"reading {self._key!r} failed: {exc}") from exc

    def close(self) -> None:
        response, self._response = self._response, None
        if response is not None:
            try:
                response.close()
            finally:
                response.release_conn()



class S3Store:
    """:class:`storage.base.ObjectStore` on an S3 bucket (optionally under a
    key prefix).  The bucket is created if it does not exist."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        endpoint: str = "http://127.0.0.1:9000",
        access_key: str | None = None,
        secret_key: str | None = None,
        region: str | None = None,
        *,
        part_size: int = DEFAULT_PART_SIZE,
        chunk_size: int = READ_CHUNK_SIZE,
        create_bucket: bool = True,
        http_client: Any = None,
    ) -> None:
        self.bucket = validate_bucket_name(bucket)
        prefix = prefix.strip("/")
        if prefix:
            try:
                check_key(prefix)
            except InvalidKey as exc:
                raise ValueError(f"invalid S3 key prefix {prefix!r}: {exc}") from None
            self.prefix = prefix + "/"
        else:
            self.prefix = ""
        if part_size < _MIN_PART_SIZE:
            raise ValueError(f"part_size must be >= {_MIN_PART_SIZE}")
        self.part_size = part_size
        self.chunk_size = chunk_size

        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"S3 endpoint must be http(s)://host[:port], got {endpoint!r}")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError(f"S3 endpoint must not have a path or query: {endpoint!r}")
        self.endpoint = f"{parts.scheme}://{parts.netloc}"
        self.region = region
        self.client = Minio(
            parts.netloc,
            access_key=access_key,
            secret_key=secret_key,
            secure=parts.scheme == "https",
            region=region,
            http_client=http_client,
        )
        if create_bucket:
            self._ensure_bucket()

    def __repr__(self) -> str:
        return f"S3Store({self.describe()!r}, endpoint={self.endpoint!r})"

    def describe(self) -> str:
        return f"s3://{self.bucket}" + (f"/{self.prefix.rstrip('/')}" if self.prefix else "")

    def _ensure_bucket(self) -> None:
        try:
            if self.client.bucket_exists(self.bucket):
                return
            try:
                self.client.make_bucket(self.bucket, location=self.region)
            except S3Error as exc:
                if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise
        except _TRANSPORT_ERRORS as exc:
            raise StorageError(
                f"cannot access/create bucket {self.bucket!r} at {self.endpoint}: {exc}"
            ) from exc

    def _name(self, key: str) -> str:
        return self.prefix + check_key(key)

    # ------------------------------------------------------------------- API

    def batch(self) -> ContextManager[None]:
        """Nothing to share: each completed PUT is already durable (S3 semantics)."""
        return contextlib.nullcontext()

    def put(self, key: str, chunks: Iterable[bytes]) -> int:
        """Stream *chunks* to the object.

        Up to ``part_size`` bytes go as one PUT; larger objects become a
        multipart upload of ``part_size`` parts.  Either way the object
        appears atomically when the PUT / CompleteMultipartUpload succeeds
        (S3 semantics); if the chunk iterator or an upload fails, minio
        aborts the multipart upload and nothing becomes visible (a previous
        object under the key stays).  Memory: one part buffered at a time
        (parallel part uploads are disabled to keep it that way).
        """
        name = self._name(key)
        reader = _ChunkReader(chunks)
        try:
            self.client.put_object(
                self.bucket,
                name,
                data=reader,  # type: ignore[arg-type]
                length=-1,
                part_size=self.part_size,
                num_parallel_uploads=1,
            )
        except BaseException as exc:
            if exc is reader.error or not isinstance(exc, _TRANSPORT_ERRORS):
                raise  # the caller's own exception (or a bug): unchanged
            raise StorageError(f"upload of {key!r} failed: {exc}") from exc
        return reader.total

    def open(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        name = self._name(key)
        check_range(start, end)
        if end is not None and end == start:
            # get_object(length=0) would mean "to the end": just check existence
            self._stat(key, name)
            return _ResponseChunkIterator(None, key, self.chunk_size)
        try:
            response = self.client.get_object(
                self.bucket,
                name,
                offset=start,
                length=0 if end is None else end - start,
            )
        except S3Error as exc:
            if exc.code in _NOT_FOUND_CODES:
                raise ObjectNotFound(key) from None
            if exc.code == "InvalidRange":
                # start at or beyond the end of an existing object
                return _ResponseChunkIterator(None, key, self.chunk_size)
            raise StorageError(f"cannot read {key!r}: {exc}") from exc
        except _TRANSPORT_ERRORS as exc:
            raise StorageError(f"cannot read {key!r}: {exc}") from exc
        return _ResponseChunkIterator(response, key, self.chunk_size)

    def _stat(self, key: str, name: str) -> Any:
        try:
            return self.client.stat_object(self.bucket, name)
        except S3Error as exc:
            if exc.code in _NOT_FOUND_CODES:
                raise ObjectNotFound(key) from None
            raise StorageError(f"cannot stat {key!r}: {exc}") from exc
        except _TRANSPORT_ERRORS as exc:
            raise StorageError(f"cannot stat {key!r}: {exc}") from exc

    def size(self, key: str) -> int:
        return int(self._stat(key, self._name(key)).size)

    def exists(self, key: str) -> bool:
        try:
            self._stat(key, self._name(key))
        except ObjectNotFound:
            return False
        return True

    def delete(self, key: str) -> bool:
        """Remove the object.  S3 DELETE does not say whether something was
        there, so this stats first: the return value is best-effort under
        concurrent writers, the deletion itself is not."""
        name = self._name(key)
        try:
            self._stat(key, name)
        except ObjectNotFound:
            return False
        try:
            self.client.remove_object(self.bucket, name)
        except S3Error as exc:
            if exc.code in _NOT_FOUND_CODES:
                return False
            raise StorageError(f"cannot delete {key!r}: {exc}") from exc
        except _TRANSPORT_ERRORS as exc:
            raise StorageError(f"cannot delete {key!r}: {exc}") from exc
        return True

    def iter_keys(self, prefix: str = "") -> Iterator[str]:
        check_prefix(prefix)
        return self._iter_keys(prefix)

    def _iter_keys(self, prefix: str) -> Iterator[str]:
        strip = len(self.prefix)
        try:
            for obj in self.client.list_objects(
                self.bucket, prefix=self.prefix + prefix, recursive=True
            ):
                name = obj.object_name
                if obj.is_dir or not name or not name.startswith(self.prefix):
                    continue
                key = name[strip:]
                try:
                    check_key(key)
                except InvalidKey:
                    continue  # foreign object that this store could not address
                yield key
        except _TRANSPORT_ERRORS as exc:
            raise StorageError(f"listing {prefix!r} failed: {exc}") from exc

    def delete_prefix(self, prefix: str) -> int:
        if prefix == "":
            raise InvalidKey("refusing to delete_prefix('') (that would delete everything)")
        check_prefix(prefix)
        submitted = 0

        def to_delete() -> Iterator[DeleteObject]:
            nonlocal submitted
            for key in self._iter_keys(prefix):
                submitted += 1
                yield DeleteObject(self.prefix + key)

        try:
            # remove_objects is lazy: the deletes happen while its error
            # iterator is consumed (in batches of 1000).
            errors = [
                f"{err.name}: {err.code} {err.message}"
                for err in self.client.remove_objects(self.bucket, to_delete())
            ]
        except _TRANSPORT_ERRORS as exc:
            raise StorageError(f"delete_prefix({prefix!r}) failed: {exc}") from exc
        if errors:
            raise StorageError(
                f"delete_prefix({prefix!r}): {len(errors)} of {submitted} deletions "
                f"failed: " + "; ".join(errors[:5])
            )
        return submitted
