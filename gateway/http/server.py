"""The production WSGI server (waitress) as ``serve`` and its HTTP workers run it."""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any

from gateway.http.guard import make_guarded_server
from gateway.runtime.settings import Settings

log = logging.getLogger("dicomgate")


def make_http_server(app: Any, settings: Settings, sockets: list[socket.socket] | None = None) -> Any:
    """Waitress on ``settings.host:http_port``, or on an already-listening socket (a worker's inherited one).

    Guarded against clients that have not authenticated: :mod:`gateway.http.guard`.
    """
    if sockets and len(sockets) != 1:
        raise ValueError("one listening socket per HTTP server")
    # waitress drops every X-Forwarded-* header unless trusted_proxies names proxies; then the app's
    # TrustedProxies (gateway.http.proxies) applies them from those peers and drops them from the rest
    return make_guarded_server(app, settings, sockets[0] if sockets else None, ident="dicomgate",
                               clear_untrusted_proxy_headers=not settings.trusted_proxies)


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
