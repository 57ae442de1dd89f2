"""Expiry in the history: a link or share that reached its expiry gets one "expired" event.

The decision needs no such event (``consent.decision.in_force`` already
ignores an expired grant); this keeps ``consent_events`` telling the whole
story. Idempotent: an expiry is recorded once, however often it runs.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from consent.decision import in_force
from consent.history import record_event
from consent.links import link_snapshot
from consent.models import ConsentEvent, Link, Provider, Share
from consent.shares import share_snapshot
from gateway.db.base import utcnow

ACTOR = "system:expire-consents"


def record_expiries(session: Session, now: datetime | None = None, *, actor: str = ACTOR) -> int:
    """Record each link and share that expired (and was not revoked) by ``now``; how many were new."""
    now = now or utcnow()
    recorded = set(session.scalars(select(ConsentEvent.subject_id).where(ConsentEvent.change == "expired")))
    n = 0
    for link in session.scalars(select(Link).where(Link.revoked_at.is_(None), Link.expires_at.is_not(None),
                                                   Link.expires_at <= now)):
        if link.id not in recorded and not in_force(link, now):
            record_event(session, link.account_id, "link", link.id, "expired", actor,
                         link_snapshot(link, session.get(Provider, link.provider_id)))
            n += 1
    for share in session.scalars(select(Share).where(Share.revoked_at.is_(None), Share.expires_at.is_not(None),
                                                     Share.expires_at <= now)):
        if share.id not in recorded and not in_force(share, now):
            record_event(session, share.account_id, "share", share.id, "expired", actor, share_snapshot(share))
            n += 1
    return n
