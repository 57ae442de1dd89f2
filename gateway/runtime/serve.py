"""``dicomgate serve``: the DIMSE SCP, the HTTP server and the scheduler.

The DIMSE SCP and the HTTP server run in worker processes sharing their
port (``dimse_processes`` / ``http_processes`` of them; the default on a
multi-core machine, see :mod:`gateway.runtime.processes`), or, when both counts are
1, in this process. The scheduler runs here, and this process watches the
workers.

SIGTERM / SIGINT: stop accepting, let associations and requests in flight
finish (bounded), then exit. Nothing is acknowledged before it is durable,
so whatever is cut off was never reported as stored.
"""

from __future__ import annotations

import logging
import shutil
import signal
import sys
import threading

from gateway.http.app import create_app
from gateway.http.server import make_http_server, run_http, stop_http
from gateway.runtime.processes import WorkerPool, bind_listener, dimse_process_count, http_process_count, new_metrics_dir
from gateway.runtime.services import Services
from gateway.runtime.settings import Settings
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
    dimse_n, http_n = dimse_process_count(settings), http_process_count(settings)
    # either everything runs in this process or everything in workers: a worker's /metrics
    # reads the counts of every process from files, which this process's own counters are not
    in_workers = max(dimse_n, http_n) > 1
    metrics_dir = new_metrics_dir() if in_workers else None
    pools: list[WorkerPool] = []
    stopping = threading.Event()  # set by the HTTP server thread if it fails
    signalled: list[int] = []

    def _stop(signum, _frame):  # type: ignore[no-untyped-def]
        # only flags here: no lock may be taken in a handler that a second signal can interrupt
        signalled.append(signum)
        for pool in pools:
            pool.begin_stop()

    # before any worker starts: a SIGTERM during start-up is a clean stop, not a kill
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    dimse: DimseServer | None = None
    http = None
    if in_workers:
        dicom = bind_listener(settings.host, settings.dicom_port)
        dicom_port = dicom.getsockname()[1]
        web = bind_listener(settings.host, settings.http_port)
        http_port = web.getsockname()[1]
        pools += [WorkerPool("dimse", settings, dicom, dimse_n, metrics_dir),  # type: ignore[arg-type]
                  WorkerPool("http", settings, web, http_n, metrics_dir)]  # type: ignore[arg-type]
    else:
        dimse = DimseServer(services)
        dicom_port = dimse.start()
    scheduler = None
    try:
        for pool in pools:
            pool.start()  # DIMSE first: once HTTP answers, the DICOM port is served too
        if signalled:  # a SIGTERM during start-up: straight to the shutdown below
            return
        if not in_workers:
            http = make_http_server(create_app(services), settings)
            http_port = http.effective_port
        from gateway.ops.jobs import start_scheduler

        scheduler = start_scheduler(services)
        log.info(
            "dicomgate serving: DICOM %s:%s (%s), HTTP http://%s:%s (%s), index %s, objects %s",
            settings.host, dicom_port, _where(dimse_n, in_workers), settings.host, http_port,
            _where(http_n, in_workers),
            _redact(settings.effective_database_url), services.store.describe(),
        )
        if http is not None:
            threading.Thread(target=run_http, args=(http, stopping), name="http", daemon=True).start()
        while not signalled and not stopping.wait(0.5):
            for pool in pools:
                pool.poll()  # here, in the main thread (see WorkerPool)
    finally:
        if signalled:
            log.info("signal %s: shutting down", signalled[0])
        else:
            log.info("shutting down")
        for pool in pools:
            pool.terminate()  # every worker starts draining at once
        if http is not None:
            stop_http(http, timeout=20)
        for pool in pools:
            pool.stop(timeout=25)  # each worker drains its associations / requests (20 s), then exits
        if dimse is not None:
            dimse.stop(timeout=20)
        if scheduler is not None:
            scheduler.shutdown(wait=True)
        services.close()
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
        log.info("dicomgate stopped")


def _where(processes: int, in_workers: bool) -> str:
    return f"{processes} worker process{'es' if processes > 1 else ''}" if in_workers else "in this process"


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return url
