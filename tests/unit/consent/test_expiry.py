"""Expiry events: one per link or share that reached its expiry, recorded once."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from consent import links, shares
from consent.expiry import record_expiries
from consent.models import ConsentEvent
from consent.providers import add_provider
from gateway.db.base import utcnow
from gateway.identity.accounts import create_account, create_user


def test_each_expiry_is_recorded_once_and_revoked_or_live_grants_never(services):
    soon = utcnow() + timedelta(minutes=5)
    with services.db.session(write=True) as s:
        owner = create_user(s, "e@example.org", "password")
        friend = create_user(s, "f@example.org", "password")
        acc = create_account(s, owner, None, actor="t")
        prv = add_provider(s, name="P", ae_title="EXPIRE", networks=[], host=None, port=None, actor="t")
        ln = links.create_link(s, account_id=acc.id, provider_id=prv.id, push=True, pull=False, sensitive=False,
                               expires_at=soon, actor="t")
        sh = shares.grant_share(s, account_id=acc.id, user_id=friend.id, role="viewer", sensitive=False,
                                expires_at=soon, actor="t")
        revoked = links.create_link(s, account_id=acc.id, provider_id=prv.id, push=True, pull=False,
                                    sensitive=False, expires_at=soon, actor="t")
        links.revoke_link(s, revoked.id, actor="t")
        links.create_link(s, account_id=acc.id, provider_id=prv.id, push=True, pull=False, sensitive=False,
                          expires_at=None, actor="t")
    with services.db.session(write=True) as s:
        assert record_expiries(s) == 0  # nothing has expired yet
    later = soon + timedelta(seconds=1)
    with services.db.session(write=True) as s:
        assert record_expiries(s, later) == 2
    with services.db.session(write=True) as s:
        assert record_expiries(s, later + timedelta(days=1)) == 0
        events = s.scalars(select(ConsentEvent).where(ConsentEvent.change == "expired")).all()
    assert sorted(e.subject_id for e in events) == sorted([ln.id, sh.id])
    assert {e.actor for e in events} == {"system:expire-consents"}
