"""One behavioural suite, run against every ObjectStore backend (see the
``store`` fixture in conftest.py), plus a few backend-specific checks and
``open_store`` URL parsing."""

from __future__ import annotations

import hashlib
import os
import random

import pytest

from storage import (
    READ_CHUNK_SIZE,
    FilesystemStore,
    InvalidKey,
    ObjectNotFound,
    ObjectStore,
    S3Store,
    StorageError,
    open_store,
)

from .conftest import drop_bucket, make_s3_store

MiB = 1024 * 1024
# > 16 MiB (the S3 part size) so the S3 backend does a real multipart upload
LARGE_SIZE = 18 * MiB + 12345

INVALID_KEYS = ["../x", "/abs", "a//b", "a/./b", "a\\b", "", "a/../b", "a/", ".hidden",
                "a/.tmp/x", "a b", "a\x00b", "a\nb", "ä", "x" * 1025]


def payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def chunked(data: bytes, sizes=(1, 1000, 65536, MiB + 3, 7 * MiB + 1)):
    """Yield *data* in irregular chunk sizes (cycling through *sizes*)."""
    pos, i = 0, 0
    while pos < len(data):
        n = sizes[i % len(sizes)]
        yield data[pos:pos + n]
        pos += n
        i += 1


def read_all(store: ObjectStore, key: str, start: int = 0, end: int | None = None) -> bytes:
    return b"".join(store.open(key, start, end))


class Boom(Exception):
    pass


def failing_after(data: bytes, fail_at: int, chunk: int = MiB):
    """Yield *data* in chunks, raising Boom once *fail_at* bytes were yielded."""
    pos = 0
    while pos < len(data):
        if pos >= fail_at:
            raise Boom("source failed")
        yield data[pos:pos + chunk]
        pos += chunk
    raise Boom("source failed at end")


def assert_no_temp_files(store: ObjectStore) -> None:
    """No temp file (fs) / no unfinished multipart upload (S3) left behind."""
    if isinstance(store, FilesystemStore):
        tmp_dir = os.path.join(store.root, FilesystemStore.TMP_DIR)
        assert os.listdir(tmp_dir) == []
    elif isinstance(store, S3Store):
        # minio has no public API for this; skip the check if it goes away
        list_uploads = getattr(store.client, "_list_multipart_uploads", None)
        if list_uploads is not None:
            assert list_uploads(store.bucket).uploads == []


# ---------------------------------------------------------------- protocol


def test_implements_protocol(store):
    assert isinstance(store, ObjectStore)


def test_describe(store):
    d = store.describe()
    if isinstance(store, FilesystemStore):
        assert d == f"file://{store.root}" and d.startswith("file:///")
    else:
        assert d == f"s3://{store.bucket}/tenant/objects"


# ------------------------------------------------------------- put / open


def test_small_round_trip(store):
    assert store.put("acct/1.2/3.4/5.6.abcdef0123456789.dcm", [b"hello ", b"world"]) == 11
    assert read_all(store, "acct/1.2/3.4/5.6.abcdef0123456789.dcm") == b"hello world"
    assert store.size("acct/1.2/3.4/5.6.abcdef0123456789.dcm") == 11


def test_empty_object(store):
    assert store.put("empty", []) == 0
    assert store.put("empty2", [b"", b""]) == 0
    assert store.exists("empty") and store.size("empty") == 0
    assert read_all(store, "empty") == b""
    assert read_all(store, "empty2") == b""


def test_bytes_like_chunks(store):
    n = store.put("k", [bytearray(b"ab"), memoryview(b"cd"), b"ef"])
    assert n == 6
    assert read_all(store, "k") == b"abcdef"


def test_large_multichunk_round_trip(store):
    data = payload(LARGE_SIZE)
    assert store.put("big/object.dcm", chunked(data)) == LARGE_SIZE
    assert store.size("big/object.dcm") == LARGE_SIZE
    digest = hashlib.sha256()
    largest = 0
    for chunk in store.open("big/object.dcm"):
        largest = max(largest, len(chunk))
        digest.update(chunk)
    assert digest.hexdigest() == hashlib.sha256(data).hexdigest()
    assert largest <= READ_CHUNK_SIZE  # streamed, ~1 MiB at a time
    # ranges across chunk / part boundaries
    for start, end in [(0, 1), (MiB - 5, 3 * MiB + 7), (16 * MiB - 3, 16 * MiB + 3),
                       (LARGE_SIZE - 10, None), (LARGE_SIZE - 10, LARGE_SIZE)]:
        assert read_all(store, "big/object.dcm", start, end) == data[start:end]


def test_put_consumes_a_generator_lazily(store):
    produced = []

    def gen():
        for i in range(5):
            produced.append(i)
            yield bytes([i]) * 10

    assert store.put("gen", gen()) == 50
    assert produced == [0, 1, 2, 3, 4]
    assert read_all(store, "gen") == b"".join(bytes([i]) * 10 for i in range(5))


# ------------------------------------------------------------------ ranges


@pytest.mark.parametrize(
    "start,end",
    [(0, None), (0, 10), (5, None), (3, 7), (0, 100), (97, 100), (99, None),
     (50, 50), (0, 0), (100, None), (100, 100), (150, None), (150, 200), (90, 1000)],
)
def test_ranges(store, start, end):
    data = payload(100, seed=1)
    store.put("r", [data])
    assert read_all(store, "r", start, end) == data[start:end]


@pytest.mark.parametrize("start,end", [(-1, None), (5, 4), (-3, -1)])
def test_bad_ranges(store, start, end):
    store.put("r", [b"0123456789"])
    with pytest.raises(ValueError):
        store.open("r", start, end)


def test_open_can_be_closed_early(store):
    store.put("r", [payload(3 * MiB)])
    it = store.open("r")
    first = next(it)
    assert len(first) > 0
    it.close()
    assert list(it) == []
    # still readable afterwards (nothing leaked / locked)
    assert len(read_all(store, "r")) == 3 * MiB


# ------------------------------------------- size / exists / delete / missing


def test_missing_object(store):
    with pytest.raises(ObjectNotFound):
        store.open("no/such/key")  # raised at call time, before iterating
    with pytest.raises(ObjectNotFound):
        store.open("no/such/key", 0, 0)
    with pytest.raises(ObjectNotFound):
        store.open("no/such/key", 5, 10)
    with pytest.raises(ObjectNotFound):
        store.size("no/such/key")
    assert store.exists("no/such/key") is False
    assert store.delete("no/such/key") is False
    assert issubclass(ObjectNotFound, StorageError)


def test_prefix_is_not_an_object(store):
    store.put("dir/obj", [b"x"])
    assert store.exists("dir") is False
    with pytest.raises(ObjectNotFound):
        store.size("dir")
    with pytest.raises(ObjectNotFound):
        store.open("dir")
    assert store.delete("dir") is False
    assert store.exists("dir/obj")


def test_delete_is_idempotent(store):
    store.put("a/b/c", [b"data"])
    assert store.exists("a/b/c")
    assert store.delete("a/b/c") is True
    assert store.exists("a/b/c") is False
    assert store.delete("a/b/c") is False
    with pytest.raises(ObjectNotFound):
        store.open("a/b/c")
    assert list(store.iter_keys()) == []
    # the key can be written again
    store.put("a/b/c", [b"again"])
    assert read_all(store, "a/b/c") == b"again"


# --------------------------------------------------------- listing / prefix

KEYS = [
    "acct1/1.2/3.4/5.dcm",
    "acct1/1.2/3.4/6.dcm",
    "acct1/1.3/7.dcm",
    "acct1-x/8.dcm",
    "acct10/9.dcm",
    "acct2/1.2/10.dcm",
    "top",
]


@pytest.fixture
def populated(store):
    for i, key in enumerate(KEYS):
        store.put(key, [f"object {i}".encode()])
    return store


@pytest.mark.parametrize(
    "prefix",
    ["", "acct1/", "acct1", "acct1/1.2/", "acct1/1.2", "acct1/1.", "acct1/1.2/3.4/5",
     "acct2/", "acct3/", "t", "top", "acct1/1.2/3.4/5.dcm"],
)
def test_iter_keys(populated, prefix):
    expected = sorted(k for k in KEYS if k.startswith(prefix))
    assert list(populated.iter_keys(prefix)) == expected  # sorted order too


def test_iter_keys_default_lists_everything(populated):
    assert list(populated.iter_keys()) == sorted(KEYS)


def test_delete_prefix(populated):
    assert populated.delete_prefix("acct1/") == 3
    assert list(populated.iter_keys()) == sorted(k for k in KEYS if not k.startswith("acct1/"))
    assert populated.delete_prefix("acct1/") == 0
    assert populated.delete_prefix("nothing-here/") == 0
    assert populated.delete_prefix("acct") == 3
    assert list(populated.iter_keys()) == ["top"]
    assert read_all(populated, "top") == b"object 6"


def test_delete_prefix_refuses_empty(populated):
    with pytest.raises(InvalidKey):
        populated.delete_prefix("")
    assert len(list(populated.iter_keys())) == len(KEYS)


def test_delete_prefix_many(store):
    for i in range(30):
        store.put(f"acct/{i // 10}/{i}.dcm", [b"x"])
    assert store.delete_prefix("acct/") == 30
    assert list(store.iter_keys()) == []


# ------------------------------------------------------------- invalid keys


@pytest.mark.parametrize("key", INVALID_KEYS)
def test_invalid_keys_rejected_everywhere(store, key):
    calls = [
        lambda: store.put(key, [b"x"]),
        lambda: store.open(key),
        lambda: store.size(key),
        lambda: store.exists(key),
        lambda: store.delete(key),
    ]
    for call in calls:
        with pytest.raises(InvalidKey):
            call()
    assert list(store.iter_keys()) == []
    assert_no_temp_files(store)


@pytest.mark.parametrize("prefix", ["../x", "/abs", "a//b", "a/./b", "a\\b", "a/../", "a//",
                                    ".tmp/", ".tmp"])
def test_invalid_prefixes_rejected(store, prefix):
    with pytest.raises(InvalidKey):
        store.iter_keys(prefix)  # raised at call time
    with pytest.raises(InvalidKey):
        store.delete_prefix(prefix)


def test_invalid_key_is_a_value_error(store):
    with pytest.raises(ValueError):
        store.size("../etc/passwd")


def test_non_bytes_chunk_rejected(store):
    with pytest.raises(TypeError):
        store.put("k", ["not bytes"])
    assert store.exists("k") is False
    assert_no_temp_files(store)


# ---------------------------------------------------- atomicity / failures


@pytest.mark.parametrize("fail_at", [0, MiB, 17 * MiB])
def test_failing_source_leaves_nothing(store, fail_at):
    data = payload(LARGE_SIZE, seed=2)
    with pytest.raises(Boom):
        store.put("acct/x.dcm", failing_after(data, fail_at))
    assert store.exists("acct/x.dcm") is False
    assert list(store.iter_keys()) == []
    assert_no_temp_files(store)


def test_source_os_error_propagates_unchanged(store):
    """An OSError from the caller's iterator (e.g. a dropped client socket) is
    the caller's, not a storage failure: it is not wrapped in StorageError."""
    err = ConnectionResetError("client went away")

    def source():
        yield b"x" * 1000
        raise err

    with pytest.raises(ConnectionResetError) as info:
        store.put("k", source())
    assert info.value is err
    assert not store.exists("k")
    assert_no_temp_files(store)


def test_failing_overwrite_keeps_previous_version(store):
    store.put("acct/x.dcm", [b"version 1"])
    with pytest.raises(Boom):
        store.put("acct/x.dcm", failing_after(payload(3 * MiB), MiB))
    assert read_all(store, "acct/x.dcm") == b"version 1"
    assert list(store.iter_keys()) == ["acct/x.dcm"]
    assert_no_temp_files(store)


def test_overwrite_replaces(store):
    store.put("k", [payload(2 * MiB, seed=3)])
    assert store.put("k", [b"short"]) == 5
    assert store.size("k") == 5
    assert read_all(store, "k") == b"short"
    assert list(store.iter_keys()) == ["k"]
    assert_no_temp_files(store)


def test_readers_never_see_a_partial_object(store):
    """While a put is in progress (the source is paused mid-stream), readers
    see the complete previous version -- and a new key does not exist yet."""
    old = payload(MiB + 17, seed=4)
    new = payload(3 * MiB + 5, seed=5)
    store.put("k", [old])
    observed = []

    def source():
        for chunk in chunked(new, sizes=(MiB,)):
            yield chunk
            observed.append((read_all(store, "k"), store.size("k"), store.exists("new")))

    store.put("k", source())
    assert observed and all(o == (old, len(old), False) for o in observed)
    assert read_all(store, "k") == new

    def source2():
        yield b"part"
        assert store.exists("new") is False
        yield b"ial"

    store.put("new", source2())
    assert read_all(store, "new") == b"partial"


# ------------------------------------------------------ filesystem specifics


def test_fs_layout_and_durable_put(tmp_path):
    store = FilesystemStore(tmp_path / "root")
    store.put("acct/1.2/3.dcm", [b"abc"])
    path = tmp_path / "root" / "acct" / "1.2" / "3.dcm"
    assert path.read_bytes() == b"abc"
    assert os.listdir(tmp_path / "root" / ".tmp") == []
    assert store.describe() == f"file://{tmp_path / 'root'}"


def test_fs_delete_prunes_empty_directories(tmp_path):
    store = FilesystemStore(tmp_path)
    store.put("a/b/c/d", [b"1"])
    store.put("a/x", [b"2"])
    assert store.delete("a/b/c/d")
    assert sorted(os.listdir(tmp_path)) == [".tmp", "a"]
    assert os.listdir(tmp_path / "a") == ["x"]
    assert store.delete_prefix("a/") == 1
    assert os.listdir(tmp_path) == [".tmp"]


def test_fs_ignores_foreign_and_hidden_files(tmp_path):
    store = FilesystemStore(tmp_path)
    store.put("a/ok", [b"1"])
    (tmp_path / "a" / ".partial").write_bytes(b"x")
    (tmp_path / "a" / "has space").write_bytes(b"x")
    (tmp_path / ".tmp" / "leftover.tmp").write_bytes(b"x")
    assert list(store.iter_keys()) == ["a/ok"]


def test_fs_symlink_escape_rejected(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"secret")
    store = FilesystemStore(tmp_path / "root")
    os.symlink(outside, tmp_path / "root" / "evil")
    with pytest.raises(InvalidKey):
        store.open("evil/secret")
    with pytest.raises(InvalidKey):
        store.put("evil/new", [b"x"])
    assert not (outside / "new").exists()


def test_fs_object_vs_prefix_conflict(tmp_path):
    store = FilesystemStore(tmp_path)
    store.put("a", [b"1"])
    with pytest.raises(StorageError):
        store.put("a/b", [b"2"])
    store.put("c/d", [b"3"])
    with pytest.raises(StorageError):
        store.put("c", [b"4"])
    assert sorted(store.iter_keys()) == ["a", "c/d"]
    assert os.listdir(tmp_path / ".tmp") == []


def test_fs_reader_keeps_old_version_across_overwrite(tmp_path):
    store = FilesystemStore(tmp_path)
    old = payload(3 * MiB, seed=6)
    store.put("k", [old])
    it = store.open("k")
    first = next(it)
    store.put("k", [b"new"])
    assert store.delete("k")
    assert first + b"".join(it) == old


def test_batch_puts_are_there_after_the_block(store):
    with store.batch():
        for i in range(5):
            store.put(f"acct/1.2/3.4/{i}.dcm", [payload(1000, seed=i)])
    assert [read_all(store, f"acct/1.2/3.4/{i}.dcm") for i in range(5)] == [payload(1000, seed=i) for i in range(5)]
    with pytest.raises(KeyError):  # the caller's exception propagates; the store stays usable
        with store.batch():
            store.put("acct/1.2/3.4/x.dcm", [b"x"])
            raise KeyError("caller")
    store.put("acct/1.2/3.4/y.dcm", [b"y"])
    assert read_all(store, "acct/1.2/3.4/y.dcm") == b"y"
    assert_no_temp_files(store)


def test_fs_batch_fsyncs_each_directory_once(tmp_path, monkeypatch):
    store = FilesystemStore(tmp_path)
    synced: list[str] = []
    real = store._fsync_dir
    monkeypatch.setattr(store, "_fsync_dir", lambda d: (synced.append(os.path.relpath(d, store.root)), real(d)))
    store.put("acct/1.2/3.4/0.dcm", [b"0"])  # alone: its new directories and its own
    assert synced == [".", "acct", "acct/1.2", "acct/1.2/3.4"]
    synced.clear()
    with store.batch():
        for i in range(1, 21):
            store.put(f"acct/1.2/3.4/{i}.dcm", [b"x"])
        assert synced == []  # nothing yet: the block's end does it
        store.put("acct/1.2/5.6/0.dcm", [b"x"])  # a new series: its parent records it at once, as
        assert synced == ["acct/1.2"]  # another writer finding the directory will not sync the parent
    assert sorted(synced) == ["acct/1.2", "acct/1.2/3.4", "acct/1.2/5.6"]
    with pytest.raises(RuntimeError):
        with store.batch(), store.batch():
            pass


def test_fs_concurrent_put_delete_same_directory(tmp_path):
    """delete() prunes empty directories while put() may be about to rename
    into them; put() must recreate and retry, never fail."""
    import threading

    store = FilesystemStore(tmp_path)
    errors = []

    def worker(n):
        try:
            for i in range(150):
                key = f"acct/1.2/3.4/{n}.{i}.dcm"
                store.put(key, [b"x" * 10])
                assert store.delete(key)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert list(store.iter_keys()) == []
    assert os.listdir(tmp_path / ".tmp") == []


def test_fs_root_created(tmp_path):
    root = tmp_path / "x" / "y"
    FilesystemStore(root)
    assert (root / ".tmp").is_dir()


# -------------------------------------------------------------- S3 specifics


@pytest.mark.s3
def test_s3_prefix_isolation(s3_endpoint):
    bucket = f"dg-iso-{os.urandom(8).hex()}"
    a = make_s3_store(s3_endpoint, bucket=bucket, prefix="tenant-a")
    b = make_s3_store(s3_endpoint, bucket=bucket, prefix="tenant-b/")
    root = make_s3_store(s3_endpoint, bucket=bucket)
    try:
        a.put("k", [b"a"])
        b.put("k", [b"b"])
        assert read_all(a, "k") == b"a" and read_all(b, "k") == b"b"
        assert list(a.iter_keys()) == ["k"]
        assert list(root.iter_keys()) == ["tenant-a/k", "tenant-b/k"]
        assert a.delete_prefix("k") == 1
        assert list(root.iter_keys()) == ["tenant-b/k"]
        assert b.describe() == f"s3://{bucket}/tenant-b"
        assert root.describe() == f"s3://{bucket}"
    finally:
        drop_bucket(root)


@pytest.mark.s3
def test_s3_existing_bucket_reused(s3_endpoint):
    first = make_s3_store(s3_endpoint)
    try:
        first.put("k", [b"v"])
        again = make_s3_store(s3_endpoint, bucket=first.bucket)
        assert read_all(again, "k") == b"v"
    finally:
        drop_bucket(first)


def test_s3_unreachable_endpoint_is_a_storage_error():
    from tests.support.s3 import free_port

    import urllib3

    client = urllib3.PoolManager(timeout=2, retries=urllib3.Retry(total=0))
    with pytest.raises(StorageError):
        S3Store("dg-test", endpoint=f"http://127.0.0.1:{free_port()}",
                access_key="x", secret_key="y", region="us-east-1", http_client=client)


@pytest.mark.parametrize("kwargs", [
    {"bucket": "Bad_Bucket"}, {"bucket": "ab"}, {"bucket": "dg", "prefix": "a/../b"},
    {"bucket": "dg", "endpoint": "ftp://host:1"}, {"bucket": "dg", "endpoint": "http://h:1/path"},
])
def test_s3_bad_configuration(kwargs):
    with pytest.raises(ValueError):
        S3Store(**kwargs, create_bucket=False)


# ---------------------------------------------------------------- open_store


def test_open_store_file_absolute(tmp_path):
    store = open_store(f"file://{tmp_path}/objs")
    assert isinstance(store, FilesystemStore)
    assert store.root == str(tmp_path / "objs")
    assert open_store(store.describe()).root == store.root


def test_open_store_file_relative(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = open_store("file://rel/objs")
    assert isinstance(store, FilesystemStore)
    assert store.root == str(tmp_path / "rel" / "objs")


@pytest.mark.s3
def test_open_store_s3(s3_endpoint):
    bucket = f"dg-open-{os.urandom(8).hex()}"
    kw = dict(s3_endpoint=s3_endpoint["endpoint"], s3_access_key=s3_endpoint["access_key"],
              s3_secret_key=s3_endpoint["secret_key"], s3_region=s3_endpoint["region"])
    store = open_store(f"s3://{bucket}/some/prefix/", **kw)
    try:
        assert isinstance(store, S3Store)
        assert (store.bucket, store.prefix) == (bucket, "some/prefix/")
        assert store.describe() == f"s3://{bucket}/some/prefix"
        bare = open_store(f"s3://{bucket}", **kw)
        assert bare.prefix == "" and bare.describe() == f"s3://{bucket}"
    finally:
        drop_bucket(store)


@pytest.mark.parametrize("url", [
    "", "/abs/path", "relative", "file://", "http://example.com/x", "s3://", "s3:///prefix",
    "s3://Bad_Bucket/x", "s3://bucket/a/../b", "s3://user@bucket/x", "s3://bucket:9000/x",
    "s3://bucket/x?versioning=1", "gs://bucket/x",
])
def test_open_store_rejects(url):
    with pytest.raises(ValueError):
        open_store(url)
