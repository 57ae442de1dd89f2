"""Users and accounts: creation, lookup, and the views the CLI and API print."""

from __future__ import annotations

import secrets
import string

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from consent.decision import Principal, in_force
from consent.errors import ConsentError
from consent.models import Share
from consent.providers import validate_ae_title
from gateway.db.base import utcnow
from gateway.db.models import Account, User
from gateway.errors import Conflict, Invalid, NotFound
from gateway.identity.credentials import NO_PASSWORD, PasswordError, hash_password
from gateway.ops import audit


class AccountError(Invalid, ValueError):
    """An account or user operation that cannot be done: bad input (this class), unknown id, clash."""


class UnknownAccount(AccountError, NotFound):
    """No such account (or user): 404."""


class AccountClash(AccountError, Conflict):
    """The email or AE title is already taken: 409."""


def normalise_email(email: str) -> str:
    e = email.strip().lower()
    local, at, domain = e.partition("@")
    if not at or not local or "." not in domain or " " in e or len(e) > 320:
        raise AccountError(f"{email!r} is not an email address")
    return e


def create_user(session: Session, email: str, password: str) -> User:
    """A user who signs in with ``password``; a user someone already shared with (no password yet)
    is this user, so the shares waiting for the email hold from now on."""
    email = normalise_email(email)
    try:
        password_hash = hash_password(password)  # checks the password's length first
    except PasswordError as exc:
        raise AccountError(str(exc)) from None
    user = session.scalar(select(User).where(User.email == email))
    if user is not None and has_password(user):
        raise AccountClash(f"a user with email {email} already exists")
    if user is None:
        user = User(id=f"usr_{secrets.token_hex(8)}", email=email, created_at=utcnow())
        session.add(user)
    user.password_hash = password_hash
    session.flush()
    return user


def has_password(user: User) -> bool:
    return user.password_hash != NO_PASSWORD


def user_for_share(session: Session, email: str) -> User:
    """The user an email names, made without a password when there is none yet: a share to an
    unknown email is granted like any other (answering otherwise would tell who has an account here)
    and waits for the person to be given a password (``dicomgate user create`` / ``account create``)."""
    email = normalise_email(email)
    user = session.scalar(select(User).where(User.email == email))
    if user is None:
        user = User(id=f"usr_{secrets.token_hex(8)}", email=email, password_hash=NO_PASSWORD, created_at=utcnow())
        session.add(user)
        session.flush()
    return user


def find_user(session: Session, email: str) -> User | None:
    """A user who can sign in (not one only waiting for a password)."""
    user = session.scalar(select(User).where(User.email == normalise_email(email)))
    return user if user is not None and has_password(user) else None


def _random_ae() -> str:
    alphabet = string.ascii_uppercase + string.digits
    return "DG" + "".join(secrets.choice(alphabet) for _ in range(10))


def create_account(session: Session, owner: User, ae_title: str | None, *, actor: str) -> Account:
    if ae_title is not None:
        try:
            ae = validate_ae_title(ae_title)
        except ConsentError as exc:
            raise AccountError(str(exc)) from None
        if session.scalar(select(Account).where(Account.ae_title == ae)) is not None:
            raise AccountClash(f"AE title {ae} is already used by another account")
    else:
        ae = _random_ae()
        while session.scalar(select(Account).where(Account.ae_title == ae)) is not None:
            ae = _random_ae()
    account = Account(id=f"acc_{secrets.token_hex(8)}", ae_title=ae, owner_id=owner.id, created_at=utcnow())
    session.add(account)
    try:
        session.flush()
    except IntegrityError:
        raise AccountClash(f"AE title {ae} is already used by another account") from None
    audit.record(session, account_id=account.id, actor=actor, action="account.created",
                 detail={"ae_title": ae, "owner": owner.email})
    return account


def get_account(session: Session, account_id: str, *, include_deleted: bool = False) -> Account | None:
    account = session.get(Account, account_id)
    if account is None or (account.deleted_at is not None and not include_deleted):
        return None
    return account


def list_accounts(session: Session) -> list[Account]:
    return list(session.scalars(select(Account).where(Account.deleted_at.is_(None)).order_by(Account.created_at)))


def account_view(session: Session, account: Account, base_url: str) -> dict:
    owner = session.get(User, account.owner_id)
    return {
        "id": account.id,
        "ae_title": account.ae_title,
        "dicomweb_url": f"{base_url.rstrip('/')}/accounts/{account.id}/dicomweb",
        "owner": owner.email if owner else None,
        "created": account.created_at.isoformat(),
    }


def my_accounts(s: Session, principal: Principal, base_url: str) -> list[dict]:
    """Accounts the user owns or holds a share in force on (same rule as GET /api/v1/accounts)."""
    now = utcnow()
    owned = s.scalars(select(Account).where(Account.owner_id == principal.id, Account.deleted_at.is_(None))
                      .order_by(Account.created_at))
    out = [{**account_view(s, a, base_url), "role": "owner", "sensitive": True} for a in owned]
    for share in s.scalars(select(Share).where(Share.user_id == principal.id, Share.revoked_at.is_(None))):
        if not in_force(share, now):
            continue
        acc = get_account(s, share.account_id)
        if acc is not None:
            out.append({**account_view(s, acc, base_url), "role": share.role, "sensitive": share.sensitive})
    return out
