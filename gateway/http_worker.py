"""One HTTP worker process (started by :class:`gateway.processes.WorkerPool`).

Serves DICOMweb, the REST API and the pages on the inherited HTTP listening
socket until SIGTERM / SIGINT, then lets requests in flight finish
(:func:`gateway.processes.worker_main`).
"""

from __future__ import annotations

import socket
import sys
import threading
from typing import Callable

from gateway.processes import worker_main
from gateway.settings import Settings


def _serve(settings: Settings, listener: socket.socket, failed: threading.Event) -> Callable[[], None]:
    from gateway.app import create_app
    from gateway.http_server import make_http_server, run_http, stop_http
    from gateway.services import Services

    services = Services.from_settings(settings, migrate=False)  # the parent migrated
    http = make_http_server(create_app(services), settings, sockets=[listener])
    thread = threading.Thread(target=run_http, args=(http, failed), name="http", daemon=True)
    thread.start()

    def stop() -> None:
        stop_http(http, timeout=20)
        services.close()

    return stop


def main(argv: list[str] | None = None) -> int:
    return worker_main("http", _serve, argv)


if __name__ == "__main__":
    sys.exit(main())
