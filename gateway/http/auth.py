"""Who is calling over HTTP, and may they touch this account? (DICOMweb and REST)

401: no or bad credentials. 404: the caller has no standing on the account
(so its existence is not revealed). 403: standing, but not this action.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

from flask import Request

from consent.decision import Action, Decision, Principal
from gateway.identity.credentials import TOKEN_PREFIX, AuthError, Credentials, authenticate, parse_authorization, user_principal
from gateway.runtime.services import Services


@dataclass
class HttpError(Exception):
    status: int
    message: str
    #: a list value is sent as that many headers of the name
    headers: dict[str, str | list[str]] | None = None


#: one header per challenge (RFC 9110 allows a list in one header, but browsers then prompt for neither)
CHALLENGE: dict[str, str | list[str]] = {
    "WWW-Authenticate": ['Basic realm="dicomgate", charset="UTF-8"', 'Bearer realm="dicomgate"'],
}


def principal_from_request(services: Services, request: Request) -> Principal:
    try:
        creds = parse_authorization(request.headers.get("Authorization"))
    except AuthError as exc:
        raise HttpError(401, str(exc), CHALLENGE) from None
    if creds is None:
        raise HttpError(401, "credentials are required (Bearer token or Basic)", CHALLENGE)
    if creds.scheme == "basic":
        with services.db.session() as s:  # verified lately and the user unchanged: no argon2, no throttle
            user = services.verified.user(s, (creds.email or "").strip().lower(), creds.password or "")
            if user is not None:
                return user_principal(user, request.remote_addr)
        return sign_in(services, creds.email or "", creds.password or "", request.remote_addr)
    guessable = not (creds.token or "").startswith(TOKEN_PREFIX)  # ours are 256-bit random; the operator's may not be
    key = f"bearer-ip:{request.remote_addr}"
    if guessable:
        wait = services.throttle.begin(key)
        if wait:
            raise HttpError(429, f"too many failed attempts; try again in {wait} s", {"Retry-After": str(wait)})
    try:
        with services.db.session() as s:
            principal = authenticate(s, creds, source=request.remote_addr,
                                     operator_token=services.settings.operator_token)
    except AuthError as exc:
        if guessable:
            services.throttle.failed(key)
        raise HttpError(401, str(exc), CHALLENGE) from None
    if guessable:
        services.throttle.succeeded("", key)
    return principal


def sign_in(services: Services, email: str, password: str, source: str | None) -> Principal:
    """Email + password, throttled per email and per source address (429 while locked)."""
    from gateway.ops.usage import record_usage

    keys = (f"email:{email.strip().lower()}", f"ip:{source}")
    wait = services.throttle.begin(*keys)
    if wait:
        raise HttpError(429, f"too many failed sign-ins; try again in {wait} s", {"Retry-After": str(wait)})
    try:
        with services.db.session() as s:
            principal = authenticate(s, Credentials("basic", email=email, password=password), source=source,
                                     operator_token=None, verified=services.verified)
    except AuthError as exc:
        services.throttle.failed(*keys)  # begin() counted the attempt; a wrong one may lock
        raise HttpError(401, str(exc), CHALLENGE) from None
    services.throttle.succeeded(keys[0], keys[1])
    record_usage(services.db, kind="sign-in", account_id=None, user_id=principal.id)
    return principal


def authorise(services: Services, principal: Principal, account_id: str, action: Action) -> Decision:
    """Account-level gate (sensitivity is decided per study further in)."""
    from gateway.archive.access import require

    with service_errors(account_id), services.db.session() as s:
        return require(s, principal, action, account_id)


@contextlib.contextmanager
def service_errors(account_id: str) -> Iterator[None]:
    """Map the query/retrieve services' refusals to HTTP: 404 / 403 / 400 / 404."""
    from gateway.archive.access import NotVisible
    from gateway.archive.query import QueryError
    from gateway.archive.retrieve import NotFound

    try:
        yield
    except NotVisible:
        raise HttpError(404, f"no account {account_id}") from None
    except PermissionError as exc:
        raise HttpError(403, f"not allowed: {exc}") from None
    except QueryError as exc:
        raise HttpError(400, str(exc)) from None
    except NotFound:
        raise HttpError(404, "no such study, series or instance") from None
