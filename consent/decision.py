"""The one consent decision every image path asks before it moves a byte.

``decide(session, principal, action, account)`` answers "may P do A on
account X (for a study that is / is not sensitive)?" with a reason a person
can read. It consults the database on every call: there is no cache, so a
revocation or an expiry holds on the very next association or request.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from consent.models import Link, Provider, Share
from consent.providers import address_allowed
from gateway.db.base import utcnow


class Action(str, enum.Enum):
    STORE = "store"  # push images into the account
    READ = "read"  # query / retrieve images
    DELETE = "delete"  # delete studies
    MANAGE = "manage"  # shares, links, account deletion


@dataclass(frozen=True)
class Principal:
    """Who is asking: a signed-in user, a registered provider, or the operator."""

    kind: str  # "user" | "provider" | "operator"
    id: str
    label: str  # for audit entries, e.g. "user:alice@example.org"
    source: str | None = None  # peer IP address

    @classmethod
    def for_user(cls, user_id: str, email: str, source: str | None = None) -> "Principal":
        return cls("user", user_id, f"user:{email}", source)

    @classmethod
    def for_provider(cls, provider: Provider, source: str | None = None) -> "Principal":
        """A registered provider, labelled the same way wherever it is met (HTTP, DIMSE, C-MOVE destination)."""
        return cls("provider", provider.id, f"provider:{provider.name} ({provider.ae_title})", source)

    @classmethod
    def operator(cls, source: str | None = None, label: str = "operator") -> "Principal":
        return cls("operator", "operator", label, source)


@dataclass(frozen=True)
class AccountRef:
    id: str
    owner_id: str
    deleted: bool = False


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str
    #: False when the principal has no standing on the account at all, so the
    #: adapters answer "not found" (404, unknown called AE) and reveal nothing.
    visible: bool
    #: whether sensitive studies are within this grant (used to filter reads)
    sensitive_ok: bool = False

    def __bool__(self) -> bool:  # pragma: no cover - convenience
        return self.allowed


_USER_ROLE_ACTIONS = {
    "viewer": {Action.READ},
    "editor": {Action.READ, Action.STORE, Action.DELETE},
}


def decide(
    session: Session,
    principal: Principal,
    action: Action,
    account: AccountRef | None,
    *,
    sensitive: bool = False,
    now: datetime | None = None,
) -> Decision:
    now = now or utcnow()
    if account is None or account.deleted:
        return Decision(False, "no such account", visible=False)

    if principal.kind == "operator":
        if action is Action.MANAGE:
            return Decision(True, "operator manages providers and links", visible=True)
        return Decision(
            False, "the operator has no access to images without the holder's consent", visible=True
        )

    if principal.kind == "user":
        if principal.id == account.owner_id:
            return Decision(True, "owner of the account", visible=True, sensitive_ok=True)
        share = _active_share(session, account.id, principal.id, now)
        if share is None:
            return Decision(False, "no share on this account", visible=False)
        if action not in _USER_ROLE_ACTIONS.get(share.role, set()):
            return Decision(
                False, f"a {share.role} share does not allow {action.value}", visible=True,
                sensitive_ok=share.sensitive,
            )
        if sensitive and not share.sensitive:
            return Decision(
                False, "the study is sensitive and the share lacks the sensitive flag",
                visible=True, sensitive_ok=False,
            )
        return Decision(True, f"{share.role} share {share.id}", visible=True, sensitive_ok=share.sensitive)

    if principal.kind == "provider":
        provider = session.connection().execute(_PROVIDER, {"id": principal.id}).first()
        if provider is None or provider.removed_at is not None:
            return Decision(False, "provider is not registered", visible=False)
        if principal.source is not None and not address_allowed(provider, principal.source):
            return Decision(
                False, f"source address {principal.source} is outside the provider's networks",
                visible=False,
            )
        links = _active_links(session, account.id, provider.id, now)
        if not links:
            return Decision(False, "no link in force between this provider and the account", visible=False)
        if action is Action.STORE:
            usable = [l for l in links if l.push]
            scope = "push"
        elif action is Action.READ:
            usable = [l for l in links if l.pull]
            scope = "pull"
        else:
            return Decision(False, f"providers may not {action.value}", visible=True)
        if not usable:
            return Decision(
                False, f"the provider's link has no {scope} consent",
                visible=True, sensitive_ok=False,
            )
        sensitive_ok = any(l.sensitive for l in usable)
        if sensitive and not sensitive_ok:
            return Decision(
                False,
                "the study is sensitive and the provider's link lacks the sensitive flag",
                visible=True, sensitive_ok=False,
            )
        link = next((l for l in usable if l.sensitive), usable[0]) if sensitive else usable[0]
        return Decision(True, f"{scope} link {link.id}", visible=True, sensitive_ok=sensitive_ok)

    return Decision(False, "unknown kind of principal", visible=False)


def _active_share(session: Session, account_id: str, user_id: str, now: datetime) -> Share | None:
    rows = session.scalars(
        select(Share).where(
            Share.account_id == account_id, Share.user_id == user_id, Share.revoked_at.is_(None)
        )
    ).all()
    live = [s for s in rows if s.expires_at is None or s.expires_at > now]
    if not live:
        return None
    # the widest grant wins: editor over viewer, sensitive over not
    return max(live, key=lambda s: (s.role == "editor", s.sensitive))


# built once so that their compiled SQL is reused: decide() runs for every C-STORE
_PROVIDER = select(Provider.id, Provider.networks, Provider.removed_at).where(Provider.id == bindparam("id"))
_LINKS = select(Link.id, Link.push, Link.pull, Link.sensitive, Link.expires_at).where(
    Link.account_id == bindparam("account"), Link.provider_id == bindparam("provider"), Link.revoked_at.is_(None)
)


def _active_links(session: Session, account_id: str, provider_id: str, now: datetime) -> list:  # type: ignore[type-arg]
    """The provider's links with the account in force at ``now`` (rows: id, push, pull, sensitive, expires_at)."""
    rows = session.connection().execute(_LINKS, {"account": account_id, "provider": provider_id}).all()
    return [l for l in rows if l.expires_at is None or l.expires_at > now]


def has_active_link(session: Session, account_id: str, provider_id: str, now: datetime | None = None) -> bool:
    """Whether the provider has any link in force with the account (DIMSE association policy)."""
    return bool(_active_links(session, account_id, provider_id, now or utcnow()))
