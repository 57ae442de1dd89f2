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


class AuthError(Exception):
    """Credentials were given but are not valid (401)."""


def hash_password(password: str) -> str:
    if len(password) < 1:
        raise ValueError("the password is empty")
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def issue_token(
    session: Session, *, user_id: str | None = None, provider_id: str | None = None, ttl: int | None = None
) -> tuple[str, ApiToken]:
    """Create a token; the clear text is returned once and never stored."""
    token = new_token()
    now = utcnow()
    row = ApiToken(
        id=f"tok_{secrets.token_hex(8)}", token_hash=hash_token(token), user_id=user_id,
        provider_id=provider_id, created_at=now,
        expires_at=now + timedelta(seconds=ttl) if ttl else None,
    )
    session.add(row)
    session.flush()
    return token, row


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
    now: datetime | None = None,
) -> Principal:
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
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token)))
    if row is None or row.revoked_at is not None:
        raise AuthError("the token is not valid")
    if row.expires_at is not None and row.expires_at <= now:
        raise AuthError("the token has expired")
    if row.user_id:
        user = session.get(User, row.user_id)
        if user is None or user.disabled_at is not None:
            raise AuthError("the token is not valid")
        return Principal("user", user.id, f"user:{user.email}", source)
    provider = session.get(Provider, row.provider_id)
    if provider is None or provider.removed_at is not None:
        raise AuthError("the token is not valid")
    return Principal("provider", provider.id, f"provider:{provider.name} ({provider.ae_title})", source)
