"""Credentials: argon2 password hashes, bearer tokens stored as SHA-256 hashes.

API tokens are 256-bit random strings, so a fast hash is enough to keep a
stolen database from yielding usable tokens; passwords get argon2id.
Nothing here caches: a revoked token fails on the next request.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from consent.decision import Principal
from consent.models import Provider
from gateway.db.base import utcnow
from gateway.db.models import ApiToken, User

_hasher = PasswordHasher()
# verifying against this keeps the time of "no such user" equal to "wrong password"
_DUMMY_HASH = _hasher.hash("dicomgate-dummy-password")
TOKEN_PREFIX = "dg_"
#: NIST SP 800-63B 5.1.1.2: memorised secrets of at least 8 characters
PASSWORD_MIN_LENGTH = 8
#: the password hash of a user nobody has set a password for yet (a share was granted to the email):
#: no password verifies against it
NO_PASSWORD = "!"


class AuthError(Exception):
    """Credentials were given but are not valid (401)."""


class PasswordError(ValueError):
    """A password that may not be set (too short)."""


def check_password(password: str) -> None:
    """The one rule for a new password, wherever it is set."""
    if len(password) < PASSWORD_MIN_LENGTH:
        raise PasswordError(f"the password must be at least {PASSWORD_MIN_LENGTH} characters "
                            f"(it has {len(password)})")


def hash_password(password: str) -> str:
    check_password(password)
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """Constant work whatever the hash: no user, a user without a password and a wrong one look alike."""
    usable = password_hash is not None and password_hash.startswith("$argon2")
    try:
        return _hasher.verify(password_hash if usable else _DUMMY_HASH, password) and usable  # type: ignore[arg-type]
    except (VerificationError, InvalidHashError):
        return False


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


#: an operator's page session lasts at most this long, whatever token_ttl says
OPERATOR_SESSION_SECONDS = 8 * 3600


def operator_session_hash(token: str, operator_token: str) -> str:
    """The stored hash of an operator's page session: bound to the operator token it was opened with,
    so that changing ``operator_token`` ends every session opened with the old one."""
    return hash_token(f"{token}:{operator_token}")


def issue_token(
    session: Session, *, user_id: str | None = None, provider_id: str | None = None, ttl: int | None = None
) -> tuple[str, ApiToken]:
    """Create a token for a user or a provider; the clear text is returned once and never stored."""
    if user_id is None and provider_id is None:
        raise ValueError("a token belongs to a user or a provider (operator sessions: issue_operator_session)")
    return _issue(session, hash_token, user_id=user_id, provider_id=provider_id, ttl=ttl)


def issue_operator_session(session: Session, operator_token: str, ttl: int | None) -> str:
    """A page session for the operator, who signed in with ``operator_token`` (see ``authenticate``)."""
    ttl = min(ttl or OPERATOR_SESSION_SECONDS, OPERATOR_SESSION_SECONDS)
    token, _ = _issue(session, lambda t: operator_session_hash(t, operator_token), user_id=None,
                      provider_id=None, ttl=ttl)
    return token


def _issue(session: Session, hasher, *, user_id: str | None, provider_id: str | None,  # type: ignore[no-untyped-def]
           ttl: int | None) -> tuple[str, ApiToken]:
    token = new_token()
    now = utcnow()
    row = ApiToken(
        id=f"tok_{secrets.token_hex(8)}", token_hash=hasher(token), user_id=user_id,
        provider_id=provider_id, created_at=now,
        expires_at=now + timedelta(seconds=ttl) if ttl else None,
    )
    session.add(row)
    session.flush()
    return token, row


def session_row(session: Session, token: str, operator_token: str | None) -> ApiToken | None:
    """The token row a page session cookie names: a user's session, or an operator's bound to the
    current operator token."""
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token)))
    if row is None and operator_token:
        row = session.scalar(select(ApiToken).where(
            ApiToken.token_hash == operator_session_hash(token, operator_token)))
        if row is not None and (row.user_id is not None or row.provider_id is not None):
            return None
    elif row is not None and row.user_id is None and row.provider_id is None:
        return None  # an operator session not bound to the operator token
    return row


@dataclass(frozen=True)
class Credentials:
    scheme: str  # "bearer" | "basic"
    token: str | None = None
    email: str | None = None
    password: str | None = None


def parse_authorization(header: str | None) -> Credentials | None:
    """Parse an Authorization header; None when absent, AuthError when malformed."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    scheme = scheme.lower()
    value = value.strip()
    if scheme == "bearer" and value:
        return Credentials("bearer", token=value)
    if scheme == "basic" and value:
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise AuthError("the Basic credentials are not valid base64") from None
        email, sep, password = decoded.partition(":")
        if not sep:
            raise AuthError("the Basic credentials lack a ':'")
        return Credentials("basic", email=email, password=password)
    raise AuthError("the Authorization header must be 'Bearer TOKEN' or 'Basic ...'")


def authenticate(
    session: Session, creds: Credentials, *, source: str | None, operator_token: str | None,
    operator_sessions: str | None = None, now: datetime | None = None,
) -> Principal:
    """``operator_token``: the operator token itself is accepted (the API). ``operator_sessions``: the
    current operator token, to which a session issued at the operator's sign-in to the pages is bound
    (the pages' cookie); nowhere else."""
    now = now or utcnow()
    if creds.scheme == "basic":
        user = session.scalar(select(User).where(User.email == (creds.email or "").strip().lower()))
        ok = verify_password(user.password_hash if user else None, creds.password or "")
        if not ok or user is None or user.disabled_at is not None:
            raise AuthError("wrong email or password")
        return Principal("user", user.id, f"user:{user.email}", source)
    token = creds.token or ""
    if operator_token and hmac.compare_digest(token.encode(), operator_token.encode()):
        return Principal("operator", "operator", "operator", source)
    row = session_row(session, token, operator_sessions)
    if row is None or row.revoked_at is not None:
        raise AuthError("the token is not valid")
    if row.expires_at is not None and row.expires_at <= now:
        raise AuthError("the token has expired")
    if row.user_id is None and row.provider_id is None:  # found through the operator-bound hash only
        return Principal("operator", "operator", "operator", source)
    if row.user_id:
        user = session.get(User, row.user_id)
        if user is None or user.disabled_at is not None:
            raise AuthError("the token is not valid")
        return Principal("user", user.id, f"user:{user.email}", source)
    provider = session.get(Provider, row.provider_id)
    if provider is None or provider.removed_at is not None:
        raise AuthError("the token is not valid")
    return Principal("provider", provider.id, f"provider:{provider.name} ({provider.ae_title})", source)
