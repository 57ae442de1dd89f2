"""``dicomgate serve``: the DIMSE SCP, the HTTP server and the scheduler.

The DIMSE SCP runs in worker processes sharing the DICOM port when
``dimse_processes`` is above 1 (the default on a multi-core machine, see
:mod:`scp.processes`), else in this process. HTTP and the scheduler run here.

SIGTERM / SIGINT: stop accepting, let associations and requests in flight
finish (bounded), then exit. Nothing is acknowledged before it is durable,
so whatever is cut off was never reported as stored.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time

from waitress.server import create_server

from gateway.app import create_app
from gateway.services import Services
from gateway.settings import Settings
from gateway.metrics import include_worker_metrics
from scp.processes import WorkerPool, bind_listener, dimse_process_count
from scp.server import DimseServer

log = logging.getLogger("dicomgate")


def run(settings: Settings) -> None:
    logging.basicConfig(
        level=getattr(logging, settings.log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("pynetdicom").setLevel(logging.DEBUG if settings.log_level.upper() == "DEBUG" else logging.WARNING)
    services = Services.from_settings(settings)
    processes = dimse_process_count(settings)
    dimse: DimseServer | None = None
    pool: WorkerPool | None = None
    if processes > 1:
        listener = bind_listener(settings.host, settings.dicom_port)
        dicom_port = listener.getsockname()[1]
        pool = WorkerPool(settings, listener, processes)
        include_worker_metrics(pool.metrics_dir)
        pool.start()
    else:
        dimse = DimseServer(services)
        dicom_port = dimse.start()
    from gateway.jobs import start_scheduler

    scheduler = start_scheduler(services)
    app = create_app(services)
    http = create_server(
        app,
        host=settings.host,
        port=settings.http_port,
        threads=settings.workers,
        max_request_body_size=settings.max_stow_bytes + (1 << 20),
        channel_timeout=300,
        ident="dicomgate",
        clear_untrusted_proxy_headers=True,
    )
    http_port = http.effective_port  # type: ignore[union-attr]
    log.info(
        "dicomgate serving: DICOM %s:%s (%d process%s), HTTP http://%s:%s, index %s, objects %s",
        settings.host, dicom_port, processes, "es" if processes > 1 else "", settings.host, http_port,
        _redact(settings.effective_database_url), services.store.describe(),
    )
    stopping = threading.Event()

    def _stop(signum, _frame):  # type: ignore[no-untyped-def]
        log.info("signal %s: shutting down", signum)
        if pool is not None:
            pool.begin_stop()
        stopping.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    http_thread = threading.Thread(target=_run_http, args=(http, stopping), name="http", daemon=True)
    http_thread.start()
    try:
        while not stopping.wait(0.5):
            if pool is not None:
                pool.poll()  # here, in the main thread (see WorkerPool)
    finally:
        http.close()  # stop accepting connections
        _drain_http(http, timeout=20)
        if pool is not None:
            pool.stop(timeout=25)  # each worker drains its associations (20 s), then exits
        if dimse is not None:
            dimse.stop(timeout=20)
        scheduler.shutdown(wait=True)
        services.close()
        log.info("dicomgate stopped")


def _run_http(http, stopping: threading.Event) -> None:  # type: ignore[no-untyped-def]
    try:
        http.run()
    except Exception:
        if not stopping.is_set():
            log.exception("the HTTP server failed")
            stopping.set()


def _drain_http(http, timeout: float) -> None:  # type: ignore[no-untyped-def]
    """Let requests in flight finish (bounded); idle keep-alive connections are dropped."""
    dispatcher = http.task_dispatcher
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (dispatcher.active_count > 0 or dispatcher.queue):
        time.sleep(0.05)
    dispatcher.shutdown(cancel_pending=True, timeout=1)


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return url
