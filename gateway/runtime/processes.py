"""Serving on more than one core: worker processes sharing one listening socket.

Ingest is CPU-bound Python (header parse, SQL, pynetdicom's PDU handling,
multipart parsing), so one process serves concurrent associations or
requests on one core however many it has. ``serve`` therefore binds the
DICOM port and the HTTP port itself and starts ``dimse_processes`` DIMSE
workers and ``http_processes`` HTTP workers (:mod:`gateway.runtime.worker`)
that inherit their listening socket and race for ``accept`` (pre-fork, as
nginx and gunicorn do); a count of 1 is a pool of one. Each worker is
complete: its own database engine and object store, the same policy,
handlers and consent decision; nothing is shared between them but the
database and the store, which already serialise concurrent writers. State
that must hold across workers lives in the database (the sign-in throttle).

Lifetimes: each worker holds one end of a socket pair whose other end only
``serve`` holds; when ``serve`` dies (``kill -9`` included) the worker sees
the end of it and exits, so no process is left holding a port. SIGTERM to
``serve`` is passed on; each worker stops accepting, lets its associations
or requests finish (bounded), and exits. A worker that dies on its own is
started again (not one stopped by SIGTERM / SIGINT: that is the service
shutting down). ``max_associations`` and ``workers`` (threads) hold per
worker.

Readiness: each worker writes one byte on that socket pair once it is
serving, and ``serve`` waits for all of them (bounded) before it says it is
serving, so a ``/healthz`` that answers means the DICOM port is served, not
just bound.

Metrics: workers count in prometheus_client's multiprocess files in one
directory per ``serve``; ``/metrics`` adds them up (:mod:`gateway.ops.metrics`).
"""

from __future__ import annotations

import errno
import logging
import multiprocessing
import multiprocessing.connection
import os
import shutil
import socket
import tempfile
import time
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

from gateway.runtime import worker
from gateway.runtime.settings import Settings

log = logging.getLogger(__name__)

#: give up re-binding the port after this long (a killed predecessor's workers
#: may hold the listening socket for a moment after the parent died)
BIND_RETRY_SECONDS = 10.0
#: a worker that died is restarted, but not more often than this
RESPAWN_MIN_INTERVAL = 2.0
#: how long ``serve`` waits for its workers to say they are serving
READY_TIMEOUT = 60.0
METRICS_PREFIX = "dicomgate-metrics-"
#: imported once by the fork server, so a worker starts in milliseconds, not
#: in the ~2 s these imports take (and shares their memory copy-on-write)
PRELOAD = ["gateway.runtime.fork_server", "gateway.runtime.worker", "gateway.runtime.services", "gateway.http.app",
           "gateway.http.server", "scp.server", *worker.WORKER_MODULES.values()]


def process_count(setting: int) -> int:
    """``dimse_processes`` / ``http_processes``: 0 means one per core, at most 4."""
    if setting > 0:
        return setting
    return max(1, min(4, os.cpu_count() or 1))


def dimse_process_count(settings: Settings) -> int:
    return process_count(settings.dimse_processes)


def http_process_count(settings: Settings) -> int:
    return process_count(settings.http_processes)


def bind_listener(host: str, port: int, backlog: int = 128) -> socket.socket:
    """A listening socket made for sharing: non-blocking (a worker that
    loses the race for a connection gets EAGAIN, not a hang) and inheritable."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    deadline = time.monotonic() + BIND_RETRY_SECONDS
    while True:
        try:
            sock.bind((host, port))
            break
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                sock.close()
                raise
            time.sleep(0.1)
    sock.listen(backlog)
    sock.setblocking(False)
    os.set_inheritable(sock.fileno(), True)
    return sock


def new_metrics_dir() -> str:
    """The directory this ``serve``'s workers write their counts to (one per ``serve``)."""
    _remove_stale_metrics_dirs()
    return tempfile.mkdtemp(prefix=f"{METRICS_PREFIX}{os.getpid()}-")


def _remove_stale_metrics_dirs() -> None:
    """Metrics directories of a ``serve`` that was killed (its pid is gone) hold only counts; remove them."""
    root = tempfile.gettempdir()
    for name in os.listdir(root):
        if not name.startswith(METRICS_PREFIX):
            continue
        try:
            pid = int(name[len(METRICS_PREFIX):].split("-", 1)[0])
        except ValueError:
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)
        except PermissionError:
            pass  # someone else's live process


class WorkerPool:
    """Starts, watches and stops the worker processes of one side (``dimse`` or ``http``).

    Workers are forked by multiprocessing's fork server: a clean process,
    started (by exec, so it inherits none of ``serve``'s threads, locks or
    connections) on the first worker's start, that has imported
    :data:`PRELOAD` and forks each worker from there. The listening socket
    and the worker's lifeline reach it over the fork server's socket
    (``SCM_RIGHTS``); settings are pickled the same way (they hold secrets:
    not argv or env). The fork server exits once ``serve`` and every worker
    have.

    Every method is called from ``serve``'s main thread.
    """

    def __init__(self, role: str, settings: Settings, listener: socket.socket, count: int, metrics_dir: str) -> None:
        if role not in worker.WORKER_MODULES:
            raise ValueError(f"no worker for {role!r}")
        self.role = role
        self.settings = settings
        self.listener = listener
        self.count = count
        self.metrics_dir = metrics_dir
        self.procs: list[BaseProcess | None] = [None] * count
        self._lifelines: list[Connection | None] = [None] * count  # serve's end, held for the worker's life
        self._started_at = [0.0] * count
        self._serving = [False] * count
        self._stopping = False

    def start(self, ready_timeout: float = READY_TIMEOUT) -> None:
        """Start every worker and wait until all serve, one dies at start-up, the
        service is being stopped, or ``ready_timeout`` passes."""
        for i in range(self.count):
            if self._stopping:
                return
            self._spawn(i)
        deadline = time.monotonic() + ready_timeout
        while not all(self._serving) and (left := deadline - time.monotonic()) > 0 and not self._stopping:
            if not self._collect_ready(min(left, 0.5)):
                break  # one died at start-up: poll() restarts it; do not hold serve up for it
        waiting = [i for i, ok in enumerate(self._serving) if not ok]
        if waiting and not self._stopping:
            log.warning("%s worker(s) %s not serving yet; serve goes on, they are watched", self.role.upper(), waiting)

    def _collect_ready(self, timeout: float) -> bool:
        """Take the readiness byte of whichever workers have written it; False if one died before."""
        pending = {c: i for i, c in enumerate(self._lifelines) if c is not None and not self._serving[i]}
        alive = True
        for conn in multiprocessing.connection.wait(list(pending), timeout) if pending else ():
            i = pending[conn]  # type: ignore[index]
            try:
                conn.recv_bytes()  # type: ignore[union-attr]
                self._serving[i] = True
            except (EOFError, OSError):  # it died before it served: poll() starts it again
                log.error("%s worker %d died before serving", self.role.upper(), i)
                self._close_lifeline(i)
                alive = False
        return alive

    def _close_lifeline(self, index: int) -> None:
        conn, self._lifelines[index] = self._lifelines[index], None
        if conn is not None:
            conn.close()

    def _spawn(self, index: int) -> None:
        # the fork server is started on the first spawn with serve's environment: prometheus_client
        # decides at import (in the fork server) where counts go
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = self.metrics_dir
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(PRELOAD)
        here, there = ctx.Pipe(duplex=True)
        proc = ctx.Process(target=worker.run, name=f"dicomgate-{self.role}-{index}",
                           args=(self.role, index, self.settings, self.listener, there), daemon=False)
        try:
            proc.start()
        except BaseException:
            here.close()
            raise
        finally:
            there.close()  # the worker holds its own copy
        self._close_lifeline(index)  # a restarted worker's predecessor's (it is gone)
        self._lifelines[index] = here
        self._serving[index] = False
        self.procs[index] = proc
        self._started_at[index] = time.monotonic()
        log.info("%s worker %d started (pid %d)", self.role.upper(), index, proc.pid)

    def begin_stop(self) -> None:
        """From here on nothing is restarted (called from the signal handler)."""
        self._stopping = True

    def poll(self) -> None:
        """Start again a worker that died on its own (not one that was told to stop)."""
        self._collect_ready(0)
        for i, proc in enumerate(self.procs):
            if self._stopping:
                return
            if proc is None or proc.exitcode is None:
                continue  # (a shutdown sets _stopping first, so a worker stopped by it is not restarted)
            if time.monotonic() - self._started_at[i] < RESPAWN_MIN_INTERVAL:
                continue  # dying at start-up: try again shortly, not in a tight loop
            log.error("%s worker %d (pid %d) exited with %s; starting it again", self.role.upper(), i, proc.pid,
                      proc.exitcode)
            try:
                self._spawn(i)
            except OSError as exc:
                log.error("could not start %s worker %d: %s", self.role.upper(), i, exc)

    def terminate(self) -> None:
        """SIGTERM every live worker: each stops accepting and drains (a second SIGTERM changes nothing)."""
        self._stopping = True
        for p in self.procs:
            if p is not None and p.exitcode is None:
                try:
                    p.terminate()
                except ProcessLookupError:
                    pass

    def stop(self, timeout: float = 25.0) -> None:
        """SIGTERM every worker, wait for them (bounded), then SIGKILL what is left; close the listener."""
        self.terminate()
        deadline = time.monotonic() + timeout
        for p in self.procs:
            if p is None:
                continue
            p.join(max(0.1, deadline - time.monotonic()))
            if p.exitcode is None:
                log.warning("%s worker pid %d did not stop in time; killing it", self.role.upper(), p.pid)
                p.kill()
                p.join()
        for i in range(self.count):
            self._close_lifeline(i)
        self.listener.close()
