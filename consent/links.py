"""Links between an account and a provider: push / pull / sensitive / expiry.

A link is created once and revoked once; changing a link means revoking it
and creating another, so the history (``consent_events``) shows every state.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from consent.decision import in_force
from consent.errors import AlreadyDone, ConsentError, UnknownParty
from consent.history import record_event
from consent.ids import new_id
from consent.models import Link, Provider
from gateway.db.base import utcnow


def create_link(
    session: Session,
    *,
    account_id: str,
    provider_id: str,
    push: bool,
    pull: bool,
    sensitive: bool,
    expires_at: datetime | None,
    actor: str,
) -> Link:
    provider = session.get(Provider, provider_id)
    if provider is None or provider.removed_at is not None:
        raise UnknownParty(f"no provider {provider_id}")
    if not (push or pull):
        raise ConsentError("a link needs at least one scope: push and/or pull")
    now = utcnow()
    if expires_at is not None and expires_at <= now:
        raise ConsentError("the expiry is in the past")
    link = Link(
        id=new_id("lnk"), account_id=account_id, provider_id=provider_id, push=push, pull=pull,
        sensitive=sensitive, expires_at=expires_at, created_at=now, created_by=actor,
    )
    session.add(link)
    session.flush()
    record_event(session, account_id, "link", link.id, "created", actor, link_snapshot(link, provider))
    return link


def revoke_link(session: Session, link_id: str, *, actor: str, account_id: str | None = None) -> Link:
    link = session.get(Link, link_id)
    if link is None or (account_id is not None and link.account_id != account_id):
        raise UnknownParty(f"no link {link_id}")
    if link.revoked_at is not None:
        raise AlreadyDone(f"link {link_id} was already revoked at {link.revoked_at.isoformat()}")
    link.revoked_at = utcnow()
    link.revoked_by = actor
    record_event(session, link.account_id, "link", link.id, "revoked", actor,
                 link_snapshot(link, session.get(Provider, link.provider_id)))
    return link


def revoke_links_of_provider(session: Session, provider_id: str, *, actor: str) -> int:
    """Revoke every link of a provider being removed, each with its ``consent_events`` row."""
    links = session.scalars(select(Link).where(Link.provider_id == provider_id, Link.revoked_at.is_(None))).all()
    for link in links:
        revoke_link(session, link.id, actor=actor)
    return len(links)


def revoke_links_of_account(session: Session, account_id: str, *, actor: str) -> int:
    """Revoke every link of an account being deleted, each with its ``consent_events`` row."""
    links = session.scalars(select(Link).where(Link.account_id == account_id, Link.revoked_at.is_(None))
                            .order_by(Link.created_at)).all()
    for link in links:
        revoke_link(session, link.id, actor=actor)
    return len(links)


def list_links(session: Session, *, account_id: str | None = None, in_force_only: bool = False) -> list[Link]:
    q = select(Link).order_by(Link.created_at)
    if account_id is not None:
        q = q.where(Link.account_id == account_id)
    links = list(session.scalars(q))
    if in_force_only:
        now = utcnow()
        links = [l for l in links if in_force(l, now)]
    return links


def link_snapshot(link: Link, provider: Provider | None = None) -> dict:
    out = {
        "id": link.id, "account": link.account_id, "provider_id": link.provider_id,
        "push": link.push, "pull": link.pull, "sensitive": link.sensitive,
        "expires": link.expires_at.isoformat() if link.expires_at else None,
        "created": link.created_at.isoformat() if link.created_at else None,
        "created_by": link.created_by,
        "revoked": link.revoked_at.isoformat() if link.revoked_at else None,
        "revoked_by": link.revoked_by,
        "in_force": in_force(link),
    }
    if provider is not None:
        out["provider"] = provider.name
        out["provider_ae_title"] = provider.ae_title
    return out
