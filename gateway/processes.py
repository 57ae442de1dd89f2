"""Serving on more than one core: worker processes sharing one listening socket.

Ingest is CPU-bound Python (header parse, SQL, pynetdicom's PDU handling,
multipart parsing), so one process serves concurrent associations or
requests on one core however many it has. ``serve`` therefore binds the
DICOM port and the HTTP port itself and starts ``dimse_processes`` DIMSE
workers (``python -m scp.worker``) and ``http_processes`` HTTP workers
(``python -m gateway.http_worker``) that inherit their listening socket and
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
directory per ``serve``; ``/metrics`` adds them up (:mod:`gateway.metrics`).
"""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Callable

from gateway.settings import Settings

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
#: the module each side's workers run (``python -m ...``)
WORKER_MODULES = {"dimse": "scp.worker", "http": "gateway.http_worker"}


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

    Every method is called from ``serve``'s main thread: on Linux a child's
    PDEATHSIG fires when the *thread* that started it exits, so workers are
    only ever started from the thread that lives as long as ``serve``.
    """

    def __init__(self, role: str, settings: Settings, listener: socket.socket, count: int, metrics_dir: str) -> None:
        if role not in WORKER_MODULES:
            raise ValueError(f"no worker for {role!r}")
        self.role = role
        self.settings = settings
        self.listener = listener
        self.count = count
        self.metrics_dir = metrics_dir
        self.procs: list[subprocess.Popen | None] = [None] * count
        self._ready: list[int | None] = [None] * count  # read end of each worker's readiness pipe
        self._started_at = [0.0] * count
        self._stopping = False
        # each worker may hold the full max_associations: a per-worker share would
        # refuse associations on a busy worker while another one sits idle
        self._config = json.dumps({"settings": dataclasses.asdict(settings)})

    def start(self, ready_timeout: float = READY_TIMEOUT) -> None:
        """Start every worker and wait until all serve, one dies at start-up, or ``ready_timeout`` passes."""
        for i in range(self.count):
            self._spawn(i)
        deadline = time.monotonic() + ready_timeout
        while any(fd is not None for fd in self._ready) and (left := deadline - time.monotonic()) > 0:
            self._collect_ready(min(left, 0.5))
            if any(p is not None and p.poll() is not None for p in self.procs):
                break  # one died at start-up: poll() restarts it; do not hold serve up for it
        waiting = [i for i, fd in enumerate(self._ready) if fd is not None]
        if waiting:
            log.warning("%s worker(s) %s not serving yet; serve goes on, they are watched", self.role.upper(), waiting)

    def _collect_ready(self, timeout: float) -> None:
        """Take the readiness byte of whichever workers have written it (or died: EOF)."""
        pending = [fd for fd in self._ready if fd is not None]
        if not pending:
            return
        ready, _, _ = select.select(pending, [], [], timeout)
        for i, fd in enumerate(self._ready):
            if fd in ready:
                self._close_ready(i)

    def _close_ready(self, index: int) -> None:
        fd, self._ready[index] = self._ready[index], None
        if fd is not None:
            os.close(fd)

    def _spawn(self, index: int) -> None:
        env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=self.metrics_dir)
        fd = self.listener.fileno()
        ready_r, ready_w = os.pipe()
        # -P: the working directory is not put on sys.path, so a stray "scp" there cannot stand in
        cmd = [sys.executable, "-P", "-m", WORKER_MODULES[self.role], "--listen-fd", str(fd), "--index", str(index),
               "--parent", str(os.getpid()), "--ready-fd", str(ready_w)]
        try:
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, pass_fds=(fd, ready_w), env=env)
        except BaseException:
            os.close(ready_r)
            raise
        finally:
            os.close(ready_w)
        self._close_ready(index)  # a restarted worker's predecessor may not have said it was ready
        self._ready[index] = ready_r
        self.procs[index] = proc
        self._started_at[index] = time.monotonic()
        assert proc.stdin is not None
        try:
            proc.stdin.write(self._config.encode())  # settings hold secrets: a pipe, not argv or env
            proc.stdin.close()
        except OSError as exc:  # it died at once; poll() will see it
            log.error("%s worker %d (pid %d) did not take its settings: %s", self.role.upper(), index, proc.pid, exc)
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
            if proc is None or proc.poll() is None:
                continue
            if proc.returncode in (0, -signal.SIGTERM, -signal.SIGINT):
                continue  # stopped by a signal meant for the whole service: shutdown is under way
            if time.monotonic() - self._started_at[i] < RESPAWN_MIN_INTERVAL:
                continue  # dying at start-up: try again shortly, not in a tight loop
            log.error("%s worker %d (pid %d) exited with %s; starting it again", self.role.upper(), i, proc.pid,
                      proc.returncode)
            try:
                self._spawn(i)
            except OSError as exc:
                log.error("could not start %s worker %d: %s", self.role.upper(), i, exc)

    def terminate(self) -> None:
        """SIGTERM every live worker: each stops accepting and drains."""
        self._stopping = True
        for p in self.procs:
            if p is not None and p.poll() is None:
                try:
                    p.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass

    def stop(self, timeout: float = 25.0) -> None:
        """SIGTERM every worker, wait for them (bounded), then SIGKILL what is left; close the listener."""
        self.terminate()
        live = [p for p in self.procs if p is not None]
        deadline = time.monotonic() + timeout
        for p in live:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s worker pid %d did not stop in time; killing it", self.role.upper(), p.pid)
                p.kill()
                p.wait()
        for i in range(self.count):
            self._close_ready(i)
        self.listener.close()


# -- the worker side ------------------------------------------------------
PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # pragma: no cover - not glibc
            pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def worker_main(role: str, serve: Callable[[Settings, socket.socket, threading.Event], Callable[[], None]],
                argv: list[str] | None = None) -> int:
    """The life of one worker process: adopt the inherited listener, ``serve`` on it,
    say so on the readiness pipe, and on SIGTERM / SIGINT call what ``serve``
    returned (which drains, bounded) and exit 0. ``serve`` may set the event
    it is given when its server fails: the worker then exits 1, and the
    parent starts it again.

    Settings arrive on stdin as JSON (they hold secrets: not argv or env).
    """
    import argparse

    ap = argparse.ArgumentParser(prog=f"python -m {WORKER_MODULES[role]}")
    ap.add_argument("--listen-fd", type=int, required=True)
    ap.add_argument("--index", type=int, required=True)
    ap.add_argument("--parent", type=int, required=True)
    ap.add_argument("--ready-fd", type=int, default=None, help="written to (one byte) once serving")
    args = ap.parse_args(argv)
    _die_with_parent(args.parent)
    stopping = threading.Event()
    signalled: list[int] = []

    def _stop(signum, _frame):  # type: ignore[no-untyped-def]
        signalled.append(signum)
        stopping.set()

    # before the slow imports: a SIGTERM during start-up is a clean stop, not a kill
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)

    config = json.loads(sys.stdin.read())
    settings = Settings(**config["settings"])
    logging.basicConfig(
        level=getattr(logging, settings.log_level.upper(), logging.INFO),
        format=f"%(asctime)s %(levelname)s %(name)s[{role}-{args.index}]: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("pynetdicom").setLevel(logging.DEBUG if settings.log_level.upper() == "DEBUG" else logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)  # imported, not run: the parent migrated
    out = logging.getLogger("dicomgate")
    stop = serve(settings, socket.socket(fileno=args.listen_fd), stopping)
    out.info("%s worker %d serving (pid %d)", role.upper(), args.index, os.getpid())
    if args.ready_fd is not None:
        try:
            os.write(args.ready_fd, b"1")
        except OSError:
            pass  # the parent stopped waiting; it watches the process anyway
        os.close(args.ready_fd)
    try:
        stopping.wait()
    finally:
        stop()
        out.info("%s worker %d stopped", role.upper(), args.index)
    return 0 if signalled else 1
