"""Deletion and purge in-process: idempotent, safe to run concurrently, nothing left behind."""

from __future__ import annotations

import io
import threading

from sqlalchemy import select

from consent.decision import Principal
from gateway.accounts import create_account, create_user
from gateway.db.models import AuditEntry, Erasure, Instance, Study
from gateway.erasure import delete_account, delete_study, purge, receipt
from tests.support.data import uids, variant


def _account_with(services, n):
    with services.db.session(write=True) as s:
        user = create_user(s, f"u{n}@example.org", "pw")
        acc = create_account(s, user, None, actor="t")
    p = Principal("user", user.id, f"user:u{n}@example.org")
    bodies = [variant(PatientName=f"Purge^Me{n}") for _ in range(n)]
    for b in bodies:
        assert services.ingest.store_instance(p, acc.id, io.BytesIO(b), len(b)).outcome.ok
    return acc.id, p, bodies


def test_concurrent_purges_do_the_work_once(services):
    accounts = [_account_with(services, n) for n in (2, 3, 4)]
    receipts = [delete_account(services.db, p, acc).id for acc, p, _ in accounts]
    results: list[dict] = []
    threads = [threading.Thread(target=lambda: results.append(purge(services.db, services.store))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(r["objects_removed"] for r in results) == 9
    assert sum(r["accounts"] for r in results) == 3
    for rid in receipts:
        assert receipt(services.db, rid)["status"] == "purged"
    assert purge(services.db, services.store) == {"studies": 0, "accounts": 0, "objects_removed": 0}
    assert list(services.store.iter_keys("")) == []


def test_study_purge_keeps_audit_entries_without_identifiers(services):
    acc, p, bodies = _account_with(services, 2)
    study = uids(bodies[0])[0]
    delete_study(services.db, p, acc, study)
    purge(services.db, services.store)
    with services.db.session() as s:
        assert s.scalar(select(Study).where(Study.study_uid == study)) is None
        assert len(s.scalars(select(Instance).where(Instance.account_id == acc)).all()) == 1
        entries = s.scalars(select(AuditEntry).where(AuditEntry.account_id == acc)).all()
        assert [e for e in entries if e.action == "instance.stored"]  # still there ...
        assert not [e for e in entries if e.study_uid == study or study in e.detail]  # ... without the UID
        assert s.scalars(select(Erasure)).one().purged_at is not None
    for path in services.settings.data_path.rglob("*"):  # index, WAL, objects
        if path.is_file():
            assert study.encode() not in path.read_bytes(), path
