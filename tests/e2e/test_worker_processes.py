"""The DIMSE SCP and the HTTP server in worker processes sharing their port (gateway.runtime.processes).

Each test starts its own ``serve`` and looks at its process tree with psutil:
workers exist, serve concurrent associations and requests, are counted in
/metrics, are restarted when they die, and never outlive ``serve`` (kill -9
included).
"""

from __future__ import annotations

import os
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
from tests.support.gateway import Gateway, worker_processes as workers


TWO_EACH = {"DICOMGATE_DIMSE_PROCESSES": "2", "DICOMGATE_HTTP_PROCESSES": "2"}


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
    gw = Gateway(make_backend(request.param, tmp_path, request), extra_env=TWO_EACH).start()
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
    # the workers' counts reach /metrics (prometheus multiprocess files), whichever worker answers it
    assert [stored_metric(gw) for _ in range(4)] == [24] * 4


def test_two_http_workers_serve_concurrent_stow_and_share_the_throttle(gw2):
    gw, acc, prv = gw2
    assert len(wait_for(lambda: len(workers(gw, "http")) == 2 and workers(gw, "http"), what="two workers")) == 2
    study = generate_uid()
    codes: list[int] = [0] * 4

    def send(i: int) -> None:
        codes[i] = gw.stow(acc["id"], [variant(study=study) for _ in range(5)], token=prv["token"]).status_code

    threads = [threading.Thread(target=send, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert codes == [200] * 4
    assert len(gw.instance_rows(acc["id"])) == 20
    assert [stored_metric(gw) for _ in range(4)] == [20] * 4
    # a guesser gets one budget for the whole service, not one per worker: each attempt is a
    # new connection, so the kernel hands them to both workers
    url = f"{gw.url}/api/v1/providers"
    codes = [requests.get(url, headers={"Authorization": f"Bearer guess-{i}"}, timeout=30).status_code
             for i in range(8)]
    assert codes == [401] * 5 + [429] * 3


@pytest.mark.parametrize("role", ["dimse", "http"])
def test_a_worker_that_dies_is_replaced(gw2, role):
    gw, acc, prv = gw2
    before = wait_for(lambda: len(workers(gw, role)) == 2 and workers(gw, role), what="two workers")
    victim = before[0]
    victim.kill()
    victim.wait(10)
    now = wait_for(lambda: (w := workers(gw, role)) and len(w) == 2 and victim.pid not in [p.pid for p in w] and w,
                   timeout=20, what="a replacement worker")
    assert {p.pid for p in now} != {p.pid for p in before}
    wait_for(lambda: re.search(rf"{role.upper()} worker \d serving", gw.log().rsplit("exited with", 1)[-1]),
             timeout=30, what="the replacement serving")
    for _ in range(4):  # whichever worker accepts, the service answers
        assert echo(gw.dicom_port, prv["ae_title"], acc["ae_title"]).statuses == [0]
        assert requests.get(f"{gw.url}/healthz", timeout=30).status_code == 200
    assert pynetdicom_store(gw.dicom_port, prv["ae_title"], acc["ae_title"], [variant()]).statuses == [0]
    assert gw.stow(acc["id"], [variant()], token=prv["token"]).status_code == 200
    assert "exited with" in gw.log()


def test_workers_do_not_outlive_serve_killed_with_sigkill(tmp_path, request):
    gw = Gateway(make_backend("sqlite", tmp_path, request), extra_env=TWO_EACH).start()
    try:
        pids = [p.pid for p in wait_for(lambda: len(workers(gw) + workers(gw, "http")) == 4
                                        and workers(gw) + workers(gw, "http"), what="four workers")]
        gw.close()
        gw.stop(signal.SIGKILL)
        wait_for(lambda: not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
                                 for pid in pids), timeout=10, what="the workers to die with their parent")
        gw.start()  # the same DICOM and HTTP ports bind again at once
        acc = gw.new_account()
        prv = gw.new_provider()
        gw.link(acc, prv, push=True)
        assert pynetdicom_store(gw.dicom_port, prv["ae_title"], acc["ae_title"], [variant()]).statuses == [0]
        assert gw.stow(acc["id"], [variant()], token=prv["token"]).status_code == 200
    finally:
        gw.close()
        gw.stop()


def test_sigterm_stops_workers_and_serve_cleanly(tmp_path, request):
    gw = Gateway(make_backend("sqlite", tmp_path, request), extra_env=TWO_EACH).start()
    pids = [p.pid for p in wait_for(lambda: len(workers(gw) + workers(gw, "http")) == 4
                                    and workers(gw) + workers(gw, "http"), what="four workers")]
    wait_for(lambda: all(f"{r} worker {i} serving" in gw.log() for r in ("DIMSE", "HTTP") for i in (0, 1)),
             what="every worker serving")
    gw.close()
    assert gw.stop(signal.SIGTERM) == 0
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE for pid in pids)
    assert all(f"{r} worker {i} stopped" in gw.log() for r in ("DIMSE", "HTTP") for i in (0, 1))


@pytest.mark.parametrize("counts", [(1, 2), (2, 1), (1, 1)])
def test_counts_of_one(tmp_path, request, counts):
    """A count of 1 is a pool of one worker: serve itself never serves (so /metrics, answered by a
    worker, sees every count in the worker files)."""
    env = {"DICOMGATE_DIMSE_PROCESSES": str(counts[0]), "DICOMGATE_HTTP_PROCESSES": str(counts[1])}
    gw = Gateway(make_backend("sqlite", tmp_path, request), extra_env=env).start()
    try:
        acc = gw.new_account()
        prv = gw.new_provider()
        gw.link(acc, prv, push=True)
        assert [len(workers(gw, "dimse")), len(workers(gw, "http"))] == list(counts)
        assert pynetdicom_store(gw.dicom_port, prv["ae_title"], acc["ae_title"], [variant()]).statuses == [0]
        assert gw.stow(acc["id"], [variant()], token=prv["token"]).status_code == 200
        assert stored_metric(gw) == 2  # counted wherever it was stored, wherever /metrics is answered
    finally:
        gw.close()
        gw.stop()


def test_serve_is_ready_only_once_every_worker_serves(tmp_path, request):
    # serve starts its HTTP workers only after each DIMSE worker has said it accepts associations
    # (a /healthz that answers means the DICOM port is served, not merely bound), and says it is
    # serving once every worker does
    gw = Gateway(make_backend("sqlite", tmp_path, request), extra_env=TWO_EACH).start()
    try:
        log = wait_for(lambda: "dicomgate serving" in gw.log() and gw.log(), what="serve saying it serves")
        serving = log.index("dicomgate serving")
        for i in range(2):
            # DIMSE first: any HTTP worker answering /healthz comes after every DIMSE worker serves
            assert log.index(f"DIMSE worker {i} serving") < log.index("HTTP worker 0 started") < serving
            assert log.index(f"HTTP worker {i} serving") < serving
    finally:
        gw.close()
        gw.stop()


def test_sigterm_to_the_whole_process_group_still_drains(tmp_path, request):
    # systemd's default KillMode=control-group (or kill -- -PGID) sends SIGTERM to every process
    # of the service: the fork server ignores it, so the workers drain instead of dying with it
    gw = Gateway(make_backend("sqlite", tmp_path, request), extra_env=TWO_EACH, new_session=True).start()
    acc = gw.new_account()
    prv = gw.new_provider()
    gw.link(acc, prv, push=True)
    wait_for(lambda: "dicomgate serving" in gw.log(), what="serve saying it serves")
    pids = [p.pid for p in workers(gw) + workers(gw, "http")]
    assert len(pids) == 4
    study = generate_uid()
    result: dict[str, int] = {}

    def send() -> None:  # a STOW in flight when the stop arrives
        result["code"] = gw.stow(acc["id"], [variant(study=study) for _ in range(40)], token=prv["token"]).status_code

    sender = threading.Thread(target=send)
    sender.start()
    time.sleep(0.3)
    gw.close()
    os.killpg(gw.proc.pid, signal.SIGTERM)
    assert gw.proc.wait(60) == 0
    gw.proc = None
    gw._log.close()
    sender.join(60)
    log = gw.log()
    assert all(f"{r} worker {i} stopped" in log for r in ("DIMSE", "HTTP") for i in (0, 1)), log[-3000:]
    assert "dicomgate stopped" in log
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE for pid in pids)
    if result.get("code") == 200:  # answered before the stop cut it off: every instance is there
        gw2 = Gateway(gw.backend).start()
        try:
            assert len(gw2.instance_rows(acc["id"])) == 40
        finally:
            gw2.close()
            gw2.stop()
