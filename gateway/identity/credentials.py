"""Credentials: argon2 password hashes, bearer tokens stored as SHA-256 hashes.

API tokens are 256-bit random strings, so a fast hash is enough to keep a
stolen database from yielding usable tokens; passwords get argon2id.
Tokens are not cached: a revoked token fails on the next request. Verified
Basic credentials are (:class:`VerifiedCredentials`), but each use re-reads
the user row, so a password change or a disabled user holds at once.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import threading
import time
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


class VerifiedCredentials:
    """Email + password pairs verified in the last ``ttl`` seconds, so that a viewer sending HTTP Basic
    with every request pays argon2 (~130 ms) once a minute instead of on every frame.

    Kept in this process's memory only, keyed by an HMAC under a per-process
    secret (neither the email nor the password is kept); an entry holds the
    user's id and password hash, and counts only while the user row still
    has that hash and is enabled: a password change, a disabled or deleted
    user ends it at once, in every process, at the cost of one indexed read.
    """

    def __init__(self, ttl: float = 60.0, max_entries: int = 10_000) -> None:
        self.ttl, self.max_entries = ttl, max_entries
        self._secret = secrets.token_bytes(32)
        self._entries: dict[bytes, tuple[str, str, float]] = {}
        self._lock = threading.Lock()

    def _key(self, email: str, password: str) -> bytes:
        return hmac.new(self._secret, f"{email}\0{password}".encode(), "sha256").digest()

    def user(self, session: Session, email: str, password: str) -> "User | None":
        """The user these credentials were verified for lately, if nothing about the user changed since."""
        key = self._key(email, password)
        with self._lock:
            entry = self._entries.get(key)
        if entry is None:
            return None
        user_id, password_hash, until = entry
        user = session.get(User, user_id) if time.monotonic() < until else None
        if user is None or user.password_hash != password_hash or user.disabled_at is not None:
            with self._lock:
                self._entries.pop(key, None)
            return None
        return user

    def remember(self, email: str, password: str, user: "User") -> None:
        with self._lock:
            if len(self._entries) >= self.max_entries:
                now = time.monotonic()
                self._entries = {k: v for k, v in self._entries.items() if v[2] > now}
                if len(self._entries) >= self.max_entries:
                    self._entries.pop(next(iter(self._entries)))
            self._entries[self._key(email, password)] = (user.id, user.password_hash or "", time.monotonic() + self.ttl)


def user_principal(user: User, source: str | None) -> Principal:
    return Principal.for_user(user.id, user.email, source)


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


def revoke_session(session: Session, token: str, operator_token: str | None) -> bool:
    """End the page session ``token`` names (a user's, or the operator's); a provider token is not a
    page session and stays. True when a session was ended."""
    row = session_row(session, token, operator_token)
    if row is None or row.provider_id is not None or row.revoked_at is not None:
        return False
    row.revoked_at = utcnow()
    return True


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
    verified: VerifiedCredentials | None = None,
) -> Principal:
    """``operator_token``: the operator token itself is accepted (the API). ``operator_sessions``: the
    current operator token, to which a session issued at the operator's sign-in to the pages is bound
    (the pages' cookie); nowhere else."""
    now = now or utcnow()
    if creds.scheme == "basic":
        email = (creds.email or "").strip().lower()
        user = session.scalar(select(User).where(User.email == email))
        ok = verify_password(user.password_hash if user else None, creds.password or "")
        if not ok or user is None or user.disabled_at is not None:
            raise AuthError("wrong email or password")
        if verified is not None:
            verified.remember(email, creds.password or "", user)
        return user_principal(user, source)
    token = creds.token or ""
    if operator_token and hmac.compare_digest(token.encode(), operator_token.encode()):
        return Principal.operator(source)
    row = session_row(session, token, operator_sessions)
    if row is None or row.revoked_at is not None:
        raise AuthError("the token is not valid")
    if row.expires_at is not None and row.expires_at <= now:
        raise AuthError("the token has expired")
    if row.user_id is None and row.provider_id is None:  # found through the operator-bound hash only
        return Principal.operator(source)
    if row.user_id:
        user = session.get(User, row.user_id)
        if user is None or user.disabled_at is not None:
            raise AuthError("the token is not valid")
        return user_principal(user, source)
    provider = session.get(Provider, row.provider_id)
    if provider is None or provider.removed_at is not None:
        raise AuthError("the token is not valid")
    return Principal.for_provider(provider, source)
