"""What an HTTP worker process serves (started by :class:`gateway.runtime.processes.WorkerPool`).

DICOMweb, the REST API and the pages on the inherited HTTP listening socket,
until the worker is told to stop; then requests in flight finish (bounded).
"""

from __future__ import annotations

import socket
import threading
from typing import Callable

from gateway.http.app import create_app
from gateway.http.server import make_http_server, run_http, stop_http
from gateway.runtime.services import Services
from gateway.runtime.settings import Settings


def serve(settings: Settings, listener: socket.socket, failed: threading.Event) -> Callable[[], None]:
    """Start waitress on ``listener``; return what stops it. A server failure sets ``failed``."""
    services = Services.from_settings(settings, migrate=False)  # the parent migrated
    http = make_http_server(create_app(services), settings, listener)
    threading.Thread(target=run_http, args=(http, failed), name="http", daemon=True).start()

    def stop() -> None:
        stop_http(http, timeout=20)
        services.close()

    return stop
