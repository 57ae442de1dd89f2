"""What a DIMSE worker process serves (started by :class:`gateway.runtime.processes.WorkerPool`).

Associations on the inherited DICOM listening socket, until the worker is
told to stop; then it drains like ``serve``.
"""

from __future__ import annotations

import socket
import threading
from typing import Callable

from gateway.runtime.services import Services
from gateway.runtime.settings import Settings
from scp.server import DimseServer


def serve(settings: Settings, listener: socket.socket, failed: threading.Event) -> Callable[[], None]:
    """Start the SCP on ``listener``; return what stops it (bounded drain)."""
    services = Services.from_settings(settings, migrate=False)  # the parent migrated
    dimse = DimseServer(services, listener=listener)
    dimse.start()

    def stop() -> None:
        dimse.stop(timeout=20)
        services.close()

    return stop
