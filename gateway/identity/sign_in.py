"""Signing in, throttled: every way a caller proves who they are, one transaction per step.

The throttle (:class:`gateway.identity.throttle.SignInThrottle`) is driven
from here and nowhere else: an attempt is begun before its secret is checked,
a wrong one is marked failed (the ``free``-th failure locks), a right one is
taken back. While a key is locked the attempt is refused with
:class:`gateway.errors.TooMany` (``retry_after`` seconds), whatever the secret;
wrong or missing credentials raise :class:`AuthError`. Adapters map the two
(HTTP: 429 + ``Retry-After``, 401 + challenge) and never count attempts.

Throttled keys: ``email:`` and ``ip:`` for email + password (REST, HTTP Basic,
the sign-in page); ``bearer-ip:`` for a bearer token that is not one of ours
(ours are 256-bit random, the operator's may be guessable) and for the
operator's sign-in to the pages, which share that budget.
"""

from __future__ import annotations

import hmac
from datetime import datetime
from typing import Any, Protocol

from consent.decision import Principal
from gateway.db import Database
from gateway.errors import TooMany
from gateway.identity.credentials import (OPERATOR_SESSION_SECONDS, TOKEN_PREFIX, AuthError, Credentials,
                                          VerifiedCredentials, authenticate, issue_operator_session, issue_token,
                                          parse_authorization, revoke_session, user_principal)
from gateway.identity.throttle import SignInThrottle
from gateway.ops.usage import record_usage


class IdentityServices(Protocol):
    """What signing in needs of the composition root (``gateway.runtime.services.Services``)."""

    db: Database
    throttle: SignInThrottle
    verified: VerifiedCredentials
    settings: Any  # .operator_token, .token_ttl


def authenticate_header(services: IdentityServices, header: str | None, source: str | None) -> Principal:
    """The caller an ``Authorization`` header names: Bearer (a user's, a provider's or the operator
    token) or Basic (email + password; verified lately and the user unchanged: no argon2, no throttle)."""
    creds = parse_authorization(header)
    if creds is None:
        raise AuthError("credentials are required (Bearer token or Basic)")
    if creds.scheme == "basic":
        with services.db.session() as s:
            user = services.verified.user(s, (creds.email or "").strip().lower(), creds.password or "")
            if user is not None:
                return user_principal(user, source)
        return sign_in(services, creds.email or "", creds.password or "", source)
    return _bearer(services, creds.token or "", source)


def _bearer(services: IdentityServices, token: str, source: str | None) -> Principal:
    guessable = not token.startswith(TOKEN_PREFIX)
    key = f"bearer-ip:{source}"
    if guessable:
        _begin(services, "too many failed attempts", key)
    try:
        with services.db.session() as s:
            principal = authenticate(s, Credentials("bearer", token=token), source=source,
                                     operator_token=services.settings.operator_token)
    except AuthError:
        if guessable:
            services.throttle.failed(key)
        raise
    if guessable:
        services.throttle.succeeded("", key)
    return principal


def sign_in(services: IdentityServices, email: str, password: str, source: str | None) -> Principal:
    """Email + password, throttled per email and per source address; a success is a usage event."""
    keys = (f"email:{email.strip().lower()}", f"ip:{source}")
    _begin(services, "too many failed sign-ins", *keys)
    try:
        with services.db.session() as s:
            principal = authenticate(s, Credentials("basic", email=email, password=password), source=source,
                                     operator_token=None, verified=services.verified)
    except AuthError:
        services.throttle.failed(*keys)  # begin() counted the attempt; a wrong one may lock
        raise
    services.throttle.succeeded(keys[0], keys[1])
    record_usage(services.db, kind="sign-in", account_id=None, user_id=principal.id)
    return principal


def _begin(services: IdentityServices, what: str, *keys: str) -> None:
    wait = services.throttle.begin(*keys)
    if wait:
        raise TooMany(f"{what}; try again in {wait} s", wait)


def issue_user_token(db: Database, user_id: str, ttl: int | None) -> tuple[str, datetime | None]:
    """A new bearer token for the user (also the pages' session): the clear text, once, and its expiry."""
    with db.session(write=True) as s:
        token, row = issue_token(s, user_id=user_id, ttl=ttl)
        return token, row.expires_at


def session_principal(services: IdentityServices, token: str, source: str | None) -> Principal:
    """The caller a page session cookie names: a user's token or an operator page session (bound to
    the current operator token). The operator token itself and provider tokens are no page session."""
    with services.db.session() as s:
        principal = authenticate(s, Credentials("bearer", token=token), source=source, operator_token=None,
                                 operator_sessions=services.settings.operator_token)
    if principal.kind == "provider":
        raise AuthError("a provider token is not a page session")
    return principal


def operator_sign_in(services: IdentityServices, operator_token: str, source: str | None) -> tuple[str, int]:
    """The operator signs in to the pages with the operator token (checked once, never kept): a page
    session token of its own, bound to that operator token, and its lifetime in seconds. Throttled
    with the budget of operator tokens sent as Bearer."""
    key = f"bearer-ip:{source}"
    _begin(services, "too many failed sign-ins", key)
    expected = services.settings.operator_token
    if not (expected and operator_token and hmac.compare_digest(operator_token.encode(), expected.encode())):
        services.throttle.failed(key)  # begin() counted the attempt; a wrong one may lock
        raise AuthError("that is not the operator token")
    services.throttle.succeeded("", key)
    ttl = services.settings.token_ttl
    with services.db.session(write=True) as s:  # bound to the operator token: changing it ends the session
        token = issue_operator_session(s, expected, ttl)
    return token, min(ttl or OPERATOR_SESSION_SECONDS, OPERATOR_SESSION_SECONDS)


def sign_out(services: IdentityServices, token: str) -> bool:
    """End the user's or the operator's page session ``token`` names (True if one was ended)."""
    with services.db.session(write=True) as s:
        return revoke_session(s, token, services.settings.operator_token)
