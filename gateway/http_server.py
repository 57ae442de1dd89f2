"""The production WSGI server (waitress) as ``serve`` and its HTTP workers run it."""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any

from waitress.server import create_server

from gateway.settings import Settings

log = logging.getLogger("dicomgate")


def make_http_server(app: Any, settings: Settings, sockets: list[socket.socket] | None = None) -> Any:
    """Waitress on ``settings.host:http_port``, or on already-listening ``sockets`` (a worker's inherited one)."""
    where: dict[str, Any] = {"sockets": sockets} if sockets else {"host": settings.host, "port": settings.http_port}
    return create_server(
        app,
        **where,
        threads=settings.workers,
        max_request_body_size=settings.max_stow_bytes + (1 << 20),
        channel_timeout=300,
        ident="dicomgate",
        clear_untrusted_proxy_headers=True,
    )


def run_http(http: Any, stopping: threading.Event) -> None:
    """``http.run()`` in a thread; a server failure (not a shutdown) sets ``stopping``."""
    try:
        http.run()
    except Exception:
        if not stopping.is_set():
            log.exception("the HTTP server failed")
            stopping.set()


def stop_http(http: Any, timeout: float = 20) -> None:
    """Stop accepting, let requests in flight finish (bounded); idle keep-alive connections are dropped."""
    http.close()
    dispatcher = http.task_dispatcher
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (dispatcher.active_count > 0 or dispatcher.queue):
        time.sleep(0.05)
    dispatcher.shutdown(cancel_pending=True, timeout=1)
