"""The life of one worker process (started by :class:`gateway.runtime.processes.WorkerPool`).

A worker is forked by multiprocessing's fork server and gets, pickled over
the fork server's socket, its role, its index, the settings, the shared
listening socket and one end of a socket pair to ``serve`` (its *lifeline*):

* once serving, it writes one byte on the lifeline (``serve`` waits for it);
* a thread reads the lifeline, on which ``serve`` never writes: the read
  returns only when ``serve``'s end is closed, i.e. when ``serve`` is gone
  (``kill -9`` included), and the worker then exits at once. Nothing
  acknowledged is lost: success is only answered after the commit.
* SIGTERM / SIGINT: stop accepting, let what is in flight finish (bounded),
  exit 0. A server that fails exits 1, and ``serve`` starts it again.
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import socket
import sys
import threading
from multiprocessing.connection import Connection
from typing import Callable

from gateway.runtime.settings import Settings

#: the module whose ``serve(settings, listener, failed)`` each side's workers run
#: (by name: ``serve`` itself never imports the servers, only the fork server does)
WORKER_MODULES = {"dimse": "gateway.runtime.dimse_worker", "http": "gateway.runtime.http_worker"}

Serve = Callable[[Settings, socket.socket, threading.Event], Callable[[], None]]


def run(role: str, index: int, settings: Settings, listener: socket.socket, lifeline: Connection) -> None:
    """``serve`` on the inherited listener (the ``serve`` of :data:`WORKER_MODULES`) until told to stop."""
    failed = threading.Event()  # set by a server that failed
    signalled: list[int] = []

    def _stop(signum, _frame):  # type: ignore[no-untyped-def]
        # no Event.set() here: a second signal arriving while the first handler holds the
        # event's lock would deadlock the main thread (seen: SIGTERM twice in quick succession)
        signalled.append(signum)

    signal.signal(signal.SIGTERM, _stop)  # first: the fork server ignores SIGTERM, and so would we
    signal.signal(signal.SIGINT, _stop)
    threading.Thread(target=_exit_when_serve_is_gone, args=(lifeline,), name="lifeline", daemon=True).start()
    _name_process(f"dg-{role}-{index}")
    _configure_logging(settings, f"{role}-{index}")
    out = logging.getLogger("dicomgate")
    serve: Serve = importlib.import_module(WORKER_MODULES[role]).serve
    stop = serve(settings, listener, failed)
    out.info("%s worker %d serving (pid %d)", role.upper(), index, os.getpid())
    try:
        lifeline.send_bytes(b"1")
    except OSError:
        pass  # serve is gone: the lifeline thread ends this process
    try:
        while not signalled and not failed.wait(0.2):
            pass
    finally:
        stop()
        out.info("%s worker %d stopped", role.upper(), index)
    sys.exit(0 if signalled else 1)


def _exit_when_serve_is_gone(lifeline: Connection) -> None:
    try:
        lifeline.recv_bytes()  # serve never writes: this returns (EOF) when serve's end closes
    except (EOFError, OSError):
        pass
    os._exit(1)  # as a SIGKILL would: no drain for a service that is gone


def _name_process(name: str) -> None:
    """Show ``name`` in ps / top (and to psutil): the main thread's ``comm`` on Linux."""
    try:
        with open("/proc/self/comm", "w") as f:
            f.write(name[:15])
    except OSError:  # pragma: no cover - not Linux
        pass


def _configure_logging(settings: Settings, who: str) -> None:
    level = settings.log_level.upper()
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO),
        format=f"%(asctime)s %(levelname)s %(name)s[{who}]: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    logging.getLogger("pynetdicom").setLevel(logging.DEBUG if level == "DEBUG" else logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)  # imported, not run: the parent migrated
