"""Deletion and purge in-process: idempotent, safe to run concurrently, nothing left behind."""

from __future__ import annotations

import io
import json
import threading

import pytest
from sqlalchemy import select

from consent import links, shares
from consent.decision import Principal
from consent.models import ConsentEvent, Link, Share
from consent.providers import add_provider
from gateway.archive.erasure import (ErasureForbidden, ErasureNotFound, delete_account, delete_study, purge,
                                     receipt)
from gateway.db.models import AuditEntry, Erasure, Instance, Study
from gateway.errors import Forbidden, NotFound, classify
from gateway.identity.accounts import create_account, create_user
from tests.support.data import uids, variant


def _account_with(services, n):
    with services.db.session(write=True) as s:
        user = create_user(s, f"u{n}@example.org", "password")
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


def test_redaction_matches_whole_uids_only(services):
    with services.db.session(write=True) as s:
        user = create_user(s, "r@example.org", "password")
        acc = create_account(s, user, None, actor="t")
    p = Principal("user", user.id, "user:r@example.org")
    keep, erase = variant(SOPInstanceUID="1.2.826.0.1.3680043.9.99.10"), variant(SOPInstanceUID="1.2.826.0.1.3680043.9.99.1")
    for b in (keep, erase):
        r = services.ingest.store_instance(p, acc.id, io.BytesIO(b), len(b), meta_must_match=False)
        assert r.outcome.ok, r
    delete_study(services.db, p, acc.id, uids(erase)[0])
    purge(services.db, services.store)
    with services.db.session() as s:
        kept = [e for e in s.scalars(select(AuditEntry).where(AuditEntry.account_id == acc.id,
                                                             AuditEntry.action == "instance.stored"))]
    details = [e.detail for e in kept]
    assert any("1.2.826.0.1.3680043.9.99.10" in d for d in details)  # the other study's entry is untouched


def test_instance_arriving_while_its_study_is_deleted_is_not_acknowledged(services, monkeypatch):
    from gateway.archive.ingest import Outcome

    acc, p, bodies = _account_with(services, 1)
    study, series, _ = uids(bodies[0])
    late = variant(study=study, series=series)
    real_put = services.store.put

    def put_then_delete(key, chunks):
        n = real_put(key, chunks)
        delete_study(services.db, p, acc, study)  # the owner deletes the study meanwhile
        return n

    monkeypatch.setattr(services.store, "put", put_then_delete)
    result = services.ingest.store_instance(p, acc, io.BytesIO(late), len(late))
    assert result.outcome is Outcome.UNAVAILABLE
    monkeypatch.setattr(services.store, "put", real_put)
    with services.db.session() as s:
        assert uids(late)[2] not in [i.sop_uid for i in s.scalars(select(Instance))]
    assert not [k for k in services.store.iter_keys("") if uids(late)[2] in k]


def test_deleting_an_account_revokes_its_links_and_shares_through_consent(services):
    """Each link and share ends with a "revoked" consent_events row naming who deleted the account."""
    with services.db.session(write=True) as s:
        owner = create_user(s, "holder@example.org", "password")
        friend = create_user(s, "friend@example.org", "password")
        acc = create_account(s, owner, None, actor="t")
        prv = add_provider(s, name="P", ae_title="PACSDEL", networks=[], host=None, port=None, actor="t")
        ln = links.create_link(s, account_id=acc.id, provider_id=prv.id, push=True, pull=True, sensitive=False,
                               expires_at=None, actor="t")
        sh = shares.grant_share(s, account_id=acc.id, user_id=friend.id, role="viewer", sensitive=False,
                                expires_at=None, actor="t")
        old = links.create_link(s, account_id=acc.id, provider_id=prv.id, push=True, pull=False, sensitive=False,
                                expires_at=None, actor="t")
        links.revoke_link(s, old.id, actor="earlier")
    holder = Principal.for_user(owner.id, "holder@example.org")
    delete_account(services.db, holder, acc.id)
    with services.db.session() as s:
        events = s.scalars(select(ConsentEvent).where(ConsentEvent.account_id == acc.id,
                                                      ConsentEvent.change == "revoked")).all()
        by_subject = {e.subject_id: e for e in events}
        assert set(by_subject) == {ln.id, sh.id, old.id}
        for subject in (ln.id, sh.id):
            assert by_subject[subject].actor == "user:holder@example.org"
            assert json.loads(by_subject[subject].snapshot)["revoked"] is not None
        assert by_subject[old.id].actor == "earlier"  # revoked once, not again
        assert s.get(Link, ln.id).revoked_by == s.get(Share, sh.id).revoked_by == "user:holder@example.org"


def test_account_deletion_refusals_are_typed(services):
    with services.db.session(write=True) as s:
        owner = create_user(s, "own@example.org", "password")
        editor = create_user(s, "ed@example.org", "password")
        acc = create_account(s, owner, None, actor="t")
        shares.grant_share(s, account_id=acc.id, user_id=editor.id, role="editor", sensitive=False,
                           expires_at=None, actor="t")
    with pytest.raises(ErasureForbidden, match="only the owner can delete the account") as refused:
        delete_account(services.db, Principal.for_user(editor.id, "ed@example.org"), acc.id)
    assert classify(refused.value) is Forbidden
    with pytest.raises(ErasureNotFound, match="no account acc_nope") as missing:
        delete_account(services.db, Principal.operator(), "acc_nope")
    assert classify(missing.value) is NotFound
    with pytest.raises(ErasureNotFound, match="no study 1.2.3"):
        delete_study(services.db, Principal.for_user(editor.id, "ed@example.org"), acc.id, "1.2.3")
    delete_account(services.db, Principal.operator(), acc.id)  # the operator may
