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


def make_http_server(app: Any, settings: Settings, listener: socket.socket) -> Any:
    """Waitress on the already-listening socket a worker inherits from ``serve`` (the only way it runs).

    Guarded against clients that have not authenticated: :mod:`gateway.http.guard`.
    """
    # waitress drops every X-Forwarded-* header unless trusted_proxies names proxies; then the app's
    # TrustedProxies (gateway.http.proxies) applies them from those peers and drops them from the rest
    return make_guarded_server(app, settings, listener, ident="dicomgate",
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
