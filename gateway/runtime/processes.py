"""Serving on more than one core: worker processes sharing one listening socket.

Ingest is CPU-bound Python (header parse, SQL, pynetdicom's PDU handling,
multipart parsing), so one process serves concurrent associations or
requests on one core however many it has. ``serve`` therefore binds the
DICOM port and the HTTP port itself and starts ``dimse_processes`` DIMSE
workers (``python -m gateway.runtime.dimse_worker``) and ``http_processes`` HTTP workers
(``python -m gateway.runtime.http_worker``) that inherit their listening socket and
race for ``accept`` (pre-fork, as nginx and gunicorn do). Each worker is
complete: its own database engine and object store, the same policy,
handlers and consent decision; nothing is shared between them but the
database and the store, which already serialise concurrent writers. State
that must hold across workers lives in the database (the sign-in throttle).
A count of 1 keeps that side inside ``serve``.

Lifetimes: a worker gets SIGKILL when the parent dies (``PR_SET_PDEATHSIG``),
so a ``kill -9`` of ``serve`` leaves no process holding a port (nothing
acknowledged is lost: success is only answered after the commit). SIGTERM to
``serve`` is passed on; each worker stops accepting, lets its associations
or requests finish (bounded), and exits. A worker that dies on its own is
started again (not one stopped by SIGTERM / SIGINT: that is the service
shutting down). ``max_associations`` and ``workers`` (threads) hold per
worker.

Readiness: each worker writes one byte to a pipe once it is serving, and
``serve`` waits for all of them (bounded) before it says it is serving, so a
``/healthz`` that answers means the DICOM port is served, not just bound.

Metrics: workers count in prometheus_client's multiprocess files in one
directory per ``serve``; ``/metrics`` adds them up (:mod:`gateway.ops.metrics`).
"""

from __future__ import annotations

import errno
import importlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from multiprocessing.connection import Connection
from typing import Any, Callable

from gateway.runtime.settings import Settings

log = logging.getLogger(__name__)

#: give up re-binding the port after this long (a killed predecessor's workers
#: may hold the listening socket for a moment after the parent died)
BIND_RETRY_SECONDS = 10.0
#: a worker that died is restarted, but not more often than this
RESPAWN_MIN_INTERVAL = 2.0
#: how long ``serve`` waits for its workers to say they are serving
READY_TIMEOUT = 60.0


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


METRICS_PREFIX = "dicomgate-metrics-"
#: the module whose ``serve(settings, listener, failed)`` each side's workers run
WORKER_MODULES = {"dimse": "gateway.runtime.dimse_worker", "http": "gateway.runtime.http_worker"}
#: imported once by the fork server, so a worker starts in milliseconds, not
#: in the ~2 s these imports take (and shares their memory copy-on-write)
PRELOAD = ["gateway.runtime.fork_server", "gateway.runtime.services", "gateway.http.app", "gateway.http.server", "scp.server", *WORKER_MODULES.values()]


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
    and the readiness pipe reach the worker over the fork server's socket
    (``SCM_RIGHTS``); settings are pickled the same way (they hold secrets:
    not argv or env). The fork server exits when ``serve`` does (it watches
    a pipe), and its workers die with it (``PR_SET_PDEATHSIG``).

    Every method is called from ``serve``'s main thread.
    """

    def __init__(self, role: str, settings: Settings, listener: socket.socket, count: int, metrics_dir: str) -> None:
        if role not in WORKER_MODULES:
            raise ValueError(f"no worker for {role!r}")
        self.role = role
        self.settings = settings
        self.listener = listener
        self.count = count
        self.metrics_dir = metrics_dir
        self.procs: list[Any] = [None] * count  # multiprocessing Process objects
        self._ready: list[Connection | None] = [None] * count  # read end of each worker's readiness pipe
        self._started_at = [0.0] * count
        self._serving = [False] * count
        self._terminated: set[int] = set()
        self._stopping = False

    def start(self, ready_timeout: float = READY_TIMEOUT) -> None:
        """Start every worker and wait until all serve, one dies at start-up, the
        service is being stopped, or ``ready_timeout`` passes."""
        for i in range(self.count):
            if self._stopping:
                return
            self._spawn(i)
        deadline = time.monotonic() + ready_timeout
        while any(c is not None for c in self._ready) and (left := deadline - time.monotonic()) > 0:
            if self._stopping:
                return
            self._collect_ready(min(left, 0.5))
            if any(p is not None and p.exitcode is not None for p in self.procs):
                break  # one died at start-up: poll() restarts it; do not hold serve up for it
        waiting = [i for i, ok in enumerate(self._serving) if not ok]
        if waiting:
            log.warning("%s worker(s) %s not serving yet; serve goes on, they are watched", self.role.upper(), waiting)

    def _collect_ready(self, timeout: float) -> None:
        """Take the readiness byte of whichever workers have written it (or died: EOF)."""
        pending = [c for c in self._ready if c is not None]
        if not pending:
            return
        ready = multiprocessing.connection.wait(pending, timeout)
        for i, c in enumerate(self._ready):
            if c is not None and c in ready:
                try:
                    c.recv_bytes()
                    self._serving[i] = True
                except (EOFError, OSError):  # it died before it served: poll() starts it again
                    log.error("%s worker %d died before serving", self.role.upper(), i)
                self._close_ready(i)

    def _close_ready(self, index: int) -> None:
        conn, self._ready[index] = self._ready[index], None
        if conn is not None:
            conn.close()

    def _spawn(self, index: int) -> None:
        # the fork server is started on the first spawn with serve's environment: prometheus_client
        # decides at import (in the fork server) where counts go
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = self.metrics_dir
        ctx = _fork_server()
        ready_r, ready_w = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_worker_process, name=f"dicomgate-{self.role}-{index}",
                           args=(self.role, index, self.settings, self.listener, ready_w), daemon=False)
        try:
            proc.start()
        except BaseException:
            ready_r.close()
            raise
        finally:
            ready_w.close()  # the worker holds its own copy: EOF here means it died
        self._close_ready(index)  # a restarted worker's predecessor may not have said it was ready
        self._serving[index] = False
        self._ready[index] = ready_r
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
        """SIGTERM every live worker (once): each stops accepting and drains."""
        self._stopping = True
        for p in self.procs:
            if p is not None and p.exitcode is None and p.pid not in self._terminated:
                self._terminated.add(p.pid)
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
            self._close_ready(i)
        self.listener.close()


def _fork_server():  # type: ignore[no-untyped-def]
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


# -- the worker side ------------------------------------------------------
PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15


def _prctl_linux(name: str) -> None:
    """Die with the parent (the fork server, which dies with ``serve``); show ``name`` in ps / top."""
    fork_server = sys.modules.get("gateway.runtime.fork_server")  # imported (and its PID taken) in the fork server
    parent = fork_server.PID if fork_server is not None else os.getppid()
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            libc.prctl(PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0)
        except (OSError, AttributeError):  # pragma: no cover - not glibc
            pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _let_the_fork_server_go() -> None:
    """Close this worker's copy of the fork server's "alive" pipe.

    The fork server exits when every holder of that pipe has closed it, and
    hands a copy to each process it forks; were the workers to keep theirs,
    a ``kill -9`` of ``serve`` would leave the fork server waiting on its
    workers and the workers (which die with the fork server) on it.
    """
    from multiprocessing import forkserver

    fd = getattr(forkserver._forkserver, "_forkserver_alive_fd", None)
    if fd is not None:
        try:
            os.close(fd)
        except OSError:
            pass
        forkserver._forkserver._forkserver_alive_fd = None


def _worker_process(role: str, index: int, settings: Settings, listener: socket.socket, ready: Connection) -> None:
    """The life of one worker process: ``serve`` on the inherited listener (the
    ``serve`` of :data:`WORKER_MODULES`), say so on the readiness pipe, and on
    SIGTERM / SIGINT call what ``serve`` returned (which drains, bounded) and
    exit 0. ``serve`` may set the event it is given when its server fails: the
    worker then exits 1, and ``serve`` starts it again.
    """
    stopping = threading.Event()  # set by a server that failed
    signalled: list[int] = []

    def _stop(signum, _frame):  # type: ignore[no-untyped-def]
        # no Event.set() here: a second signal arriving while the first handler holds the
        # event's lock would deadlock the main thread (seen: SIGTERM twice in quick succession)
        signalled.append(signum)

    signal.signal(signal.SIGTERM, _stop)  # first: the fork server ignores SIGTERM, and so would we
    signal.signal(signal.SIGINT, _stop)
    _prctl_linux(f"dg-{role}-{index}")
    _let_the_fork_server_go()
    logging.basicConfig(
        level=getattr(logging, settings.log_level.upper(), logging.INFO),
        format=f"%(asctime)s %(levelname)s %(name)s[{role}-{index}]: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    logging.getLogger("pynetdicom").setLevel(logging.DEBUG if settings.log_level.upper() == "DEBUG" else logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)  # imported, not run: the parent migrated
    out = logging.getLogger("dicomgate")
    serve: Callable[[Settings, socket.socket, threading.Event], Callable[[], None]] = \
        importlib.import_module(WORKER_MODULES[role]).serve
    stop = serve(settings, listener, stopping)
    out.info("%s worker %d serving (pid %d)", role.upper(), index, os.getpid())
    try:
        ready.send_bytes(b"1")
    except OSError:
        pass  # serve stopped waiting; it watches the process anyway
    ready.close()
    try:
        while not signalled and not stopping.wait(0.2):
            pass
    finally:
        stop()
        out.info("%s worker %d stopped", role.upper(), index)
    sys.exit(0 if signalled else 1)
