"""One DIMSE worker process (started by :class:`scp.processes.WorkerPool`).

Reads its settings from stdin (JSON), adopts the inherited listening socket
and serves associations until SIGTERM / SIGINT, then drains like ``serve``.
It dies with its parent: ``PR_SET_PDEATHSIG`` = SIGKILL on Linux.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import logging
import os
import signal
import socket
import sys
import threading

PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # pragma: no cover - not glibc
            pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m scp.worker")
    ap.add_argument("--listen-fd", type=int, required=True)
    ap.add_argument("--index", type=int, required=True)
    ap.add_argument("--parent", type=int, required=True)
    ap.add_argument("--ready-fd", type=int, default=None, help="written to (one byte) once serving")
    args = ap.parse_args(argv)
    _die_with_parent(args.parent)
    stopping = threading.Event()

    def _stop(signum, _frame):  # type: ignore[no-untyped-def]
        stopping.set()

    # before the slow imports: a SIGTERM during start-up is a clean stop, not a kill
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)

    from gateway.services import Services
    from gateway.settings import Settings
    from scp.server import DimseServer

    config = json.loads(sys.stdin.read())
    settings = Settings(**config["settings"])
    logging.basicConfig(
        level=getattr(logging, settings.log_level.upper(), logging.INFO),
        format=f"%(asctime)s %(levelname)s %(name)s[dimse-{args.index}]: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("pynetdicom").setLevel(logging.DEBUG if settings.log_level.upper() == "DEBUG" else logging.WARNING)
    log = logging.getLogger("dicomgate")

    listener = socket.socket(fileno=args.listen_fd)
    services = Services.from_settings(settings, migrate=False)  # the parent migrated
    dimse = DimseServer(services, listener=listener)
    dimse.start()
    log.info("DIMSE worker %d serving (pid %d)", args.index, os.getpid())
    if args.ready_fd is not None:
        try:
            os.write(args.ready_fd, b"1")
        except OSError:
            pass  # the parent stopped waiting; it watches the process anyway
        os.close(args.ready_fd)
    try:
        stopping.wait()
    finally:
        dimse.stop(timeout=20)
        services.close()
        log.info("DIMSE worker %d stopped", args.index)
    return 0


if __name__ == "__main__":
    sys.exit(main())
