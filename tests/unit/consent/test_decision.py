"""The one consent decision, against a real (SQLite) database."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from consent import links, shares
from consent.decision import (AccountRef, Action, AeNotRecognised, Principal, Reason, decide, decide_association,
                              decide_destination, in_force, require, study_filter, withheld_filter)
from consent.errors import AlreadyDone, NotPermitted, NotVisible, UnknownParty
from consent.models import ConsentEvent
from consent.providers import ConsentError, add_provider, remove_provider
from gateway.db.base import utcnow
from gateway.db.models import Account, Patient, Study, User
from gateway.errors import Conflict, Forbidden, Invalid, NotFound, classify
from gateway.identity.accounts import create_account, create_user


@pytest.fixture
def world(services):
    with services.db.session(write=True) as s:
        owner = create_user(s, "owner@example.org", "password")
        other = create_user(s, "other@example.org", "password")
        acc = create_account(s, owner, None, actor="t")
        prv = add_provider(s, name="P", ae_title="PACS1", networks=["10.0.0.0/8"], host=None, port=None, actor="t")
    return services, AccountRef(acc.id, owner.id), owner, other, prv


def ask(services, principal, action, account, sensitive=False, now=None):
    with services.db.session() as s:
        return decide(s, principal, action, account, sensitive=sensitive, now=now)


def test_owner_may_do_everything_including_sensitive(world):
    svc, acc, owner, _, _ = world
    p = Principal("user", owner.id, "u")
    for action in Action:
        d = ask(svc, p, action, acc, sensitive=True)
        assert d.allowed and d.sensitive_ok


def test_stranger_sees_nothing(world):
    svc, acc, _, other, _ = world
    d = ask(svc, Principal("user", other.id, "u"), Action.READ, acc)
    assert not d.allowed and not d.visible


def test_operator_manages_but_never_reads_images(world):
    svc, acc, *_ = world
    op = Principal("operator", "operator", "operator")
    assert ask(svc, op, Action.MANAGE, acc).allowed
    d = ask(svc, op, Action.READ, acc)
    assert not d.allowed and "consent" in d.reason


def test_shares_viewer_editor_sensitive_expiry_revocation(world):
    svc, acc, _, other, _ = world
    p = Principal("user", other.id, "u")
    with svc.db.session(write=True) as s:
        sh = shares.grant_share(s, account_id=acc.id, user_id=other.id, role="viewer", sensitive=False,
                                expires_at=utcnow() + timedelta(hours=1), actor="t")
    assert ask(svc, p, Action.READ, acc).allowed
    assert not ask(svc, p, Action.STORE, acc).allowed
    assert not ask(svc, p, Action.READ, acc, sensitive=True).allowed
    assert not ask(svc, p, Action.READ, acc, now=utcnow() + timedelta(hours=2)).visible
    with svc.db.session(write=True) as s:
        shares.revoke_share(s, sh.id, actor="t")
    assert not ask(svc, p, Action.READ, acc).visible
    with svc.db.session(write=True) as s:
        shares.grant_share(s, account_id=acc.id, user_id=other.id, role="editor", sensitive=True,
                           expires_at=None, actor="t")
    for action in (Action.READ, Action.STORE, Action.DELETE):
        assert ask(svc, p, action, acc, sensitive=True).allowed
    assert not ask(svc, p, Action.MANAGE, acc).allowed


def test_provider_links_scopes_network_and_expiry(world):
    svc, acc, _, _, prv = world
    inside = Principal("provider", prv.id, "p", "10.1.2.3")
    outside = Principal("provider", prv.id, "p", "192.0.2.1")
    assert not ask(svc, inside, Action.STORE, acc).visible  # no link yet
    with svc.db.session(write=True) as s:
        ln = links.create_link(s, account_id=acc.id, provider_id=prv.id, push=True, pull=False, sensitive=False,
                               expires_at=utcnow() + timedelta(minutes=5), actor="t")
    assert ask(svc, inside, Action.STORE, acc).allowed
    d = ask(svc, inside, Action.READ, acc)
    assert not d.allowed and d.visible and "pull" in d.reason
    assert not ask(svc, inside, Action.STORE, acc, sensitive=True).allowed
    assert not ask(svc, outside, Action.STORE, acc).allowed
    assert not ask(svc, inside, Action.STORE, acc, now=utcnow() + timedelta(minutes=6)).allowed
    assert not ask(svc, inside, Action.DELETE, acc).allowed
    with svc.db.session(write=True) as s:
        links.revoke_link(s, ln.id, actor="t")
    assert not ask(svc, inside, Action.STORE, acc).visible
    with svc.db.session(write=True) as s:
        with pytest.raises(ConsentError, match="already revoked"):
            links.revoke_link(s, ln.id, actor="t")


def test_deleted_account_is_invisible_to_everyone(world):
    svc, acc, owner, _, _ = world
    gone = AccountRef(acc.id, acc.owner_id, deleted=True)
    assert not ask(svc, Principal("user", owner.id, "u"), Action.READ, gone).visible


def test_history_is_kept_for_every_change(world):
    from sqlalchemy import select

    from consent.models import ConsentEvent

    svc, acc, _, _, prv = world
    with svc.db.session(write=True) as s:
        ln = links.create_link(s, account_id=acc.id, provider_id=prv.id, push=True, pull=True, sensitive=True,
                               expires_at=None, actor="alice")
        links.revoke_link(s, ln.id, actor="bob")
    with svc.db.session() as s:
        events = s.scalars(select(ConsentEvent).where(ConsentEvent.subject_id == ln.id).order_by(ConsentEvent.id)).all()
    assert [(e.change, e.actor) for e in events] == [("created", "alice"), ("revoked", "bob")]


# ---------------------------------------------------------------- reasons
def test_each_refusal_names_its_reason(world):
    svc, acc, owner, other, prv = world
    inside = Principal.for_provider(prv, "10.1.2.3")
    assert ask(svc, Principal.for_user(owner.id, "o"), Action.READ, acc).code is Reason.OWNER
    assert ask(svc, Principal.for_user(other.id, "x"), Action.READ, acc).code is Reason.NO_SHARE
    assert ask(svc, Principal.operator(), Action.READ, acc).code is Reason.OPERATOR_NO_IMAGES
    assert ask(svc, Principal.operator(), Action.MANAGE, acc).code is Reason.OPERATOR_MANAGES
    assert ask(svc, inside, Action.READ, acc).code is Reason.NO_LINK
    assert ask(svc, Principal.for_provider(prv, "192.0.2.1"), Action.READ, acc).code is Reason.OUTSIDE_NETWORKS
    assert ask(svc, Principal("provider", "prv_gone", "p"), Action.READ, acc).code is Reason.NOT_REGISTERED
    assert ask(svc, inside, Action.READ, None).code is Reason.NO_ACCOUNT
    with svc.db.session(write=True) as s:
        links.create_link(s, account_id=acc.id, provider_id=prv.id, push=True, pull=False, sensitive=False,
                          expires_at=None, actor="t")
        shares.grant_share(s, account_id=acc.id, user_id=other.id, role="viewer", sensitive=False,
                           expires_at=None, actor="t")
    assert ask(svc, inside, Action.STORE, acc).code is Reason.LINK
    assert ask(svc, inside, Action.READ, acc).code is Reason.NO_SCOPE
    assert ask(svc, inside, Action.DELETE, acc).code is Reason.PROVIDER_ACTION
    d = ask(svc, inside, Action.STORE, acc, sensitive=True)
    assert d.code is Reason.SENSITIVE and "sensitive" in d.reason  # the text stays for people
    viewer = Principal.for_user(other.id, "x")
    assert ask(svc, viewer, Action.READ, acc).code is Reason.SHARE
    assert ask(svc, viewer, Action.STORE, acc).code is Reason.ROLE
    assert ask(svc, viewer, Action.READ, acc, sensitive=True).code is Reason.SENSITIVE


def test_require_raises_not_visible_or_not_permitted(world):
    svc, acc, owner, other, _ = world
    with svc.db.session(write=True) as s:
        shares.grant_share(s, account_id=acc.id, user_id=other.id, role="viewer", sensitive=False,
                           expires_at=None, actor="t")
    with svc.db.session() as s:
        assert require(s, Principal.for_user(owner.id, "o"), Action.DELETE, acc.id).code is Reason.OWNER
        with pytest.raises(NotPermitted) as refused:
            require(s, Principal.for_user(other.id, "x"), Action.DELETE, acc.id)
        assert isinstance(refused.value, PermissionError) and refused.value.decision.code is Reason.ROLE
        assert str(refused.value) == "a viewer share does not allow delete"
        with pytest.raises(NotVisible):
            require(s, Principal.for_user(other.id, "x"), Action.READ, "acc_missing")
        with pytest.raises(NotVisible):
            require(s, Principal.operator(), Action.MANAGE, "acc_missing")


# ---------------------------------------------------------------- in force
class _Grant:
    def __init__(self, revoked_at=None, expires_at=None):
        self.revoked_at, self.expires_at = revoked_at, expires_at


def test_in_force_until_revoked_or_expired():
    now = utcnow()
    assert in_force(_Grant(), now)
    assert in_force(_Grant(expires_at=now + timedelta(seconds=1)), now)
    assert not in_force(_Grant(expires_at=now), now)  # expires at that instant
    assert not in_force(_Grant(expires_at=now - timedelta(days=1)), now)
    assert not in_force(_Grant(revoked_at=now - timedelta(days=1), expires_at=now + timedelta(days=1)), now)
    assert in_force(_Grant(expires_at=now + timedelta(hours=1)))  # now defaults to the present


def test_in_force_is_what_listings_and_decisions_apply(world):
    svc, acc, _, other, prv = world
    with svc.db.session(write=True) as s:
        ln = links.create_link(s, account_id=acc.id, provider_id=prv.id, push=True, pull=False, sensitive=False,
                               expires_at=utcnow() + timedelta(hours=1), actor="t")
        sh = shares.grant_share(s, account_id=acc.id, user_id=other.id, role="viewer", sensitive=False,
                                expires_at=None, actor="t")
    with svc.db.session() as s:
        assert [l.id for l in links.list_links(s, account_id=acc.id, in_force_only=True)] == [ln.id]
        assert [x.id for x in shares.list_shares(s, acc.id, in_force_only=True)] == [sh.id]
    later = utcnow() + timedelta(hours=2)
    assert not ask(svc, Principal.for_provider(prv, "10.0.0.1"), Action.STORE, acc, now=later).visible
    with svc.db.session(write=True) as s:
        shares.revoke_share(s, sh.id, actor="t")
    with svc.db.session() as s:
        assert shares.list_shares(s, acc.id, in_force_only=True) == []


# ---------------------------------------------------------------- study filter
@pytest.fixture
def studies(world):
    """The world's account with one plain, one sensitive and one deleted study (index rows only)."""
    svc, acc, owner, other, prv = world
    with svc.db.session(write=True) as s:
        patient = Patient(account_id=acc.id, patient_key="k", patient_id="P1")
        s.add(patient)
        s.flush()
        for uid, sensitive, deleted in (("1.1", False, False), ("1.2", True, False), ("1.3", False, True)):
            s.add(Study(account_id=acc.id, patient_pk=patient.id, study_uid=uid, sensitive=sensitive,
                        deleted_at=utcnow() if deleted else None))
    return world


def seen(svc, decision):
    with svc.db.session() as s:
        return sorted(s.scalars(select(Study.study_uid).where(study_filter(decision))))


def test_study_filter_hides_deleted_and_sensitive_without_the_flag(studies):
    svc, acc, owner, other, prv = studies
    owner_d = ask(svc, Principal.for_user(owner.id, "o"), Action.READ, acc)
    assert seen(svc, owner_d) == ["1.1", "1.2"]
    with svc.db.session(write=True) as s:
        sh = shares.grant_share(s, account_id=acc.id, user_id=other.id, role="viewer", sensitive=False,
                                expires_at=None, actor="t")
    viewer = ask(svc, Principal.for_user(other.id, "x"), Action.READ, acc)
    assert seen(svc, viewer) == ["1.1"]
    with svc.db.session() as s:
        assert s.scalars(select(Study.study_uid).where(withheld_filter(viewer))).all() == ["1.2"]
        assert s.scalars(select(Study.study_uid).where(withheld_filter(owner_d))).all() == []
    with svc.db.session(write=True) as s:
        shares.revoke_share(s, sh.id, actor="t")
    assert seen(svc, ask(svc, Principal.for_user(other.id, "x"), Action.READ, acc)) == []
    assert seen(svc, ask(svc, Principal.for_user(owner.id, "o"), Action.READ, None)) == []


def test_study_filter_is_per_account(studies):
    svc, acc, owner, *_ = studies
    with svc.db.session(write=True) as s:
        second = create_account(s, s.get(User, owner.id), None, actor="t")
    d = ask(svc, Principal.for_user(owner.id, "o"), Action.READ, AccountRef(second.id, owner.id))
    assert d.allowed and seen(svc, d) == []


# ---------------------------------------------------------------- association
def associate(svc, calling="PACS1", called=None, address="10.1.2.3"):
    with svc.db.session() as s:
        return decide_association(s, calling, called, address)


def test_association_needs_a_provider_in_its_networks_and_a_link_in_force(world):
    svc, acc, *_, prv = world
    with svc.db.session() as s:
        ae = s.get(Account, acc.id).ae_title
    d = associate(svc, "NOBODY", ae)
    assert (d.accepted, d.refused_on, d.code) == (False, AeNotRecognised.CALLING, Reason.NOT_REGISTERED)
    assert d.reason == "calling AE title 'NOBODY' is not a registered provider"
    d = associate(svc, "PACS1", ae, "192.0.2.1")
    assert (d.refused_on, d.code) == (AeNotRecognised.CALLING, Reason.OUTSIDE_NETWORKS)
    for no_address in (None, ""):  # a peer without an address is not inside the provider's networks
        assert associate(svc, "PACS1", ae, no_address).code is Reason.OUTSIDE_NETWORKS
    d = associate(svc, "PACS1", "NO_SUCH_AE", "192.0.2.1")  # the caller's standing is judged first
    assert d.refused_on is AeNotRecognised.CALLING
    d = associate(svc, "PACS1", "NO_SUCH_AE")
    assert (d.refused_on, d.code) == (AeNotRecognised.CALLED, Reason.NO_ACCOUNT)
    d = associate(svc, "PACS1", ae)
    assert (d.refused_on, d.code) == (AeNotRecognised.CALLED, Reason.NO_LINK)
    with svc.db.session(write=True) as s:
        ln = links.create_link(s, account_id=acc.id, provider_id=prv.id, push=False, pull=True, sensitive=False,
                               expires_at=None, actor="t")
    d = associate(svc, " PACS1 ", f"{ae}  ")
    assert d.accepted and d.account_id == acc.id and d.reason == "link in force"
    assert d.principal == Principal.for_provider(prv, "10.1.2.3")
    with svc.db.session(write=True) as s:
        links.revoke_link(s, ln.id, actor="t")
    assert associate(svc, "PACS1", ae).code is Reason.NO_LINK


def test_association_to_a_deleted_account_is_refused_on_the_called_ae(world):
    svc, acc, *_, prv = world
    with svc.db.session(write=True) as s:
        links.create_link(s, account_id=acc.id, provider_id=prv.id, push=True, pull=False, sensitive=False,
                          expires_at=None, actor="t")
        account = s.get(Account, acc.id)
        account.deleted_at, ae = utcnow(), account.ae_title
    assert associate(svc, "PACS1", ae).refused_on is AeNotRecognised.CALLED


# ---------------------------------------------------------------- C-MOVE destination
def test_move_destination_is_the_caller_or_holds_its_own_pull_consent(world):
    svc, acc, *_, prv = world
    with svc.db.session(write=True) as s:
        dest = add_provider(s, name="D", ae_title="DEST", networks=[], host="h", port=104, actor="t")
    caller = Principal.for_provider(prv, "10.1.2.3")
    with svc.db.session() as s:
        assert decide_destination(s, caller, prv, acc.id, sensitive=True).allowed
        assert decide_destination(s, caller, dest, acc.id, sensitive=False).code is Reason.NO_LINK
    with svc.db.session(write=True) as s:
        links.create_link(s, account_id=acc.id, provider_id=dest.id, push=False, pull=True, sensitive=False,
                          expires_at=None, actor="t")
    with svc.db.session() as s:
        assert decide_destination(s, caller, dest, acc.id, sensitive=False).allowed
        assert decide_destination(s, caller, dest, acc.id, sensitive=True).code is Reason.SENSITIVE


# ---------------------------------------------------------------- typed refusals
def test_consent_refusals_are_typed(world):
    svc, acc, _, other, prv = world
    with svc.db.session(write=True) as s:
        with pytest.raises(UnknownParty, match="no provider prv_x"):
            links.create_link(s, account_id=acc.id, provider_id="prv_x", push=True, pull=False, sensitive=False,
                              expires_at=None, actor="t")
        with pytest.raises(UnknownParty, match="no link lnk_x"):
            links.revoke_link(s, "lnk_x", actor="t")
        with pytest.raises(UnknownParty, match="no share shr_x"):
            shares.revoke_share(s, "shr_x", actor="t")
        with pytest.raises(UnknownParty, match="no provider prv_x"):
            remove_provider(s, "prv_x", actor="t")
        with pytest.raises(AlreadyDone, match="already registered"):
            add_provider(s, name="Q", ae_title="PACS1", networks=[], host=None, port=None, actor="t")
        sh = shares.grant_share(s, account_id=acc.id, user_id=other.id, role="viewer", sensitive=False,
                                expires_at=None, actor="t")
        shares.revoke_share(s, sh.id, actor="t")
        with pytest.raises(AlreadyDone, match="already revoked"):
            shares.revoke_share(s, sh.id, actor="t")
        with pytest.raises(ConsentError) as bad:
            shares.grant_share(s, account_id=acc.id, user_id=other.id, role="admin", sensitive=False,
                               expires_at=None, actor="t")
        assert type(bad.value) is ConsentError  # a bad value: neither unknown nor already done
    assert classify(UnknownParty("x")) is NotFound and classify(AlreadyDone("x")) is Conflict
    assert classify(NotPermitted("x")) is Forbidden and classify(ConsentError("x")) is Invalid


def test_removing_a_provider_revokes_its_links_with_history(world):
    svc, acc, _, _, prv = world
    with svc.db.session(write=True) as s:
        ln = links.create_link(s, account_id=acc.id, provider_id=prv.id, push=True, pull=True, sensitive=False,
                               expires_at=None, actor="t")
        remove_provider(s, prv.id, actor="op")
    with svc.db.session() as s:
        changes = s.scalars(select(ConsentEvent.change).where(ConsentEvent.subject_id == ln.id)
                            .order_by(ConsentEvent.id)).all()
    assert changes == ["created", "revoked"]
