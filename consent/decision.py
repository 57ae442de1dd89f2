"""Every rule that decides who may do what, in one module.

- ``decide(session, principal, action, account)``: may P do A on account X (for
  a study that is / is not sensitive)? A :class:`Decision` with a
  :class:`Reason` to decide on and a reason a person can read.
- ``require(...)``: the same, raising :class:`~consent.errors.NotVisible` (no
  standing: answer "not found") or :class:`~consent.errors.NotPermitted`.
- ``decide_association(...)``: may this calling AE, from this address, open an
  association to this called AE (DIMSE, at A-ASSOCIATE)?
- ``decide_destination(...)``: may a C-MOVE send an account's studies to this
  registered provider?
- ``in_force(grant, now)``: does a link or share hold at ``now``?
- ``address_allowed(provider, address)``: is a provider calling from one of its networks?
- ``study_filter(decision)``: the SQL criterion "studies this decision lets the
  caller see" (not deleted; not sensitive unless the grant carries the flag)
  that every query, retrieve and deletion applies (``withheld_filter``: what
  it hides as sensitive, so a refusal can say why).

Recording that a grant expired (history, not a rule) is ``consent.expiry``.

It consults the database on every call: there is no cache, so a revocation or
an expiry holds on the very next association or request.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import ColumnElement, and_, bindparam, false, select
from sqlalchemy.orm import Session

from consent.errors import NotPermitted, NotVisible
from consent.models import Link, Provider, Share
from gateway.db.base import utcnow
from gateway.db.models import Account, Study


class Action(str, enum.Enum):
    STORE = "store"  # push images into the account
    READ = "read"  # query / retrieve images
    DELETE = "delete"  # delete studies
    MANAGE = "manage"  # shares, links, account deletion


class Reason(str, enum.Enum):
    """Why a decision came out as it did; decide on this, never on the text."""

    OWNER = "owner"  # allowed: the account holder
    SHARE = "share"  # allowed: a share in force
    LINK = "link"  # allowed: a provider's link in force with the scope
    OPERATOR_MANAGES = "operator-manages"  # allowed: the operator manages providers and links
    NO_ACCOUNT = "no-account"  # no such account, or deleted
    OPERATOR_NO_IMAGES = "operator-no-images"  # the operator never sees images
    NO_SHARE = "no-share"  # the user has no share in force
    ROLE = "role"  # the share's role does not allow the action
    SENSITIVE = "sensitive"  # the study is sensitive; the grant lacks the sensitive flag
    NOT_REGISTERED = "not-registered"  # no such provider, or removed
    OUTSIDE_NETWORKS = "outside-networks"  # the provider calls from outside its networks
    NO_LINK = "no-link"  # no link in force between the provider and the account
    NO_SCOPE = "no-scope"  # the link lacks the push / pull scope the action needs
    PROVIDER_ACTION = "provider-action"  # providers may only store and read
    UNKNOWN_PRINCIPAL = "unknown-principal"


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
    code: Reason = Reason.UNKNOWN_PRINCIPAL
    #: the account decided on (None when there is no such account)
    account_id: str | None = None

    def __bool__(self) -> bool:  # pragma: no cover - convenience
        return self.allowed


class _Grant(Protocol):
    revoked_at: datetime | None
    expires_at: datetime | None


def in_force(grant: _Grant, now: datetime | None = None) -> bool:
    """A link or share holds: not revoked, and not expired at ``now``."""
    if grant.revoked_at is not None:
        return False
    return grant.expires_at is None or grant.expires_at > (now or utcnow())


def address_allowed(provider: Any, address: str) -> bool:
    """True when ``address`` lies in one of the provider's networks (no networks: any)."""
    if not provider.networks:
        return True
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if ip.version == 6 and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return any(ip in ipaddress.ip_network(n) for n in provider.networks.split(","))


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
        return Decision(False, "no such account", visible=False, code=Reason.NO_ACCOUNT)
    acc = account.id

    if principal.kind == "operator":
        if action is Action.MANAGE:
            return Decision(True, "operator manages providers and links", visible=True,
                            code=Reason.OPERATOR_MANAGES, account_id=acc)
        return Decision(False, "the operator has no access to images without the holder's consent", visible=True,
                        code=Reason.OPERATOR_NO_IMAGES, account_id=acc)

    if principal.kind == "user":
        if principal.id == account.owner_id:
            return Decision(True, "owner of the account", visible=True, sensitive_ok=True, code=Reason.OWNER,
                            account_id=acc)
        share = _active_share(session, acc, principal.id, now)
        if share is None:
            return Decision(False, "no share on this account", visible=False, code=Reason.NO_SHARE)
        if action not in _USER_ROLE_ACTIONS.get(share.role, set()):
            return Decision(False, f"a {share.role} share does not allow {action.value}", visible=True,
                            sensitive_ok=share.sensitive, code=Reason.ROLE, account_id=acc)
        if sensitive and not share.sensitive:
            return Decision(False, "the study is sensitive and the share lacks the sensitive flag",
                            visible=True, sensitive_ok=False, code=Reason.SENSITIVE, account_id=acc)
        return Decision(True, f"{share.role} share {share.id}", visible=True, sensitive_ok=share.sensitive,
                        code=Reason.SHARE, account_id=acc)

    if principal.kind == "provider":
        provider = session.connection().execute(_PROVIDER, {"id": principal.id}).first()
        code, links = _standing(session, provider, principal.source, acc, now)
        if code is Reason.NOT_REGISTERED:
            return Decision(False, "provider is not registered", visible=False, code=code)
        if code is Reason.OUTSIDE_NETWORKS:
            return Decision(False, f"source address {principal.source} is outside the provider's networks",
                            visible=False, code=code)
        if code is Reason.NO_LINK:
            return Decision(False, "no link in force between this provider and the account", visible=False,
                            code=code)
        if action is Action.STORE:
            usable = [l for l in links if l.push]
            scope = "push"
        elif action is Action.READ:
            usable = [l for l in links if l.pull]
            scope = "pull"
        else:
            return Decision(False, f"providers may not {action.value}", visible=True,
                            code=Reason.PROVIDER_ACTION, account_id=acc)
        if not usable:
            return Decision(False, f"the provider's link has no {scope} consent", visible=True,
                            sensitive_ok=False, code=Reason.NO_SCOPE, account_id=acc)
        sensitive_ok = any(l.sensitive for l in usable)
        if sensitive and not sensitive_ok:
            return Decision(False, "the study is sensitive and the provider's link lacks the sensitive flag",
                            visible=True, sensitive_ok=False, code=Reason.SENSITIVE, account_id=acc)
        link = next((l for l in usable if l.sensitive), usable[0]) if sensitive else usable[0]
        return Decision(True, f"{scope} link {link.id}", visible=True, sensitive_ok=sensitive_ok,
                        code=Reason.LINK, account_id=acc)

    return Decision(False, "unknown kind of principal", visible=False, code=Reason.UNKNOWN_PRINCIPAL)


def require(session: Session, principal: Principal, action: Action, account_id: str) -> Decision:
    """``decide`` for an account by id: NotVisible without standing, NotPermitted without the right."""
    decision = decide(session, principal, action, load_account(session, account_id))
    if not decision.visible:
        raise NotVisible(decision.reason, decision)
    if not decision.allowed:
        raise NotPermitted(decision.reason, decision)
    return decision


# ---------------------------------------------------------------- which studies
def study_filter(decision: Decision) -> ColumnElement[bool]:
    """SQL criterion on ``Study``: the studies of the decided account this decision lets the caller see.

    Deleted studies are never seen; sensitive ones only within a grant that
    carries the sensitive flag; nothing at all without standing.
    """
    if not decision.visible or decision.account_id is None:
        return false()
    conds = [Study.account_id == decision.account_id, Study.deleted_at.is_(None)]
    if not decision.sensitive_ok:
        conds.append(Study.sensitive.is_(False))
    return and_(*conds)


def withheld_filter(decision: Decision) -> ColumnElement[bool]:
    """SQL criterion on ``Study``: studies that exist for the caller but are withheld as sensitive."""
    if not decision.visible or decision.account_id is None or decision.sensitive_ok:
        return false()
    return and_(Study.account_id == decision.account_id, Study.deleted_at.is_(None), Study.sensitive.is_(True))


# ---------------------------------------------------------------- DIMSE association
class AeNotRecognised(str, enum.Enum):
    """Which AE title an association is refused on (PS3.8 A-ASSOCIATE-RJ reasons)."""

    CALLING = "calling"  # unknown provider, or a source address outside its networks
    CALLED = "called"  # unknown account, or one the provider has no link in force with


@dataclass(frozen=True)
class AssociationDecision:
    accepted: bool
    reason: str
    code: Reason
    refused_on: AeNotRecognised | None = None
    principal: Principal | None = None
    account_id: str | None = None


def decide_association(
    session: Session, calling_ae: str, called_ae: str, address: str, *, now: datetime | None = None
) -> AssociationDecision:
    """Calling AE title + peer address -> provider; called AE title -> account; a link in force between them.

    The refusal names the calling AE for an unknown provider or a source address
    outside its networks, and the called AE for an unknown account or one with
    which the provider has no link in force (a stranger learns nothing about
    which accounts exist). Which scope the link carries is decided per request
    by :func:`decide`.
    """
    calling, called = calling_ae.strip(), called_ae.strip()
    provider = provider_by_ae(session, calling)
    account = session.scalar(select(Account).where(Account.ae_title == called)) if provider is not None else None
    account_id = account.id if account is not None and account.deleted_at is None else None
    # a peer without an address cannot be inside a provider's networks: fail closed ("" parses as no address)
    code, _ = _standing(session, provider, address or "", account_id, now or utcnow())
    if code is Reason.NOT_REGISTERED:
        reason, side = f"calling AE title {calling!r} is not a registered provider", AeNotRecognised.CALLING
    elif code is Reason.OUTSIDE_NETWORKS:
        assert provider is not None
        reason = f"source address {address} is outside the networks of provider {provider.id}"
        side = AeNotRecognised.CALLING
    elif code is Reason.NO_ACCOUNT:
        reason, side = f"called AE title {called!r} is not an account", AeNotRecognised.CALLED
    elif code is Reason.NO_LINK:
        assert provider is not None
        reason, side = f"provider {provider.id} has no link in force with {called!r}", AeNotRecognised.CALLED
    else:
        assert provider is not None
        return AssociationDecision(True, "link in force", Reason.LINK,
                                   principal=Principal.for_provider(provider, address), account_id=account_id)
    return AssociationDecision(False, reason, code, side)


def decide_destination(
    session: Session, requester: Principal, destination: Provider, account_id: str, *, sensitive: bool
) -> Decision:
    """C-MOVE: may ``destination`` receive the account's studies (``sensitive``: one of them is)?

    Either it is the requesting provider, or it holds its own consent (a pull
    link in force, with the sensitive flag for a sensitive study): moving an
    account's images to a third party the holder never authorised would
    bypass the holder's consent. A destination is not asked for its source address.
    """
    if destination.id == requester.id and requester.kind == "provider":
        return Decision(True, "the requesting provider", visible=True, code=Reason.LINK, account_id=account_id)
    return decide(session, Principal.for_provider(destination), Action.READ, load_account(session, account_id),
                  sensitive=sensitive)


# ---------------------------------------------------------------- lookups
def provider_by_ae(session: Session, ae_title: str) -> Provider | None:
    """The registered (not removed) provider with this AE title."""
    return session.scalar(select(Provider).where(Provider.ae_title == ae_title.strip(),
                                                 Provider.removed_at.is_(None)))


_ACCOUNT_REF = select(Account.id, Account.owner_id, Account.deleted_at).where(Account.id == bindparam("id"))


def load_account(session: Session, account_id: str) -> AccountRef | None:
    """What the decision needs of an account, without loading the ORM object (ingest hot path)."""
    row = session.connection().execute(_ACCOUNT_REF, {"id": account_id}).first()
    return None if row is None else AccountRef(row.id, row.owner_id, row.deleted_at is not None)


def _standing(session: Session, provider: Any, source: str | None, account_id: str | None,
              now: datetime) -> tuple[Reason, list]:  # type: ignore[type-arg]
    """A provider's standing on an account: NOT_REGISTERED, OUTSIDE_NETWORKS, NO_ACCOUNT, NO_LINK,
    or LINK with its links in force (rows: id, push, pull, sensitive)."""
    if provider is None or provider.removed_at is not None:
        return Reason.NOT_REGISTERED, []
    if source is not None and not address_allowed(provider, source):
        return Reason.OUTSIDE_NETWORKS, []
    if account_id is None:
        return Reason.NO_ACCOUNT, []
    rows = session.connection().execute(_LINKS, {"account": account_id, "provider": provider.id}).all()
    links = [l for l in rows if in_force(l, now)]
    return (Reason.LINK if links else Reason.NO_LINK), links


def _active_share(session: Session, account_id: str, user_id: str, now: datetime) -> Share | None:
    rows = session.scalars(
        select(Share).where(
            Share.account_id == account_id, Share.user_id == user_id, Share.revoked_at.is_(None)
        )
    ).all()
    live = [s for s in rows if in_force(s, now)]
    if not live:
        return None
    # the widest grant wins: editor over viewer, sensitive over not
    return max(live, key=lambda s: (s.role == "editor", s.sensitive))


# built once so that their compiled SQL is reused: decide() runs for every C-STORE
_PROVIDER = select(Provider.id, Provider.networks, Provider.removed_at).where(Provider.id == bindparam("id"))
_LINKS = select(Link.id, Link.push, Link.pull, Link.sensitive, Link.expires_at, Link.revoked_at).where(
    Link.account_id == bindparam("account"), Link.provider_id == bindparam("provider"), Link.revoked_at.is_(None)
)
