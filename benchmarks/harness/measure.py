"""Measuring: percentiles, RSS and CPU of a server process tree (psutil over /proc), a timed
streaming GET, the machine a run was made on, and the result of one workload."""

from __future__ import annotations

import os
import platform
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import psutil
import pydicom
import requests

MB = 1_000_000  # MB/s figures are decimal megabytes


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


def loadavg_str() -> str:
    """'load 0.52 0.61 0.70' (1, 5, 15 min) for before/after lines."""
    a, b, c = os.getloadavg()
    return f"load {a:.2f} {b:.2f} {c:.2f}"


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
