"""Senders: C-STORE with pynetdicom (threads, one association each) or DCMTK storescu (one process per
association), and STOW-RS with requests (pre-built bodies, or bodies streamed from disk)."""

from __future__ import annotations

import os
import queue
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterable, Sequence

import pydicom
import requests
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from .net import LOCALHOST, SENDER_AET


def split(items: Sequence[Any], k: int) -> list[list[Any]]:
    """Split into k contiguous, nearly equal chunks (keeps series together)."""
    n = len(items)
    out, start = [], 0
    for i in range(k):
        size = n // k + (1 if i < n % k else 0)
        out.append(list(items[start:start + size]))
        start += size
    return [c for c in out if c]


def _run_together(threads: Sequence[threading.Thread], start: threading.Event) -> tuple[float, float]:
    """Start the threads, let them all reach `start.wait()`, release them at once and wait for all.

    Returns (wall_s, client_cpu_s), both from the release to the last thread's end."""
    for t in threads:
        t.start()
    time.sleep(0.05)
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    start.set()
    for t in threads:
        t.join()
    return time.perf_counter() - t0, time.process_time() - cpu0


def make_ae(sop_classes: Iterable[str], ae_title: str = SENDER_AET):
    """A pynetdicom AE proposing, for every SOP class, one context with
    Explicit VR Little Endian and one with Implicit VR Little Endian (separate
    contexts so that the file's own transfer syntax can always be matched
    exactly and files can be streamed without re-encoding)."""
    from pynetdicom import AE

    ae = AE(ae_title=ae_title)
    ae.acse_timeout = 300  # single-process storescp queues concurrent associations
    ae.dimse_timeout = 10  # no single C-STORE here should take that long; bounds a lost-response stall
    ae.network_timeout = 300
    for uid in sop_classes:
        ae.add_requested_context(uid, [ExplicitVRLittleEndian])
        ae.add_requested_context(uid, [ImplicitVRLittleEndian])
    return ae


def _nodelay(assoc) -> None:
    try:
        assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (AttributeError, OSError):
        pass


def _item_name(item: Any) -> str:
    return str(item.SOPInstanceUID) if isinstance(item, pydicom.Dataset) else Path(str(item)).name


MAX_RECONNECTS = 3


def cstore_worker(files: Sequence[Any], sop_classes: Sequence[str], port: int, called_aet: str,
                  lat_out: list[float], err_out: list[str], counts: dict[str, int],
                  lock: threading.Lock, start_evt: threading.Event | None = None) -> None:
    """Send every item of `files` (paths or Datasets) over one association.

    If the association is lost (e.g. no C-STORE-RSP within dimse_timeout),
    the item is counted as failed, a new association is opened and sending
    continues with the next item (at most MAX_RECONNECTS times); the stall is
    part of the wall time and shows up in the error list."""
    ae = make_ae(sop_classes)
    if start_evt is not None:
        start_evt.wait()
    lats: list[float] = []
    errs: list[str] = []
    ok = fail = 0
    perf = time.perf_counter
    idx = 0
    reconnects = 0
    while idx < len(files):
        try:
            assoc = ae.associate(LOCALHOST, port, ae_title=called_aet)
        except Exception as exc:  # noqa: BLE001
            assoc = None
            errs.append(f"associate raised {exc!r}")
        if assoc is None or not assoc.is_established:
            reason = ""
            if assoc is not None:
                reason = "rejected" if assoc.is_rejected else "aborted" if assoc.is_aborted else ""
            errs.append(f"association to {called_aet}@{port} failed {reason}".strip())
            fail += len(files) - idx
            break
        _nodelay(assoc)
        while idx < len(files):
            item = files[idx]
            idx += 1
            t0 = perf()
            try:
                status = assoc.send_c_store(item)
                code = getattr(status, "Status", None)
                err = None if code == 0x0000 else f"status {'none (no response)' if code is None else hex(code)}"
            except Exception as exc:  # noqa: BLE001
                err = repr(exc)
            lats.append(perf() - t0)
            if err is None:
                ok += 1
            else:
                fail += 1
                errs.append(f"{_item_name(item)}: {err} after {lats[-1]:.1f}s")
            if not assoc.is_established:
                break
        if assoc.is_established:
            assoc.release()
        elif idx < len(files):
            reconnects += 1
            if reconnects > MAX_RECONNECTS:
                errs.append(f"association lost {reconnects} times; giving up on {len(files) - idx} items")
                fail += len(files) - idx
                break
            errs.append("association lost; reconnecting and continuing")
    with lock:
        lat_out.extend(lats)
        err_out.extend(errs)
        counts["ok"] += ok
        counts["fail"] += fail


def run_cstore(items: Sequence[Any], sop_classes: Sequence[str], port: int, called_aet: str,
               n_assoc: int = 1) -> tuple[float, list[float], int, int, list[str], float]:
    """Send `items` over `n_assoc` concurrent associations (contiguous split).

    The wall clock covers association setup, all C-STOREs and release.
    Returns (wall_s, per-C-STORE latencies, ok, failures, errors, client_cpu_s)."""
    from pynetdicom import _config

    if items and not isinstance(items[0], pydicom.Dataset):
        _config.STORE_SEND_CHUNKED_DATASET = True  # stream files, no decode/encode
    lats: list[float] = []
    errs: list[str] = []
    counts = {"ok": 0, "fail": 0}
    lock = threading.Lock()
    start = threading.Event()
    threads = [
        threading.Thread(target=cstore_worker, args=(chunk, sop_classes, port, called_aet, lats, errs, counts, lock, start),
                         name=f"cstore-{i}")
        for i, chunk in enumerate(split(items, n_assoc))
    ]
    wall, cpu = _run_together(threads, start)
    return wall, lats, counts["ok"], counts["fail"], errs, cpu


def run_cstore_storescu(files: Sequence[str], port: int, called_aet: str,
                        n_assoc: int = 1) -> tuple[float, list[float], int, int, list[str], float]:
    """Send `files` with DCMTK `storescu`, one process (one association) per chunk.

    The C++ client costs a fraction of the pynetdicom SCU's CPU, so on a
    2-core machine the figures say more about the server. storescu reports
    no per-instance timing: latencies are empty. Failed stores are counted
    from its "Store Failed" / "Store SCU Failed" lines.
    Returns (wall_s, [], ok, failures, errors, client_cpu_s)."""
    import resource

    env = dict(os.environ, TCP_NODELAY="1")
    chunks = [c for c in split(list(files), n_assoc) if c]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    procs = [subprocess.Popen(["storescu", "-aet", SENDER_AET, "-aec", called_aet, LOCALHOST, str(port), *chunk],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for chunk in chunks]
    outputs = [p.communicate()[1] for p in procs]
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    errs: list[str] = []
    fail = 0
    for chunk, proc, err in zip(chunks, procs, outputs):
        failed_lines = [l for l in err.splitlines() if "Store Failed" in l or "Store SCU Failed" in l]
        if proc.returncode != 0 and not failed_lines:
            errs.append(f"storescu exit {proc.returncode}: {err.strip().splitlines()[-1:] or ''}")
            fail += len(chunk)
            continue
        fail += len(failed_lines)
        errs += failed_lines[:5]
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, [], len(files) - fail, fail, errs, cpu


def build_stow_bodies(blobs: Sequence[bytes], batch: int = 50) -> list[tuple[bytes, str, int]]:
    """Pre-build multipart/related bodies: [(body, content_type, n_instances)]."""
    out = []
    for i in range(0, len(blobs), batch):
        chunk = blobs[i:i + batch]
        boundary = f"bench-{uuid.uuid4().hex}"
        parts = []
        for b in chunk:
            parts.append(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode())
            parts.append(b)
            parts.append(b"\r\n")
        parts.append(f"--{boundary}--\r\n".encode())
        ctype = f'multipart/related; type="application/dicom"; boundary={boundary}'
        out.append((b"".join(parts), ctype, len(chunk)))
    return out


def _stow_failed_count(resp: requests.Response) -> int | None:
    """Count FailedSOPSequence (0008,1198) items in a DICOM JSON STOW response."""
    try:
        js = resp.json()
    except ValueError:
        return None
    if isinstance(js, list):
        js = js[0] if js else {}
    if not isinstance(js, dict):
        return None
    failed = js.get("00081198", {}).get("Value") or []
    return len(failed)


def run_stow(bodies: Sequence[tuple[bytes, str, int]], url: str, headers: dict[str, str] | None = None,
             n_threads: int = 1, expect: Sequence[int] = (200,)) -> tuple[float, list[float], list[float], int, int, list[str], float]:
    """POST the pre-built bodies from `n_threads` threads, each with its own
    persistent requests.Session, pulling batches from a shared queue.

    Returns (wall_s, per-POST latencies, per-instance latencies (POST/n), ok,
    failures, errors, client_cpu_s)."""
    q: queue.Queue = queue.Queue()
    for b in bodies:
        q.put(b)
    lock = threading.Lock()
    lats: list[float] = []
    per_inst: list[float] = []
    errs: list[str] = []
    counts = {"ok": 0, "fail": 0}
    start = threading.Event()
    base_headers = {"Accept": "application/dicom+json"}
    base_headers.update(headers or {})

    def worker() -> None:
        s = requests.Session()
        l_lats, l_inst, l_errs = [], [], []
        ok = fail = 0
        start.wait()
        while True:
            try:
                body, ctype, n = q.get_nowait()
            except queue.Empty:
                break
            h = dict(base_headers)
            h["Content-Type"] = ctype
            t0 = time.perf_counter()
            try:
                r = s.post(url, data=body, headers=h, timeout=600)
                dt = time.perf_counter() - t0
            except requests.RequestException as exc:
                dt = time.perf_counter() - t0
                l_lats.append(dt)
                fail += n
                l_errs.append(f"POST raised {exc!r}")
                continue
            l_lats.append(dt)
            l_inst.append(dt / n)
            if r.status_code not in expect:
                failed = _stow_failed_count(r)
                bad = n if failed is None or failed == 0 else failed
                fail += bad
                ok += n - bad
                l_errs.append(f"POST -> HTTP {r.status_code}: {r.text[:300]!r}")
            else:
                failed = _stow_failed_count(r) or 0
                fail += failed
                ok += n - failed
                if failed:
                    l_errs.append(f"POST -> HTTP {r.status_code} with {failed} FailedSOPSequence items: {r.text[:300]!r}")
        s.close()
        with lock:
            lats.extend(l_lats)
            per_inst.extend(l_inst)
            errs.extend(l_errs)
            counts["ok"] += ok
            counts["fail"] += fail

    threads = [threading.Thread(target=worker, name=f"stow-{i}") for i in range(n_threads)]
    wall, cpu = _run_together(threads, start)
    return wall, lats, per_inst, counts["ok"], counts["fail"], errs, cpu


class StreamingMultipartBody:
    """A multipart/related STOW body read from files on disk in 1 MiB chunks.

    Has __iter__ and __len__, so requests sends it with a Content-Length (not
    chunked) while never holding more than one chunk in memory."""

    CHUNK = 1 << 20

    def __init__(self, files: Sequence[Path]):
        self.files = list(files)
        self.boundary = f"bench-{uuid.uuid4().hex}"
        self.content_type = f'multipart/related; type="application/dicom"; boundary={self.boundary}'
        self._head = f"--{self.boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        self._tail = f"--{self.boundary}--\r\n".encode()
        self._len = sum(len(self._head) + p.stat().st_size + 2 for p in self.files) + len(self._tail)

    def __len__(self) -> int:
        return self._len

    def __iter__(self):
        for p in self.files:
            yield self._head
            with open(p, "rb") as fh:
                while True:
                    chunk = fh.read(self.CHUNK)
                    if not chunk:
                        break
                    yield chunk
            yield b"\r\n"
        yield self._tail


def stow_files_streaming(url: str, files: Sequence[Path], headers: dict[str, str] | None = None,
                         batch: int = 5, timeout: float = 1800) -> tuple[float, int, int, list[str]]:
    """STOW files in batches of `batch` per POST, each body streamed from disk.
    Returns (wall_s, ok, failures, errors)."""
    s = requests.Session()
    ok = fail = 0
    errs: list[str] = []
    t0 = time.perf_counter()
    for i in range(0, len(files), batch):
        chunk = list(files[i:i + batch])
        body = StreamingMultipartBody(chunk)
        h = {"Accept": "application/dicom+json", "Content-Type": body.content_type}
        h.update(headers or {})
        try:
            r = s.post(url, data=body, headers=h, timeout=timeout)
        except requests.RequestException as exc:
            fail += len(chunk)
            errs.append(f"POST raised {exc!r}")
            continue
        failed = _stow_failed_count(r) or 0
        if r.status_code != 200:
            bad = failed or len(chunk)
            fail += bad
            ok += len(chunk) - bad
            errs.append(f"POST -> HTTP {r.status_code}: {r.text[:300]!r}")
        else:
            fail += failed
            ok += len(chunk) - failed
    s.close()
    return time.perf_counter() - t0, ok, fail, errs
