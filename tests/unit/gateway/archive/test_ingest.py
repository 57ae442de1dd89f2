"""The ingest service in-process: ordering, compensation, duplicates."""

from __future__ import annotations

import io

import pytest
from sqlalchemy import select

from consent import links
from consent.decision import Principal
from consent.providers import add_provider
from gateway.identity.accounts import create_account, create_user
from gateway.db.models import AuditEntry, Instance
from gateway.archive.ingest import Outcome
from storage import StorageError
from tests.support.data import variant


@pytest.fixture
def pushing(services):
    with services.db.session(write=True) as s:
        owner = create_user(s, "o@example.org", "password")
        acc = create_account(s, owner, None, actor="t")
        prv = add_provider(s, name="P", ae_title="PACS", networks=[], host=None, port=None, actor="t")
        links.create_link(s, account_id=acc.id, provider_id=prv.id, push=True, pull=False, sensitive=False,
                          expires_at=None, actor="t")
    return services, acc.id, Principal("provider", prv.id, "provider:P (PACS)", "127.0.0.1")


def store(svc, principal, account_id, raw):
    return svc.ingest.store_instance(principal, account_id, io.BytesIO(raw), len(raw))


def rows(svc, account_id):
    with svc.db.session() as s:
        return list(s.scalars(select(Instance).where(Instance.account_id == account_id)))


def test_stored_then_duplicate(pushing):
    svc, acc, p = pushing
    raw = variant()
    assert store(svc, p, acc, raw).outcome is Outcome.STORED
    assert store(svc, p, acc, raw).outcome is Outcome.DUPLICATE
    assert len(rows(svc, acc)) == 1 and len(list(svc.store.iter_keys(f"{acc}/"))) == 1


def test_index_failure_removes_the_object(pushing, monkeypatch):
    svc, acc, p = pushing

    def broken(*a, **k):
        raise RuntimeError("disk full in the database")

    monkeypatch.setattr(svc.ingest, "_index", broken)
    result = store(svc, p, acc, variant())
    assert result.outcome is Outcome.FAILED and "index" in result.reason
    assert rows(svc, acc) == [] and list(svc.store.iter_keys(f"{acc}/")) == []


def test_store_failure_leaves_no_row(pushing, monkeypatch):
    svc, acc, p = pushing

    def broken(key, chunks):
        raise StorageError("bucket unreachable")

    monkeypatch.setattr(svc.store, "put", broken)
    result = store(svc, p, acc, variant())
    assert result.outcome is Outcome.FAILED and "object store" in result.reason
    assert rows(svc, acc) == []


def test_refusal_is_audited_without_storing(services):
    with services.db.session(write=True) as s:
        owner = create_user(s, "o2@example.org", "password")
        acc = create_account(s, owner, None, actor="t")
        prv = add_provider(s, name="P", ae_title="PULLER", networks=[], host=None, port=None, actor="t")
        links.create_link(s, account_id=acc.id, provider_id=prv.id, push=False, pull=True, sensitive=False,
                          expires_at=None, actor="t")
    p = Principal("provider", prv.id, "provider:P (PULLER)", "127.0.0.1")
    result = store(services, p, acc.id, variant())
    assert result.outcome is Outcome.REFUSED
    with services.db.session() as s:
        actions = [a.action for a in s.scalars(select(AuditEntry).where(AuditEntry.account_id == acc.id))]
    assert "instance.refused" in actions and "instance.stored" not in actions
    assert rows(services, acc.id) == []


@pytest.mark.parametrize("cut", [10, 131, 400, 2000, 30000, -1])
def test_truncated_files_are_malformed(pushing, cut):
    svc, acc, p = pushing
    raw = variant()
    result = store(svc, p, acc, raw[:cut])
    assert result.outcome is Outcome.MALFORMED
    assert rows(svc, acc) == []


def test_trailing_garbage_is_malformed(pushing):
    svc, acc, p = pushing
    result = store(svc, p, acc, variant() + b"\x01\x02\x03")
    assert result.outcome is Outcome.MALFORMED
