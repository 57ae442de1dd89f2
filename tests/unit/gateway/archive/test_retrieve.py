"""The retrieve service in-process: what a caller may take, how it is audited, where a C-MOVE may send."""

from __future__ import annotations

import io

import pytest
from sqlalchemy import select, update

from consent import links
from consent.decision import Principal
from consent.errors import NotPermitted, NotVisible
from consent.providers import add_provider
from gateway.archive.query import QueryError
from gateway.archive.retrieve import NotFound
from gateway.db.models import AuditEntry, Study
from gateway.errors import NotFound as NotFoundKind
from gateway.errors import classify
from gateway.identity.accounts import create_account, create_user
from tests.support.data import uids, variant


@pytest.fixture
def archive(services):
    """An account with a plain study (two instances) and a sensitive one; providers: a reader (pull,
    no sensitive flag, host+port), a writer (push only), a third party with sensitive pull consent and
    one without any link."""
    with services.db.session(write=True) as s:
        owner = create_user(s, "r@example.org", "password")
        acc = create_account(s, owner, None, actor="t")
        made = {}
        for name, link in (("READER", (False, True, False)), ("WRITER", (True, False, False)),
                           ("THIRD", (False, True, True)), ("STRANGER", None), ("NOWHERE", (False, True, True))):
            host, port = (None, None) if name == "NOWHERE" else ("127.0.0.1", 11112)
            prv = add_provider(s, name=name.title(), ae_title=name, networks=[], host=host, port=port, actor="t")
            if link is not None:
                push, pull, sensitive = link
                links.create_link(s, account_id=acc.id, provider_id=prv.id, push=push, pull=pull,
                                  sensitive=sensitive, expires_at=None, actor="t")
            made[name] = Principal.for_provider(prv, "127.0.0.1")
        acc_id, owner_id = acc.id, owner.id
    holder = Principal.for_user(owner_id, "r@example.org")
    plain = variant()
    plain_study = uids(plain)[0]
    bodies = [plain, variant(study=plain_study), variant()]
    for b in bodies:
        assert services.ingest.store_instance(holder, acc_id, io.BytesIO(b), len(b)).outcome.ok
    sensitive_study = uids(bodies[2])[0]
    with services.db.session(write=True) as s:
        s.execute(update(Study).where(Study.study_uid == sensitive_study).values(sensitive=True))
    return services, acc_id, holder, made, plain_study, sensitive_study


def audit_rows(svc, acc):
    with svc.db.session() as s:
        return [(e.action, e.study_uid, e.detail) for e in s.scalars(
            select(AuditEntry).where(AuditEntry.account_id == acc, AuditEntry.action.like("study.%"))
            .order_by(AuditEntry.id))]


def test_select_names_what_the_caller_may_see(archive):
    svc, acc, holder, p, plain, sensitive = archive
    sel = svc.retrieve.select(p["READER"], acc, plain)
    assert len(sel.instances) == 2 and {r.study_uid for r in sel.instances} == {plain}
    assert sel.withheld_sensitive == 0
    assert len(svc.retrieve.select(holder, acc, sensitive).instances) == 1
    both = svc.retrieve.select(p["READER"], acc, None, study_uids=[plain, sensitive], require_any=False)
    assert {r.study_uid for r in both.instances} == {plain}  # partly sensitive: what may be seen


def test_a_sensitive_study_is_not_found_and_counted_as_withheld(archive):
    svc, acc, _, p, _, sensitive = archive
    with pytest.raises(NotFound) as refused:
        svc.retrieve.select(p["READER"], acc, sensitive)
    assert classify(refused.value) is NotFoundKind  # exactly like what does not exist
    sel = svc.retrieve.select(p["READER"], acc, None, study_uids=[sensitive], require_any=False)
    assert (sel.instances, sel.withheld_sensitive) == ([], 1)
    sel = svc.retrieve.select(p["READER"], acc, None, study_uids=["1.2.3.4"], require_any=False)
    assert (sel.instances, sel.withheld_sensitive) == ([], 0)
    sel = svc.retrieve.select(p["THIRD"], acc, sensitive)  # the sensitive flag: it is there
    assert len(sel.instances) == 1


def test_select_refuses_without_standing_or_pull_and_checks_uids(archive):
    svc, acc, _, p, plain, _ = archive
    with pytest.raises(NotVisible):
        svc.retrieve.select(p["STRANGER"], acc, plain)
    with pytest.raises(NotPermitted, match="no pull consent"):
        svc.retrieve.select(p["WRITER"], acc, plain)
    with pytest.raises(QueryError, match="is not a valid UID"):
        svc.retrieve.select(p["READER"], acc, "1.2.x")


def test_a_retrieval_audits_once_per_study_when_the_answer_is_built(archive):
    svc, acc, _, p, plain, _ = archive
    before = len(audit_rows(svc, acc))
    with svc.retrieve.retrieval(p["READER"], acc, "retrieved", {"via": "wado-rs"}, plain) as r:
        assert len(r.instances) == 2
        assert len(audit_rows(svc, acc)) == before  # not yet: the answer is not built
        r.detail["extra"] = 1
    rows = audit_rows(svc, acc)[before:]
    assert [(a, s) for a, s, _ in rows] == [("study.retrieved", plain)]
    assert '"instances": 2' in rows[0][2] and '"extra": 1' in rows[0][2]


def test_a_retrieval_refused_inside_writes_no_audit(archive):
    svc, acc, _, p, plain, _ = archive
    before = len(audit_rows(svc, acc))
    with pytest.raises(RuntimeError):
        with svc.retrieve.retrieval(p["READER"], acc, "retrieved", None, plain):
            raise RuntimeError("406 for the transfer syntax")
    with pytest.raises(NotVisible):
        with svc.retrieve.retrieval(p["STRANGER"], acc, "retrieved", None, plain):
            pass  # pragma: no cover
    assert len(audit_rows(svc, acc)) == before


def test_move_destination_is_the_caller_or_holds_its_own_consent(archive):
    svc, acc, _, p, plain, sensitive = archive
    reader = p["READER"]
    refs = svc.retrieve.select(reader, acc, plain).instances
    assert svc.retrieve.move_destination(reader, acc, "READER", refs) == (("127.0.0.1", 11112), "")
    assert svc.retrieve.move_destination(reader, acc, "THIRD", refs) == (("127.0.0.1", 11112), "")
    assert svc.retrieve.move_destination(reader, acc, "NOBODY", refs) == (
        None, "move destination 'NOBODY' is not a registered provider")
    assert svc.retrieve.move_destination(reader, acc, "NOWHERE", refs) == (
        None, "move destination 'NOWHERE' has no host and port")
    assert svc.retrieve.move_destination(reader, acc, "STRANGER", refs) == (
        None, "destination has no consent for this account")
    assert svc.retrieve.move_destination(reader, acc, "WRITER", refs) == (
        None, "destination has no consent for this account")
    sensitive_refs = svc.retrieve.select(p["THIRD"], acc, sensitive).instances
    assert svc.retrieve.move_destination(p["THIRD"], acc, "READER", sensitive_refs) == (
        None, "destination's link lacks the sensitive flag")


def test_open_read_and_file_give_the_stored_bytes(archive):
    svc, acc, holder, _, plain, _ = archive
    ref = svc.retrieve.select(holder, acc, plain).instances[0]
    whole = svc.retrieve.read(ref)
    assert len(whole) == ref.size and whole[128:132] == b"DICM"
    with svc.retrieve.file(ref, buffer_size=64) as fp:
        fp.seek(128)
        assert fp.read(4) == b"DICM" and fp.tell() == 132
        fp.seek(-4, io.SEEK_END)
        assert fp.read() == whole[-4:]
    assert b"".join(svc.retrieve.open(ref, 128, 132)) == b"DICM"


def test_hand_over_audits_what_was_handed_over_when_it_ends(archive):
    svc, acc, holder, _, plain, sensitive = archive
    refs = svc.retrieve.select(holder, acc, None, study_uids=[plain, sensitive]).instances
    svc.store.delete(refs[-1].object_key)  # the sensitive study's one instance cannot be read
    before = len(audit_rows(svc, acc))
    items = list(svc.retrieve.hand_over(holder, acc, refs, "c-get", None, lambda: False))
    assert [ds is not None for _, ds in items] == [True, True, False]
    assert str(items[0][1].SOPInstanceUID) == refs[0].sop_uid
    rows = audit_rows(svc, acc)[before:]
    assert [(a, s) for a, s, _ in rows] == [("study.c-get", plain)] and '"instances": 2' in rows[0][2]


def test_hand_over_stops_when_cancelled_and_still_audits(archive):
    svc, acc, holder, _, plain, _ = archive
    refs = svc.retrieve.select(holder, acc, plain).instances
    asked = iter([False, True])
    before = len(audit_rows(svc, acc))
    items = list(svc.retrieve.hand_over(holder, acc, refs, "c-move", {"destination": "X"}, lambda: next(asked)))
    assert len(items) == 2 and items[0][0] == refs[0] and items[1] is None
    rows = audit_rows(svc, acc)[before:]
    assert [(a, s) for a, s, _ in rows] == [("study.c-move", plain)]
    assert '"instances": 1' in rows[0][2] and '"destination": "X"' in rows[0][2]
    closed = svc.retrieve.hand_over(holder, acc, refs, "c-get", None, lambda: False)
    next(closed)
    closed.close()  # the caller stopped early: what it took is audited at once
    assert len(audit_rows(svc, acc)) == len(rows) + before + 1
