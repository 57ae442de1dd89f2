"""Shares: an account holder's grant to another user (viewer / editor)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from consent.decision import in_force
from consent.errors import AlreadyDone, ConsentError, UnknownParty
from consent.history import record_event
from consent.ids import new_id
from consent.models import Share
from gateway.db.base import utcnow

ROLES = ("viewer", "editor")


def grant_share(
    session: Session, *, account_id: str, user_id: str, role: str, sensitive: bool,
    expires_at: datetime | None, actor: str,
) -> Share:
    if role not in ROLES:
        raise ConsentError(f"role must be viewer or editor, not {role!r}")
    now = utcnow()
    if expires_at is not None and expires_at <= now:
        raise ConsentError("the expiry is in the past")
    share = Share(
        id=new_id("shr"), account_id=account_id, user_id=user_id, role=role, sensitive=sensitive,
        expires_at=expires_at, created_at=now, created_by=actor,
    )
    session.add(share)
    session.flush()
    record_event(session, account_id, "share", share.id, "created", actor, share_snapshot(share))
    return share


def revoke_share(session: Session, share_id: str, *, actor: str, account_id: str | None = None) -> Share:
    share = session.get(Share, share_id)
    if share is None or (account_id is not None and share.account_id != account_id):
        raise UnknownParty(f"no share {share_id}")
    if share.revoked_at is not None:
        raise AlreadyDone(f"share {share_id} was already revoked")
    share.revoked_at = utcnow()
    share.revoked_by = actor
    record_event(session, share.account_id, "share", share.id, "revoked", actor, share_snapshot(share))
    return share


def list_shares(session: Session, account_id: str, *, in_force_only: bool = False) -> list[Share]:
    shares = list(session.scalars(select(Share).where(Share.account_id == account_id).order_by(Share.created_at)))
    if in_force_only:
        now = utcnow()
        shares = [s for s in shares if in_force(s, now)]
    return shares


def revoke_shares_of_account(session: Session, account_id: str, *, actor: str) -> int:
    """Revoke every share of an account being deleted, each with its ``consent_events`` row."""
    shares = session.scalars(select(Share).where(Share.account_id == account_id, Share.revoked_at.is_(None))
                             .order_by(Share.created_at)).all()
    for share in shares:
        revoke_share(session, share.id, actor=actor)
    return len(shares)


def share_snapshot(share: Share) -> dict:
    return {
        "id": share.id, "account": share.account_id, "user_id": share.user_id, "role": share.role,
        "sensitive": share.sensitive,
        "expires": share.expires_at.isoformat() if share.expires_at else None,
        "created": share.created_at.isoformat() if share.created_at else None,
        "revoked": share.revoked_at.isoformat() if share.revoked_at else None,
    }
