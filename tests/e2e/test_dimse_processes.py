"""The DIMSE SCP in worker processes sharing the DICOM port (scp.processes).

Each test starts its own ``serve`` and looks at its process tree with psutil:
workers exist, serve concurrent associations, are counted in /metrics,
are restarted when they die, and never outlive ``serve`` (kill -9 included).
"""

from __future__ import annotations

import re
import signal
import threading
import time

import psutil
import pytest
import requests
from pydicom.uid import generate_uid

from tests.conftest import make_backend
from tests.support.data import variant
from tests.support.dimse import echo, pynetdicom_store
from tests.support.gateway import Gateway


def workers(gw: Gateway) -> list[psutil.Process]:
    parent = psutil.Process(gw.proc.pid)
    return [p for p in parent.children(recursive=True) if "scp.worker" in " ".join(p.cmdline())]


def wait_for(predicate, timeout: float = 15.0, what: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def stored_metric(gw: Gateway) -> float:
    text = requests.get(f"{gw.url}/metrics", timeout=30).text
    m = re.search(r'^dicomgate_ingest_instances_total\{outcome="stored"\} (\S+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


@pytest.fixture(params=["sqlite", "postgres"])
def gw2(tmp_path, request):
    gw = Gateway(make_backend(request.param, tmp_path, request), extra_env={"DICOMGATE_DIMSE_PROCESSES": "2"}).start()
    acc = gw.new_account()
    prv = gw.new_provider()
    gw.link(acc, prv, push=True)
    yield gw, acc, prv
    gw.close()
    gw.stop()


def test_two_workers_serve_concurrent_associations_and_are_counted(gw2):
    gw, acc, prv = gw2
    assert len(wait_for(lambda: len(workers(gw)) == 2 and workers(gw), what="two workers")) == 2
    # all four associations add to one study and series: the workers race to create the same
    # patient / study / series rows (IntegrityError retry on PostgreSQL, writer lock on SQLite)
    study, series = generate_uid(), generate_uid()
    batches = [[variant(study=study, series=series) for _ in range(6)] for _ in range(4)]
    statuses: list[list[int]] = [[] for _ in batches]

    def send(i: int) -> None:
        statuses[i] = pynetdicom_store(gw.dicom_port, prv["ae_title"], acc["ae_title"], batches[i]).statuses

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(batches))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert statuses == [[0] * 6] * 4
    assert len(gw.instance_rows(acc["id"])) == 24
    from gateway.db.models import Series, Study

    with gw.services.db.session() as s:  # one study and one series, not one per worker
        assert s.query(Study).filter(Study.account_id == acc["id"]).count() == 1
        assert s.query(Series).join(Study, Series.study_pk == Study.id).filter(Study.account_id == acc["id"]).count() == 1
    # the workers' counts reach the parent's /metrics (prometheus multiprocess files)
    assert stored_metric(gw) == 24


def test_a_worker_that_dies_is_replaced(gw2):
    gw, acc, prv = gw2
    before = wait_for(lambda: len(workers(gw)) == 2 and workers(gw), what="two workers")
    victim = before[0]
    victim.kill()
    victim.wait(10)
    now = wait_for(lambda: (w := workers(gw)) and len(w) == 2 and victim.pid not in [p.pid for p in w] and w,
                   timeout=20, what="a replacement worker")
    assert {p.pid for p in now} != {p.pid for p in before}
    for _ in range(4):  # whichever worker accepts, the service answers
        assert echo(gw.dicom_port, prv["ae_title"], acc["ae_title"]).statuses == [0]
    assert pynetdicom_store(gw.dicom_port, prv["ae_title"], acc["ae_title"], [variant()]).statuses == [0]
    assert "exited with" in gw.log()


def test_workers_do_not_outlive_serve_killed_with_sigkill(tmp_path, request):
    gw = Gateway(make_backend("sqlite", tmp_path, request), extra_env={"DICOMGATE_DIMSE_PROCESSES": "2"}).start()
    try:
        pids = [p.pid for p in wait_for(lambda: len(workers(gw)) == 2 and workers(gw), what="two workers")]
        gw.close()
        gw.stop(signal.SIGKILL)
        wait_for(lambda: not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
                                 for pid in pids), timeout=10, what="the workers to die with their parent")
        gw.start()  # the same DICOM port binds again at once
        acc = gw.new_account()
        prv = gw.new_provider()
        gw.link(acc, prv, push=True)
        assert pynetdicom_store(gw.dicom_port, prv["ae_title"], acc["ae_title"], [variant()]).statuses == [0]
    finally:
        gw.close()
        gw.stop()


def test_sigterm_stops_workers_and_serve_cleanly(tmp_path, request):
    gw = Gateway(make_backend("sqlite", tmp_path, request), extra_env={"DICOMGATE_DIMSE_PROCESSES": "2"}).start()
    pids = [p.pid for p in wait_for(lambda: len(workers(gw)) == 2 and workers(gw), what="two workers")]
    wait_for(lambda: "DIMSE worker 0 serving" in gw.log() and "DIMSE worker 1 serving" in gw.log(),
             what="both workers serving")
    gw.close()
    assert gw.stop(signal.SIGTERM) == 0
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE for pid in pids)
    assert "DIMSE worker 0 stopped" in gw.log() and "DIMSE worker 1 stopped" in gw.log()


def test_one_process_serves_dimse_in_serve_itself(tmp_path, request):
    gw = Gateway(make_backend("sqlite", tmp_path, request), extra_env={"DICOMGATE_DIMSE_PROCESSES": "1"}).start()
    try:
        acc = gw.new_account()
        prv = gw.new_provider()
        gw.link(acc, prv, push=True)
        assert workers(gw) == []
        assert pynetdicom_store(gw.dicom_port, prv["ae_title"], acc["ae_title"], [variant()]).statuses == [0]
        assert stored_metric(gw) == 1
    finally:
        gw.close()
        gw.stop()


def test_serve_is_ready_only_once_every_worker_serves(tmp_path, request):
    # serve starts HTTP (and logs that it is serving) only after each worker has said it accepts
    # associations: a /healthz that answers means the DICOM port is served, not merely bound
    gw = Gateway(make_backend("sqlite", tmp_path, request), extra_env={"DICOMGATE_DIMSE_PROCESSES": "2"}).start()
    try:
        log = gw.log()
        serving = log.index("dicomgate serving")
        for i in range(2):
            assert log.index(f"DIMSE worker {i} serving") < serving
    finally:
        gw.close()
        gw.stop()
