"""The one consent decision, against a real (SQLite) database."""

from __future__ import annotations

from datetime import timedelta

import pytest

from consent import links, shares
from consent.decision import AccountRef, Action, Principal, decide
from consent.providers import ConsentError, add_provider
from gateway.identity.accounts import create_account, create_user
from gateway.db.base import utcnow


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
