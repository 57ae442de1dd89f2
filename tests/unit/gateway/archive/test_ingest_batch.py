"""The ingest service's batch semantics: one result per file, in order; each file on its own."""

from __future__ import annotations

import hashlib
import io
import json
import secrets

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid
from sqlalchemy import select

from consent import links
from consent.decision import Principal
from consent.providers import add_provider
from gateway.identity.accounts import create_account, create_user
from gateway.db.models import AuditEntry, Instance, Study
from gateway.archive.ingest import Outcome
from storage import StorageError
from tests.support.data import variant


# -- fixtures and helpers ---------------------------------------------------
@pytest.fixture
def linked(services):
    """A factory: a fresh account, a provider and one link with the given flags."""

    def make(*, push=True, pull=False, sensitive=False):
        tag = secrets.token_hex(4)
        ae = f"PACS{tag}".upper()
        with services.db.session(write=True) as s:
            owner = create_user(s, f"o-{tag}@example.org", "password")
            acc = create_account(s, owner, None, actor="t")
            prv = add_provider(s, name=f"P{tag}", ae_title=ae, networks=[], host=None, port=None, actor="t")
            link = links.create_link(s, account_id=acc.id, provider_id=prv.id, push=push, pull=pull,
                                     sensitive=sensitive, expires_at=None, actor="t")
            ids = acc.id, prv.id, link.id
        acc_id, prv_id, link_id = ids
        return services, acc_id, Principal("provider", prv_id, f"provider:P{tag} ({ae})", "127.0.0.1"), link_id

    return make


@pytest.fixture
def pushing(linked):
    svc, acc, p, _ = linked()
    return svc, acc, p


def part10(*, sop: str | None = None, study: str | None = None, series: str | None = None, **attrs) -> bytes:
    """Part 10 bytes with the given UIDs (fresh ones otherwise) and extra attributes."""
    raw = variant(study=study, series=series, **attrs)
    if sop is None:
        return raw
    ds = dcmread(io.BytesIO(raw))
    ds.SOPInstanceUID = sop
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def sop_of(raw: bytes) -> str:
    return str(dcmread(io.BytesIO(raw), stop_before_pixels=True).SOPInstanceUID)


def dataset_digest(raw: bytes) -> str:
    """SHA-256 of the data set after the File Meta group, worked out independently of ingest."""
    meta = dcmread(io.BytesIO(raw), stop_before_pixels=True).file_meta
    start = 128 + 4 + 12 + int(meta.FileMetaInformationGroupLength)  # preamble, DICM, (0002,0000), group
    return hashlib.sha256(raw[start:]).hexdigest()


def store_many(svc, principal, account_id, raws, **kw):
    return svc.ingest.store_many(principal, account_id, [(io.BytesIO(r), len(r)) for r in raws], **kw)


def rows(svc, account_id):
    with svc.db.session() as s:
        return list(s.scalars(select(Instance).where(Instance.account_id == account_id)))


def keys(svc, account_id):
    return list(svc.store.iter_keys(f"{account_id}/"))


def audit_entries(svc, account_id, action):
    with svc.db.session() as s:
        return list(s.scalars(select(AuditEntry).where(
            AuditEntry.account_id == account_id, AuditEntry.action == action)))


def audited_sops(svc, account_id, action):
    return sorted(json.loads(a.detail)["sop_instance_uid"] for a in audit_entries(svc, account_id, action))


# -- 1. a batch of distinct valid instances ------------------------------------
def test_batch_of_distinct_instances_is_all_stored(pushing):
    svc, acc, p = pushing
    study = generate_uid()
    raws = [part10(study=study), part10(study=study), part10()]  # two in one study, one in another
    results = store_many(svc, p, acc, raws)
    assert [r.outcome for r in results] == [Outcome.STORED] * 3
    assert [r.sop_instance_uid for r in results] == [sop_of(r) for r in raws]
    stored = rows(svc, acc)
    assert sorted(r.sop_uid for r in stored) == sorted(sop_of(r) for r in raws)
    assert len(keys(svc, acc)) == 3
    assert sorted(k for k in keys(svc, acc)) == sorted(r.object_key for r in stored)
    assert audited_sops(svc, acc, "instance.stored") == sorted(sop_of(r) for r in raws)


# -- 2. each file gets its own outcome, in input order --------------------------
def test_mixed_batch_outcomes_in_input_order(pushing):
    svc, acc, p = pushing
    study = generate_uid()
    malformed = part10(study=study)[:2000]
    valid = part10(study=study)
    other = part10()  # another study than the request names
    results = store_many(svc, p, acc, [malformed, valid, other], expected_study=study)
    assert [r.outcome for r in results] == [Outcome.MALFORMED, Outcome.STORED, Outcome.MISMATCH]
    assert results[1].sop_instance_uid == sop_of(valid) and results[1].study_uid == study
    assert results[2].sop_instance_uid == sop_of(other)
    assert [r.sop_uid for r in rows(svc, acc)] == [sop_of(valid)]
    assert len(keys(svc, acc)) == 1 and sop_of(valid) in keys(svc, acc)[0]
    assert audited_sops(svc, acc, "instance.stored") == [sop_of(valid)]


def test_mixed_batch_order_does_not_matter(pushing):
    svc, acc, p = pushing
    study = generate_uid()
    valid, other, malformed = part10(study=study), part10(), part10(study=study)[:400]
    results = store_many(svc, p, acc, [valid, other, malformed], expected_study=study)
    assert [r.outcome for r in results] == [Outcome.STORED, Outcome.MISMATCH, Outcome.MALFORMED]
    assert [r.sop_uid for r in rows(svc, acc)] == [sop_of(valid)]


# -- 3. / 4. the same SOP Instance UID twice in one batch ---------------------
def test_same_uid_twice_identical_bytes_is_stored_then_duplicate(pushing):
    svc, acc, p = pushing
    raw = part10()
    results = store_many(svc, p, acc, [raw, raw])
    assert [r.outcome for r in results] == [Outcome.STORED, Outcome.DUPLICATE]
    assert len(rows(svc, acc)) == 1 and len(keys(svc, acc)) == 1
    assert len(audit_entries(svc, acc, "instance.stored")) == 1


def test_same_uid_twice_different_bytes_is_stored_then_conflict(pushing):
    svc, acc, p = pushing
    sop, study, series = generate_uid(), generate_uid(), generate_uid()
    first = part10(sop=sop, study=study, series=series, SeriesDescription="first")
    second = part10(sop=sop, study=study, series=series, SeriesDescription="second")
    assert dataset_digest(first) != dataset_digest(second)
    results = store_many(svc, p, acc, [first, second])
    assert [r.outcome for r in results] == [Outcome.STORED, Outcome.CONFLICT]
    (row,) = rows(svc, acc)
    assert row.sop_uid == sop and row.digest == dataset_digest(first)
    (key,) = keys(svc, acc)
    assert key == row.object_key
    assert b"".join(svc.store.open(key)) == first


def test_repeat_is_judged_on_its_own_bytes_after_a_conflicting_twin(pushing):
    svc, acc, p = pushing
    sop, study, series = generate_uid(), generate_uid(), generate_uid()
    stored = part10(sop=sop, study=study, series=series, SeriesDescription="stored")
    other = part10(sop=sop, study=study, series=series, SeriesDescription="other")
    assert store_many(svc, p, acc, [stored])[0].outcome is Outcome.STORED
    # alone, the identical resend is a DUPLICATE; in a batch after a conflicting copy it must still be
    results = store_many(svc, p, acc, [other, stored])
    assert [r.outcome for r in results] == [Outcome.CONFLICT, Outcome.DUPLICATE]
    assert len(rows(svc, acc)) == 1 and len(keys(svc, acc)) == 1


# -- 5. the index transaction fails --------------------------------------------
def test_index_failure_fails_every_written_item_and_leaves_nothing(pushing, monkeypatch):
    svc, acc, p = pushing
    calls = []

    def broken(*a, **k):
        calls.append(a)
        raise RuntimeError("disk full in the database")

    monkeypatch.setattr(svc.ingest, "_index", broken)
    study = generate_uid()
    raws = [part10(study=study), part10(study=study), part10()]
    results = store_many(svc, p, acc, raws)
    assert calls, "the index step was never reached"
    assert [r.outcome for r in results] == [Outcome.FAILED] * 3
    assert all("index" in r.reason for r in results)
    assert [r.sop_instance_uid for r in results] == [sop_of(r) for r in raws]
    assert rows(svc, acc) == [] and keys(svc, acc) == []
    assert audit_entries(svc, acc, "instance.stored") == []


# -- 6. sensitivity is the study's, across the batch ---------------------------
def labelled_and_plain(labelled_first: bool) -> tuple[str, list[bytes]]:
    """One study: an instance labelled PSY and an unlabelled one, in the given order."""
    study = generate_uid()
    labelled = part10(study=study, ConfidentialityCode="PSY")
    plain = part10(study=study)
    return study, [labelled, plain] if labelled_first else [plain, labelled]


@pytest.mark.parametrize("labelled_first", [True, False])
def test_unlabelled_instance_beside_a_labelled_one_needs_the_sensitive_flag(linked, labelled_first):
    svc, acc, p, _ = linked(sensitive=False)
    _, raws = labelled_and_plain(labelled_first)
    results = store_many(svc, p, acc, raws)
    assert [r.outcome for r in results] == [Outcome.REFUSED, Outcome.REFUSED]
    assert all("sensitive" in r.reason for r in results)
    assert rows(svc, acc) == [] and keys(svc, acc) == []
    with svc.db.session() as s:
        assert s.scalars(select(Study).where(Study.account_id == acc)).all() == []
    assert audited_sops(svc, acc, "instance.refused") == sorted(sop_of(r) for r in raws)


@pytest.mark.parametrize("labelled_first", [True, False])
def test_sensitive_link_stores_both_and_marks_the_study(linked, labelled_first):
    svc, acc, p, _ = linked(sensitive=True)
    study, raws = labelled_and_plain(labelled_first)
    results = store_many(svc, p, acc, raws)
    assert [r.outcome for r in results] == [Outcome.STORED, Outcome.STORED]
    assert sorted(r.sop_uid for r in rows(svc, acc)) == sorted(sop_of(r) for r in raws)
    assert len(keys(svc, acc)) == 2
    with svc.db.session() as s:
        (row,) = s.scalars(select(Study).where(Study.account_id == acc)).all()
        assert row.study_uid == study and row.sensitive is True and "PSY" in row.labels.split(",")


# -- 7. revoked consent -------------------------------------------------------
def test_batch_after_the_only_link_is_revoked_is_refused(linked):
    svc, acc, p, link_id = linked()
    with svc.db.session(write=True) as s:
        links.revoke_link(s, link_id, actor="t")
    raws = [part10(), part10(), part10()]
    results = store_many(svc, p, acc, raws)
    assert [r.outcome for r in results] == [Outcome.REFUSED] * 3
    assert rows(svc, acc) == [] and keys(svc, acc) == []
    assert audit_entries(svc, acc, "instance.stored") == []
    # note: with no link in force the provider has no standing on the account (Decision.visible is
    # False), and ingest audits only visible refusals, so no "instance.refused" entry is written here


def test_batch_after_push_link_revoked_is_refused_and_audited_per_instance(linked):
    svc, acc, p, link_id = linked(push=True, pull=True)
    with svc.db.session(write=True) as s:
        links.revoke_link(s, link_id, actor="t")
        # the provider keeps a pull-only link: it has standing, so the refusal is audited
        links.create_link(s, account_id=acc, provider_id=p.id, push=False, pull=True, sensitive=False,
                          expires_at=None, actor="t")
    raws = [part10(), part10(), part10()]
    results = store_many(svc, p, acc, raws)
    assert [r.outcome for r in results] == [Outcome.REFUSED] * 3
    assert rows(svc, acc) == [] and keys(svc, acc) == []
    assert audited_sops(svc, acc, "instance.refused") == sorted(sop_of(r) for r in raws)
    assert audit_entries(svc, acc, "instance.stored") == []


# -- 8. the object store fails for one item ---------------------------------------
def test_object_store_failure_fails_only_that_item(pushing, monkeypatch):
    svc, acc, p = pushing
    study = generate_uid()
    raws = [part10(study=study), part10(study=study), part10(study=study)]
    bad = sop_of(raws[1])
    real_put = svc.store.put

    def flaky(key, chunks):
        if bad in key:
            raise StorageError("bucket unreachable")
        return real_put(key, chunks)

    monkeypatch.setattr(svc.store, "put", flaky)
    results = store_many(svc, p, acc, raws)
    assert [r.outcome for r in results] == [Outcome.STORED, Outcome.FAILED, Outcome.STORED]
    assert "object store" in results[1].reason and results[1].sop_instance_uid == bad
    good = sorted([sop_of(raws[0]), sop_of(raws[2])])
    assert sorted(r.sop_uid for r in rows(svc, acc)) == good
    assert len(keys(svc, acc)) == 2 and not any(bad in k for k in keys(svc, acc))
    assert audited_sops(svc, acc, "instance.stored") == good


def test_a_batch_whose_objects_cannot_be_made_durable_stores_nothing(pushing, monkeypatch):
    # the filesystem defers a batch's directory fsyncs to its end: if that fails, no object
    # of the batch is known durable, so none is reported stored, indexed, or left behind
    svc, acc, p = pushing
    study, series = generate_uid(), generate_uid()
    raws = [part10(study=study, series=series), part10(study=study, series=series)]
    real, real_put = svc.store._fsync_dir, svc.store.put
    put_returned = []
    # the series directory, which a batch syncs once at its end (the directories above it
    # are synced as they are created)
    monkeypatch.setattr(svc.store, "_fsync_dir", lambda d: (_ for _ in ()).throw(OSError(5, "I/O error"))
                        if d.endswith(series) else real(d))
    monkeypatch.setattr(svc.store, "put", lambda k, c: put_returned.append(real_put(k, c)))
    results = store_many(svc, p, acc, raws)
    assert len(put_returned) == 2  # each put went through: the failure came at the batch's end
    assert [r.outcome for r in results] == [Outcome.FAILED, Outcome.FAILED]
    assert all("object store" in r.reason for r in results)
    monkeypatch.setattr(svc.store, "_fsync_dir", real)
    assert rows(svc, acc) == [] and keys(svc, acc) == []
    assert audited_sops(svc, acc, "instance.stored") == []


# -- review findings: what changes while the objects are being written ---------
@pytest.fixture
def owned(services):
    """An account with a pushing provider, plus the owner's principal (who may delete)."""
    tag = secrets.token_hex(4)
    with services.db.session(write=True) as s:
        owner = create_user(s, f"own-{tag}@example.org", "password")
        acc = create_account(s, owner, None, actor="t")
        prv = add_provider(s, name=f"P{tag}", ae_title=f"PACS{tag}".upper(), networks=[], host=None, port=None,
                           actor="t")
        link = links.create_link(s, account_id=acc.id, provider_id=prv.id, push=True, pull=False,
                                 sensitive=False, expires_at=None, actor="t")
        ids = acc.id, owner.id, prv.id, link.id
    acc_id, owner_id, prv_id, link_id = ids
    return (services, acc_id, Principal("user", owner_id, f"user:own-{tag}@example.org", "127.0.0.1"),
            Principal("provider", prv_id, f"provider:P{tag}", "127.0.0.1"), link_id)


def test_repeat_of_a_refused_instance_is_refused_not_acknowledged(linked):
    svc, acc, p, _ = linked(sensitive=False)
    study = generate_uid()
    stored = part10(study=study)
    assert store_many(svc, p, acc, [stored])[0].outcome is Outcome.STORED
    # the study becomes sensitive (a labelled instance through a sensitive-capable owner path is not needed:
    # mark it directly), then the same instance is sent twice in one batch
    with svc.db.session(write=True) as s:
        s.execute(Study.__table__.update().where(Study.study_uid == study).values(sensitive=True, labels="PSY"))
    results = store_many(svc, p, acc, [stored, stored])
    assert [r.outcome for r in results] == [Outcome.REFUSED, Outcome.REFUSED]
    assert len(audit_entries(svc, acc, "instance.refused")) == 2


def test_link_revoked_while_objects_are_written_refuses_and_removes_them(owned, monkeypatch):
    svc, acc, _owner, p, link_id = owned
    real_put = svc.store.put
    calls = []

    def put_then_revoke(key, chunks):
        n = real_put(key, chunks)
        if not calls:
            with svc.db.session(write=True) as s:
                links.revoke_link(s, link_id, actor="holder")
        calls.append(key)
        return n

    monkeypatch.setattr(svc.store, "put", put_then_revoke)
    results = store_many(svc, p, acc, [part10(), part10()])
    assert len(calls) == 2  # both objects were written before the commit
    assert [r.outcome for r in results] == [Outcome.REFUSED, Outcome.REFUSED]
    assert rows(svc, acc) == [] and keys(svc, acc) == []


def test_study_purged_while_objects_are_written_is_not_acknowledged(owned, monkeypatch):
    from gateway.archive.erasure import delete_study, purge

    svc, acc, owner, p, _ = owned
    study = generate_uid()
    assert store_many(svc, p, acc, [part10(study=study)])[0].outcome is Outcome.STORED
    real_put = svc.store.put

    def put_then_purge(key, chunks):
        n = real_put(key, chunks)
        delete_study(svc.db, owner, acc, study)
        purge(svc.db, svc.store)  # the study's rows and objects are gone before the commit
        return n

    monkeypatch.setattr(svc.store, "put", put_then_purge)
    late = part10(study=study)
    (result,) = store_many(svc, p, acc, [late])
    assert result.outcome is Outcome.UNAVAILABLE
    monkeypatch.setattr(svc.store, "put", real_put)
    assert rows(svc, acc) == [] and keys(svc, acc) == []


def test_one_instance_the_database_refuses_does_not_fail_the_batch(pushing, monkeypatch):
    svc, acc, p = pushing
    raws = [part10(), part10(), part10()]
    bad = sop_of(raws[1])
    real_index = svc.ingest._index

    def index_refusing_one(s, principal, account_id, items, known):
        if any(i.header.sop_instance_uid == bad for i in items):
            raise ValueError("value not accepted by the database")
        return real_index(s, principal, account_id, items, known)

    monkeypatch.setattr(svc.ingest, "_index", index_refusing_one)
    results = store_many(svc, p, acc, raws)
    assert [r.outcome for r in results] == [Outcome.STORED, Outcome.FAILED, Outcome.STORED]
    assert sorted(r.sop_uid for r in rows(svc, acc)) == sorted([sop_of(raws[0]), sop_of(raws[2])])
    assert len(keys(svc, acc)) == 2


def test_identical_concurrent_writes_get_their_own_keys(pushing):
    svc, acc, p = pushing
    raw = part10()
    from gateway.archive import ingest as ingest_module

    item = ingest_module.IngestService._prepare(svc.ingest, 0, io.BytesIO(raw), len(raw), None, True)
    h = item.header
    from storage.keys import instance_key

    a = instance_key(acc, h.study_uid, h.series_uid, h.sop_instance_uid, item.digest, nonce="0" * 8)
    b = instance_key(acc, h.study_uid, h.series_uid, h.sop_instance_uid, item.digest, nonce="1" * 8)
    assert a != b and a.startswith(b[: -len(".11111111.dcm")])
    # and a stored instance's key carries a nonce
    assert store_many(svc, p, acc, [raw])[0].outcome is Outcome.STORED
    (row,) = rows(svc, acc)
    assert row.object_key.count(".") >= 3 + h.sop_instance_uid.count(".")
