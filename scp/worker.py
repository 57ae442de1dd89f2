"""One DIMSE worker process (started by :class:`gateway.processes.WorkerPool`).

Serves associations on the inherited DICOM listening socket until SIGTERM /
SIGINT, then drains like ``serve`` (:func:`gateway.processes.worker_main`).
"""

from __future__ import annotations

import socket
import sys
import threading
from typing import Callable

from gateway.processes import worker_main
from gateway.settings import Settings


def _serve(settings: Settings, listener: socket.socket, failed: threading.Event) -> Callable[[], None]:
    from gateway.services import Services
    from scp.server import DimseServer

    services = Services.from_settings(settings, migrate=False)  # the parent migrated
    dimse = DimseServer(services, listener=listener)
    dimse.start()

    def stop() -> None:
        dimse.stop(timeout=20)
        services.close()

    return stop


def main(argv: list[str] | None = None) -> int:
    return worker_main("dimse", _serve, argv)


if __name__ == "__main__":
    sys.exit(main())
