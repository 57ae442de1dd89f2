"""Shared helpers for the dicomgate benchmarks (ingest now, retrieve later).

Everything here talks to 127.0.0.1 only.  Nothing in this module imports the
dicomgate packages: the gateway is driven purely through its console script
(``dicomgate serve`` / ``account`` / ``provider`` / ``link``) so that the
benchmark measures the installed program and keeps working while the gateway
is still being written.
"""

from __future__ import annotations

import json
import os
import platform
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import psutil
import pydicom
import requests
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)

LOCALHOST = "127.0.0.1"
SENDER_AET = "BENCHPACS"
MB = 1_000_000  # MB/s figures are decimal megabytes

# --------------------------------------------------------------------------
# small utilities
# --------------------------------------------------------------------------


def free_port() -> int:
    """Return a TCP port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOCALHOST, 0))
        return s.getsockname()[1]


def wait_tcp(port: int, timeout: float = 30.0, proc: subprocess.Popen | None = None,
             host: str = LOCALHOST) -> None:
    """Wait until something accepts TCP connections on host:port."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with code {proc.returncode} before port {port} opened")
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError as exc:
            last = exc
            time.sleep(0.1)
    raise TimeoutError(f"port {host}:{port} not accepting after {timeout}s ({last})")


def wait_http(url: str, timeout: float = 30.0, proc: subprocess.Popen | None = None,
              expect: int = 200) -> None:
    """Wait until GET url answers with status `expect`."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with code {proc.returncode} before {url} answered")
        try:
            r = requests.get(url, timeout=2.0)
            if r.status_code == expect:
                return
            last = f"HTTP {r.status_code}"
        except requests.RequestException as exc:
            last = exc
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer {expect} within {timeout}s (last: {last})")


def percentile(values: Sequence[float], pct: float) -> float | None:
    """Linear-interpolated percentile (pct in 0..100); None for no data."""
    if not values:
        return None
    xs = sorted(values)
    if len(xs) == 1:
        return float(xs[0])
    k = (len(xs) - 1) * (pct / 100.0)
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return float(xs[lo] + (xs[hi] - xs[lo]) * (k - lo))


def tail(path: Path, n: int = 30) -> str:
    try:
        lines = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(lines[-n:])


def machine_info() -> dict[str, Any]:
    import pynetdicom

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "nproc": os.cpu_count(),
        "cpu_model": cpu,
        "mem_total_gb": round(psutil.virtual_memory().total / 1e9, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "pynetdicom": pynetdicom.__version__,
        "pydicom": pydicom.__version__,
        "requests": requests.__version__,
    }
    for name, cmd in (("storescp", ["storescp", "--version"]), ("orthanc", ["Orthanc", "--version"])):
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout
            info[name] = out.strip().splitlines()[0] if out.strip() else "?"
        except (OSError, subprocess.SubprocessError):
            info[name] = "not installed"
    return info


# --------------------------------------------------------------------------
# RSS / CPU sampling of a server process tree
# --------------------------------------------------------------------------


class TreeSampler:
    """Sample RSS (sum over the process and all its descendants) every
    `interval` seconds in a background thread; keep the peak.

    Also records the CPU seconds (user+sys) the tree consumed between start()
    and stop() (best effort: children that exited in between are only counted
    while they were seen alive)."""

    def __init__(self, pid: int, interval: float = 0.1):
        self.pid = pid
        self.interval = interval
        self.peak_rss = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._cpu: dict[int, float] = {}
        self._cpu0: dict[int, float] = {}

    def _procs(self) -> list[psutil.Process]:
        try:
            root = psutil.Process(self.pid)
            return [root] + root.children(recursive=True)
        except psutil.Error:
            return []

    def _sample(self) -> None:
        total = 0
        for p in self._procs():
            try:
                with p.oneshot():
                    total += p.memory_info().rss
                    t = p.cpu_times()
                    self._cpu[p.pid] = t.user + t.system
            except psutil.Error:
                pass
        self.samples += 1
        if total > self.peak_rss:
            self.peak_rss = total

    def start(self) -> "TreeSampler":
        for p in self._procs():
            try:
                t = p.cpu_times()
                self._cpu0[p.pid] = t.user + t.system
            except psutil.Error:
                pass
        self._sample()

        def run() -> None:
            while not self._stop.wait(self.interval):
                self._sample()

        self._thread = threading.Thread(target=run, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
        self._sample()

    @property
    def cpu_seconds(self) -> float:
        return sum(v - self._cpu0.get(pid, 0.0) for pid, v in self._cpu.items())


# --------------------------------------------------------------------------
# test data generation
# --------------------------------------------------------------------------


def _testdata(name: str) -> str:
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name)
    if path is None:
        raise FileNotFoundError(f"pydicom test file {name} not found")
    return str(path)


def _restamp(ds: pydicom.Dataset, study: str, series: str, series_no: int, inst_no: int) -> None:
    sop = generate_uid()
    ds.SOPInstanceUID = sop
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    ds.SeriesNumber = series_no
    ds.InstanceNumber = inst_no


def _save(ds: pydicom.Dataset, path: Path) -> None:
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)


@dataclass
class DataSet:
    """A generated set of DICOM files on disk (plus bookkeeping)."""

    name: str
    files: list[Path]
    total_bytes: int
    sop_classes: list[str]
    studies: int
    series: int

    def preload(self) -> list[bytes]:
        """Read every file (warms the page cache, returns the raw bytes)."""
        return [p.read_bytes() for p in self.files]


def generate_small(outdir: Path, n: int, per_series: int = 100, series_per_study: int = 10) -> DataSet:
    """N small instances cloned from pydicom's CT_small.dcm / MR_small.dcm.

    Series alternate between the CT and MR template; ~`per_series` instances
    per series and `series_per_study` series per study; every instance gets a
    fresh SOP Instance UID."""
    outdir.mkdir(parents=True, exist_ok=True)
    templates = [pydicom.dcmread(_testdata("CT_small.dcm")), pydicom.dcmread(_testdata("MR_small.dcm"))]
    for t in templates:
        t.PatientID = "BENCH-SMALL"
        t.PatientName = "Bench^Small"
    files: list[Path] = []
    total = 0
    study = series = None
    n_series = n_studies = 0
    for i in range(n):
        if i % per_series == 0:
            if n_series % series_per_study == 0:
                study = generate_uid()
                n_studies += 1
            series = generate_uid()
            n_series += 1
        ds = templates[(n_series - 1) % 2]
        _restamp(ds, study, series, n_series, i % per_series + 1)
        p = outdir / f"small_{i:06d}.dcm"
        _save(ds, p)
        total += p.stat().st_size
        files.append(p)
    return DataSet("small", files, total, sorted({str(t.SOPClassUID) for t in templates}), n_studies, n_series)


def generate_ct512(outdir: Path, n: int, per_series: int = 100, series_per_study: int = 10) -> DataSet:
    """N CT instances, 512x512 16-bit, explicit VR LE, made by upsampling
    CT_small's 128x128 pixel array (nearest neighbour, x4) with numpy."""
    outdir.mkdir(parents=True, exist_ok=True)
    ds = pydicom.dcmread(_testdata("CT_small.dcm"))
    arr = ds.pixel_array
    big = np.repeat(np.repeat(arr, 512 // arr.shape[0], axis=0), 512 // arr.shape[1], axis=1)
    big = np.ascontiguousarray(big[:512, :512].astype(arr.dtype))
    ds.Rows, ds.Columns = big.shape
    ds.PixelData = big.tobytes()
    if "PixelSpacing" in ds:
        ds.PixelSpacing = [float(x) / 4 for x in ds.PixelSpacing]
    ds.PatientID = "BENCH-CT"
    ds.PatientName = "Bench^CT"
    files: list[Path] = []
    total = 0
    study = series = None
    n_series = n_studies = 0
    for i in range(n):
        if i % per_series == 0:
            if n_series % series_per_study == 0:
                study = generate_uid()
                n_studies += 1
            series = generate_uid()
            n_series += 1
        _restamp(ds, study, series, n_series, i % per_series + 1)
        ds.ImagePositionPatient = [0.0, 0.0, float(i % per_series)]
        p = outdir / f"ct512_{i:06d}.dcm"
        _save(ds, p)
        total += p.stat().st_size
        files.append(p)
    return DataSet("ct512", files, total, [str(ds.SOPClassUID)], n_studies, n_series)


def split(items: Sequence[Any], k: int) -> list[list[Any]]:
    """Split into k contiguous, nearly equal chunks (keeps series together)."""
    n = len(items)
    out, start = [], 0
    for i in range(k):
        size = n // k + (1 if i < n % k else 0)
        out.append(list(items[start:start + size]))
        start += size
    return [c for c in out if c]


# --------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------


@dataclass
class RunResult:
    workload: str
    target: str
    instances: int = 0
    ok: int = 0
    failures: int = 0
    bytes: int = 0
    wall_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    latency_unit: str = "C-STORE"  # or "POST(50)"
    per_instance_latencies_s: list[float] = field(default_factory=list)
    peak_rss_bytes: int = 0
    server_cpu_s: float = 0.0
    client_cpu_s: float = 0.0
    errors: list[str] = field(default_factory=list)
    verified: str = ""  # server-side count check, if the target supports one
    skipped: str = ""

    @property
    def inst_per_s(self) -> float | None:
        return self.ok / self.wall_s if self.wall_s > 0 and not self.skipped else None

    @property
    def mb_per_s(self) -> float | None:
        return self.bytes / MB / self.wall_s if self.wall_s > 0 and not self.skipped else None

    def as_dict(self) -> dict[str, Any]:
        def ms(x: float | None) -> float | None:
            return None if x is None else round(x * 1000, 2)

        return {
            "workload": self.workload,
            "target": self.target,
            "skipped": self.skipped or None,
            "instances": self.instances,
            "ok": self.ok,
            "failures": self.failures,
            "bytes": self.bytes,
            "wall_s": round(self.wall_s, 3),
            "inst_per_s": None if self.inst_per_s is None else round(self.inst_per_s, 1),
            "mb_per_s": None if self.mb_per_s is None else round(self.mb_per_s, 2),
            "latency_unit": self.latency_unit,
            "p50_ms": ms(percentile(self.latencies_s, 50)),
            "p95_ms": ms(percentile(self.latencies_s, 95)),
            "per_instance_p50_ms": ms(percentile(self.per_instance_latencies_s, 50)),
            "per_instance_p95_ms": ms(percentile(self.per_instance_latencies_s, 95)),
            "peak_rss_mb": round(self.peak_rss_bytes / 2**20, 1),
            "server_cpu_s": round(self.server_cpu_s, 2),
            "client_cpu_s": round(self.client_cpu_s, 2),
            "verified": self.verified or None,
            "errors": self.errors[:20],
        }


# --------------------------------------------------------------------------
# C-STORE sender (pynetdicom)
# --------------------------------------------------------------------------


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
    for t in threads:
        t.start()
    time.sleep(0.05)
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    start.set()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return wall, lats, counts["ok"], counts["fail"], errs, time.process_time() - cpu0


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


# --------------------------------------------------------------------------
# STOW-RS sender (requests)
# --------------------------------------------------------------------------


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
    for t in threads:
        t.start()
    time.sleep(0.05)
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    start.set()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return wall, lats, per_inst, counts["ok"], counts["fail"], errs, time.process_time() - cpu0


# --------------------------------------------------------------------------
# servers
# --------------------------------------------------------------------------


def _peer_env() -> dict[str, str]:
    env = dict(os.environ)
    env["TCP_NODELAY"] = "1"
    return env


class Server:
    """A server subprocess with a working directory and a log file."""

    name = "server"

    def __init__(self, workdir: Path):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen | None = None
        self.log_path = self.workdir / "server.log"
        self._log = None
        self.dicom_port = 0
        self.http_port = 0
        self.called_aet = ""

    def _spawn(self, cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> None:
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env,
                                     cwd=str(cwd or self.workdir), start_new_session=True)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)  # our own session only
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=5)
        if self._log:
            self._log.close()
            self._log = None

    def stored_count(self) -> int | None:
        return None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


class StoreSCP(Server):
    """DCMTK storescp, single-process (default), writes into <workdir>/store."""

    name = "storescp"

    def start(self) -> "StoreSCP":
        self.store = self.workdir / "store"
        self.store.mkdir(exist_ok=True)
        self.dicom_port = free_port()
        self.called_aet = "STORESCP"
        exe = shutil.which("storescp")
        if not exe:
            raise RuntimeError("storescp not found on PATH")
        self._spawn([exe, "-od", str(self.store), "-aet", self.called_aet, str(self.dicom_port)], env=_peer_env())
        wait_tcp(self.dicom_port, 20, self.proc)
        return self

    def stored_count(self) -> int | None:
        return sum(1 for p in self.store.iterdir() if p.is_file())


def orthanc_plugin_path() -> str:
    for cand in ("/usr/share/orthanc/plugins/libOrthancDicomWeb.so",):
        if os.path.exists(cand):
            return cand
    try:
        out = subprocess.run(["dpkg", "-L", "orthanc-dicomweb"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if "libOrthancDicomWeb.so" in line:
                return line.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    raise RuntimeError("libOrthancDicomWeb.so not found (is orthanc-dicomweb installed?)")


class OrthancServer(Server):
    """Orthanc with only the DICOMweb plugin loaded, SQLite index, uncompressed
    storage with SyncStorageArea=true (fsync of every stored file)."""

    name = "orthanc"
    SETTINGS = {"StorageCompression": False, "SyncStorageArea": True}

    def start(self) -> "OrthancServer":
        exe = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
        self.dicom_port = free_port()
        self.http_port = free_port()
        self.called_aet = "ORTHANC"
        cfg = {
            "Name": "bench",
            "StorageDirectory": str(self.workdir / "storage"),
            "IndexDirectory": str(self.workdir / "index"),
            "DicomAet": self.called_aet,
            "DicomPort": self.dicom_port,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomCheckCalledAet": False,
            "Plugins": [orthanc_plugin_path()],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
            **self.SETTINGS,
        }
        cfg_path = self.workdir / "orthanc.json"
        cfg_path.write_text(json.dumps(cfg, indent=2))
        self._spawn([exe, str(cfg_path)], env=_peer_env())
        self.base = f"http://{LOCALHOST}:{self.http_port}"
        try:
            wait_http(self.base + "/system", 60, self.proc)
            wait_tcp(self.dicom_port, 30, self.proc)
        except Exception:
            self.stop()
            raise RuntimeError(f"Orthanc failed to start; log tail:\n{tail(self.log_path)}")
        return self

    @property
    def stow_url(self) -> str:
        return self.base + "/dicom-web/studies"

    def stored_count(self) -> int | None:
        try:
            return int(requests.get(self.base + "/statistics", timeout=30).json()["CountInstances"])
        except Exception:  # noqa: BLE001
            return None


class DicomgateUnavailable(RuntimeError):
    pass


def dicomgate_exe(venv_bin: Path | None = None) -> str:
    cand = []
    if venv_bin:
        cand.append(Path(venv_bin) / "dicomgate")
    cand.append(Path(sys.executable).parent / "dicomgate")
    for c in cand:
        if c.exists():
            return str(c)
    found = shutil.which("dicomgate")
    if found:
        return found
    raise DicomgateUnavailable("no 'dicomgate' console script (run `.venv/bin/pip install -e .`)")


def dicomgate_check(exe: str) -> None:
    """Raise DicomgateUnavailable unless `dicomgate --help` and
    `dicomgate serve --help` work."""
    for args in (["--help"], ["serve", "--help"]):
        try:
            r = subprocess.run([exe, *args], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.SubprocessError) as exc:
            raise DicomgateUnavailable(f"`dicomgate {' '.join(args)}` failed: {exc}") from exc
        if r.returncode != 0:
            msg = (r.stderr or r.stdout).strip().splitlines()
            raise DicomgateUnavailable(f"`dicomgate {' '.join(args)}` exit {r.returncode}: {msg[-1] if msg else ''}")


class DicomgateServer(Server):
    """`dicomgate serve` plus the consent set-up (account, provider, link)
    through the CLI, all on the same --data-dir (and --database-url)."""

    name = "dicomgate"

    def __init__(self, workdir: Path, exe: str, database_url: str | None = None,
                 email: str = "bench@example.org", password: str = "bench-password-123"):
        super().__init__(workdir)
        self.exe = exe
        self.database_url = database_url
        self.data_dir = self.workdir / "data"
        self.email = email
        self.password = password
        self.account: dict[str, Any] = {}
        self.provider: dict[str, Any] = {}
        self.link: dict[str, Any] = {}

    def _common(self) -> list[str]:
        args = ["--data-dir", str(self.data_dir)]
        if self.database_url:
            args += ["--database-url", self.database_url]
        return args

    def cli_json(self, *args: str, stdin: str | None = None) -> dict[str, Any]:
        cmd = [self.exe, *args, "--json", *self._common()]
        r = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd[1:])} -> exit {r.returncode}: {(r.stderr or r.stdout).strip()[-800:]}")
        out = r.stdout.strip()
        try:
            return json.loads(out)
        except ValueError:
            # tolerate log lines before the JSON document
            for i in range(len(out)):
                if out[i] in "{[":
                    try:
                        return json.loads(out[i:])
                    except ValueError:
                        continue
            raise RuntimeError(f"{' '.join(cmd[1:])}: no JSON in output: {out[-500:]!r}")

    def start(self) -> "DicomgateServer":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.dicom_port = free_port()
        self.http_port = free_port()
        self.base = f"http://{LOCALHOST}:{self.http_port}"
        cmd = [self.exe, "serve", *self._common(), "--dicom-port", str(self.dicom_port),
               "--http-port", str(self.http_port)]
        self._spawn(cmd, env=dict(os.environ))
        try:
            wait_http(self.base + "/healthz", 60, self.proc)
            wait_tcp(self.dicom_port, 30, self.proc)
        except Exception as exc:
            self.stop()
            raise RuntimeError(f"dicomgate serve failed to start ({exc}); log tail:\n{tail(self.log_path)}")
        try:
            self.account = self.cli_json("account", "create", "--email", self.email, "--password-stdin",
                                         stdin=self.password + "\n")
            self.provider = self.cli_json("provider", "add", "--name", "Bench", "--ae-title", SENDER_AET,
                                          "--network", "127.0.0.0/8")
            self.link = self.cli_json("link", "create", "--account", str(self.account["id"]),
                                      "--provider", str(self.provider["id"]), "--push", "--pull")
        except Exception:
            self.stop()
            raise
        self.called_aet = str(self.account["ae_title"])
        return self

    def stored_count(self) -> int | None:
        """Objects in the default file store (None with another object store)."""
        root = self.data_dir / "objects"
        if not root.is_dir():
            return None
        return sum(1 for p in root.rglob("*") if p.is_file() and ".tmp" not in p.relative_to(root).parts)

    @property
    def stow_url(self) -> str:
        return f"{self.base}/accounts/{self.account['id']}/dicomweb/studies"

    @property
    def stow_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.provider['token']}"}


# --------------------------------------------------------------------------
# additions for benchmarks/retrieve.py (WADO-RS / QIDO-RS)
# --------------------------------------------------------------------------


def loadavg_str() -> str:
    """'load 0.52 0.61 0.70' (1, 5, 15 min) for before/after lines."""
    a, b, c = os.getloadavg()
    return f"load {a:.2f} {b:.2f} {c:.2f}"


MF_GRAYSCALE_WORD_SC = "1.2.840.10008.5.1.4.1.1.7.3"  # Multi-frame Grayscale Word Secondary Capture


def generate_multiframe(outdir: Path, n: int, frames: int = 100, size: int = 512,
                        per_series: int = 10) -> DataSet:
    """N multi-frame 16-bit instances (size x size x frames, ~52 MB each at the
    defaults) in ONE study, explicit VR LE, written one at a time (the client
    never holds more than one instance). Frames are CT_small's pixels
    upsampled to size x size, each frame offset by its index."""
    outdir.mkdir(parents=True, exist_ok=True)
    ds = pydicom.dcmread(_testdata("CT_small.dcm"))
    arr = ds.pixel_array
    f = max(1, size // arr.shape[0])
    big = np.repeat(np.repeat(arr, f, axis=0), f, axis=1)[:size, :size].astype(np.uint16)
    stack = np.empty((frames, size, size), dtype=np.uint16)
    for i in range(frames):
        stack[i] = big + np.uint16(i)
    ds.SOPClassUID = MF_GRAYSCALE_WORD_SC
    ds.file_meta.MediaStorageSOPClassUID = MF_GRAYSCALE_WORD_SC
    ds.Rows = ds.Columns = size
    ds.NumberOfFrames = frames
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = 0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = stack.tobytes()
    del stack
    ds.PatientID = "BENCH-MF"
    ds.PatientName = "Bench^Multiframe"
    study = generate_uid()
    files: list[Path] = []
    total = 0
    series = None
    n_series = 0
    for i in range(n):
        if i % per_series == 0:
            series = generate_uid()
            n_series += 1
        _restamp(ds, study, series, n_series, i % per_series + 1)
        p = outdir / f"mf_{i:05d}.dcm"
        _save(ds, p)
        total += p.stat().st_size
        files.append(p)
    return DataSet("multiframe", files, total, [MF_GRAYSCALE_WORD_SC], 1, n_series)


def study_uid_of(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).StudyInstanceUID)


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


@dataclass
class StreamedGet:
    status: int
    ttfb_s: float  # request sent -> status line and headers received
    total_s: float  # request sent -> last body byte
    bytes: int
    parts: int  # multipart parts counted by their delimiters (-1 if not multipart)
    error: str = ""


def timed_get_stream(session: requests.Session, url: str, headers: dict[str, str],
                     chunk: int = 1 << 20, timeout: float = 1800) -> StreamedGet:
    """GET with stream=True, reading the body with iter_content(chunk); counts
    bytes and multipart delimiters (boundary from the response Content-Type)
    without keeping the body."""
    t0 = time.perf_counter()
    with session.get(url, headers=headers, stream=True, timeout=timeout) as r:
        ttfb = time.perf_counter() - t0
        ctype = r.headers.get("Content-Type", "")
        boundary = None
        for param in ctype.split(";")[1:]:
            k, _, v = param.strip().partition("=")
            if k.strip().lower() == "boundary":
                boundary = v.strip().strip('"')
        delim = ("--" + boundary).encode() if boundary else None
        n = 0
        count = 0
        carry = b""
        for piece in r.iter_content(chunk_size=chunk):
            n += len(piece)
            if delim:
                buf = carry + piece
                count += buf.count(delim)
                # keep a tail shorter than the delimiter so no match is counted twice
                carry = buf[-(len(delim) - 1):] if len(delim) > 1 else b""
        total = time.perf_counter() - t0
        parts = count - 1 if delim else -1
        err = "" if r.status_code == 200 else f"HTTP {r.status_code}"
        return StreamedGet(r.status_code, ttfb, total, n, parts, err)


def respawn_dicomgate(server: "DicomgateServer") -> "DicomgateServer":
    """Stop `dicomgate serve` and start it again on the same data dir (and
    database), keeping the account/provider/link already set up (fresh process,
    so its RSS starts from scratch). New ports."""
    server.stop()
    server.dicom_port = free_port()
    server.http_port = free_port()
    server.base = f"http://{LOCALHOST}:{server.http_port}"
    cmd = [server.exe, "serve", *server._common(), "--dicom-port", str(server.dicom_port),
           "--http-port", str(server.http_port)]
    server._spawn(cmd, env=dict(os.environ))
    try:
        wait_http(server.base + "/healthz", 60, server.proc)
        wait_tcp(server.dicom_port, 30, server.proc)
    except Exception as exc:
        server.stop()
        raise RuntimeError(f"dicomgate serve failed to restart ({exc}); log tail:\n{tail(server.log_path)}")
    return server


def rss_bytes(pid: int) -> int:
    """Current RSS of a process and all its descendants."""
    try:
        root = psutil.Process(pid)
        procs = [root] + root.children(recursive=True)
    except psutil.Error:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def pg_create_database(name: str, admin_url: str = PG_ADMIN_URL) -> str:
    """CREATE DATABASE name (autocommit); returns a SQLAlchemy URL for it."""
    import psycopg

    if not name.replace("_", "").isalnum():
        raise ValueError(f"unsafe database name {name!r}")
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    base = admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    return f"{base}/{name}"


def pg_drop_database(name: str, admin_url: str = PG_ADMIN_URL) -> None:
    import psycopg

    if not name.replace("_", "").isalnum():
        raise ValueError(f"unsafe database name {name!r}")
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
