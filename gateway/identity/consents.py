"""Consent changes as the CLI and the REST API make them: consent rules + audit.

The rules live in ``consent``; this module adds what the account holder's
audit trail must show (who granted or revoked what, when) and the JSON views.
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy.orm import Session

from consent import links as links_mod
from consent import providers as providers_mod
from consent import shares as shares_mod
from consent.decision import in_force
from consent.errors import AlreadyDone, ConsentError, UnknownParty
from consent.models import Link, Provider, Share
from gateway.db.models import User
from gateway.identity.accounts import UnknownAccount, get_account, user_for_share
from gateway.identity.credentials import issue_token
from gateway.ops import audit


def parse_expiry(value: str | None) -> datetime | None:
    """ISO-8601; a time without a zone is taken as UTC."""
    if value is None or value == "":
        return None
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ConsentError(f"{value!r} is not an ISO-8601 date-time (e.g. 2027-01-31T12:00:00Z)") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc)


def _iso(dt: datetime | None) -> str | None:
    return dt.isoformat() if dt else None


def provider_view(p: Provider) -> dict:
    return {
        "id": p.id, "name": p.name, "ae_title": p.ae_title,
        "networks": p.networks.split(",") if p.networks else [],
        "host": p.host, "port": p.port, "created": _iso(p.created_at),
    }


def add_provider(
    s: Session, *, name: str, ae_title: str, networks: list[str], host: str | None, port: int | None, actor: str
) -> dict:
    provider = providers_mod.add_provider(
        s, name=name, ae_title=ae_title, networks=networks, host=host, port=port, actor=actor
    )
    token, _ = issue_token(s, provider_id=provider.id)
    return {**provider_view(provider), "token": token}


def remove_provider(s: Session, provider_id: str, *, actor: str) -> dict:
    provider = providers_mod.remove_provider(s, provider_id, actor=actor)
    return {**provider_view(provider), "removed": _iso(provider.removed_at)}


def issue_provider_token(s: Session, provider_id: str) -> dict:
    provider = s.get(Provider, provider_id)
    if provider is None or provider.removed_at is not None:
        raise UnknownParty(f"no provider {provider_id}")
    token, row = issue_token(s, provider_id=provider.id)
    return {"provider": provider.id, "token": token, "expires": _iso(row.expires_at)}


def link_view(s: Session, link: Link) -> dict:
    provider = s.get(Provider, link.provider_id)
    return {
        "id": link.id, "account": link.account_id, "provider_id": link.provider_id,
        "provider": provider.name if provider else None,
        "push": link.push, "pull": link.pull, "sensitive": link.sensitive,
        "expires": _iso(link.expires_at), "created": _iso(link.created_at), "created_by": link.created_by,
        "revoked": _iso(link.revoked_at), "revoked_by": link.revoked_by,
        "in_force": in_force(link),
    }


def _require_account(s: Session, account_id: str) -> None:
    if get_account(s, account_id) is None:
        raise UnknownAccount(f"no account {account_id}")


def create_link(
    s: Session, *, account_id: str, provider_id: str, push: bool, pull: bool, sensitive: bool,
    expires: str | datetime | None, actor: str, source: str | None = None,
) -> dict:
    _require_account(s, account_id)
    expires_at = parse_expiry(expires) if isinstance(expires, str) or expires is None else expires
    link = links_mod.create_link(
        s, account_id=account_id, provider_id=provider_id, push=push, pull=pull,
        sensitive=sensitive, expires_at=expires_at, actor=actor,
    )
    view = link_view(s, link)
    audit.record(s, account_id=account_id, actor=actor, action="link.created", source=source,
                 detail={k: view[k] for k in ("id", "provider", "provider_id", "push", "pull", "sensitive", "expires")})
    return view


def revoke_link(s: Session, link_id: str, *, actor: str, account_id: str | None = None, source: str | None = None) -> dict:
    link = links_mod.revoke_link(s, link_id, actor=actor, account_id=account_id)
    view = link_view(s, link)
    audit.record(s, account_id=link.account_id, actor=actor, action="link.revoked", source=source,
                 detail={"id": link.id, "provider": view["provider"]})
    return view


def list_links(s: Session, account_id: str | None = None, *, in_force_only: bool = False) -> list[dict]:
    return [link_view(s, l) for l in links_mod.list_links(s, account_id=account_id, in_force_only=in_force_only)]


def share_view(s: Session, share: Share) -> dict:
    user = s.get(User, share.user_id)
    return {
        "id": share.id, "account": share.account_id, "email": user.email if user else None,
        "role": share.role, "sensitive": share.sensitive, "expires": _iso(share.expires_at),
        "created": _iso(share.created_at), "revoked": _iso(share.revoked_at),
        "in_force": in_force(share),
    }


def grant_share(
    s: Session, *, account_id: str, email: str, role: str, sensitive: bool, expires: str | None,
    actor: str, source: str | None = None,
) -> dict:
    _require_account(s, account_id)
    user = user_for_share(s, email)  # an unknown email is not refused: that would reveal who is a user
    account = get_account(s, account_id)
    if account is not None and account.owner_id == user.id:
        raise AlreadyDone("the owner already has full access to the account")
    share = shares_mod.grant_share(
        s, account_id=account_id, user_id=user.id, role=role, sensitive=sensitive,
        expires_at=parse_expiry(expires), actor=actor,
    )
    view = share_view(s, share)
    audit.record(s, account_id=account_id, actor=actor, action="share.granted", source=source,
                 detail={k: view[k] for k in ("id", "email", "role", "sensitive", "expires")})
    return view


def revoke_share(s: Session, share_id: str, *, actor: str, account_id: str | None = None, source: str | None = None) -> dict:
    share = shares_mod.revoke_share(s, share_id, actor=actor, account_id=account_id)
    view = share_view(s, share)
    audit.record(s, account_id=share.account_id, actor=actor, action="share.revoked", source=source,
                 detail={"id": share.id, "email": view["email"], "role": share.role})
    return view


def list_shares(s: Session, account_id: str, *, in_force_only: bool = False) -> list[dict]:
    return [share_view(s, sh) for sh in shares_mod.list_shares(s, account_id, in_force_only=in_force_only)]
