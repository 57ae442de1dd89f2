"""``dicomgate serve``: the DIMSE SCP, the HTTP server and the scheduler.

The DIMSE SCP and the HTTP server run in worker processes sharing their
port (``dimse_processes`` / ``http_processes`` of them, one at least; the
default on a multi-core machine is one per core, see
:mod:`gateway.runtime.processes`). The scheduler runs here, and this process
watches the workers.

SIGTERM / SIGINT: stop accepting, let associations and requests in flight
finish (bounded), then exit. Nothing is acknowledged before it is durable,
so whatever is cut off was never reported as stored.
"""

from __future__ import annotations

import logging
import shutil
import signal
import sys
import time

from gateway.ops.jobs import start_scheduler
from gateway.runtime.processes import WorkerPool, bind_listener, dimse_process_count, http_process_count, new_metrics_dir
from gateway.runtime.services import Services
from gateway.runtime.settings import Settings

log = logging.getLogger("dicomgate")


def run(settings: Settings) -> None:
    logging.basicConfig(
        level=getattr(logging, settings.log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("pynetdicom").setLevel(logging.DEBUG if settings.log_level.upper() == "DEBUG" else logging.WARNING)
    services = Services.from_settings(settings)  # migrates the index, once, before any worker starts
    pools: list[WorkerPool] = []
    signalled: list[int] = []

    def _stop(signum, _frame):  # type: ignore[no-untyped-def]
        # only flags here: no lock may be taken in a handler that a second signal can interrupt
        signalled.append(signum)
        for pool in pools:
            pool.begin_stop()

    # before any worker starts: a SIGTERM during start-up is a clean stop, not a kill
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    dicom = bind_listener(settings.host, settings.dicom_port)
    web = bind_listener(settings.host, settings.http_port)
    metrics_dir = new_metrics_dir()
    dimse_n, http_n = dimse_process_count(settings), http_process_count(settings)
    pools += [WorkerPool("dimse", settings, dicom, dimse_n, metrics_dir),
              WorkerPool("http", settings, web, http_n, metrics_dir)]
    scheduler = None
    try:
        for pool in pools:
            pool.start()  # DIMSE first: once HTTP answers, the DICOM port is served too
        if signalled:  # a SIGTERM during start-up: straight to the shutdown below
            return
        scheduler = start_scheduler(services)
        log.info(
            "dicomgate serving: DICOM %s:%s (%s), HTTP http://%s:%s (%s), index %s, objects %s",
            settings.host, dicom.getsockname()[1], _workers(dimse_n), settings.host, web.getsockname()[1],
            _workers(http_n), _redact(settings.effective_database_url), services.store.describe(),
        )
        while not signalled:
            for pool in pools:
                pool.poll()  # here, in the main thread (see WorkerPool)
            time.sleep(0.5)
    finally:
        if signalled:
            log.info("signal %s: shutting down", signalled[0])
        else:
            log.info("shutting down")
        for pool in pools:
            pool.terminate()  # every worker starts draining at once
        for pool in pools:
            pool.stop(timeout=25)  # each worker drains its associations / requests (20 s), then exits
        if scheduler is not None:
            scheduler.shutdown(wait=True)
        services.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)
        log.info("dicomgate stopped")


def _workers(processes: int) -> str:
    return f"{processes} worker process{'es' if processes > 1 else ''}"


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return url
