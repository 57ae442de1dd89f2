"""Who is calling over HTTP, and may they touch this account? (DICOMweb and REST)

401: no or bad credentials. 404: the caller has no standing on the account
(so its existence is not revealed). 403: standing, but not this action.
429: too many failed sign-ins (the identity service's throttle says how long).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

from flask import Request

from consent.decision import Action, Decision, Principal
from gateway.archive.access import NotPermitted, NotVisible
from gateway.errors import TooMany
from gateway.http.errors import REFUSALS, HttpError, http_error
from gateway.identity import holder
from gateway.identity import sign_in as identity
from gateway.identity.credentials import AuthError
from gateway.runtime.services import Services

__all__ = ["CHALLENGE", "HttpError", "authorise", "principal_from_request", "service_errors", "sign_in"]

#: one header per challenge (RFC 9110 allows a list in one header, but browsers then prompt for neither)
CHALLENGE: dict[str, str | list[str]] = {
    "WWW-Authenticate": ['Basic realm="dicomgate", charset="UTF-8"', 'Bearer realm="dicomgate"'],
}


@contextlib.contextmanager
def _sign_in_errors() -> Iterator[None]:
    """AuthError: 401 with the challenges; TooMany: 429 with Retry-After."""
    try:
        yield
    except AuthError as exc:
        raise HttpError(401, str(exc), CHALLENGE) from None
    except TooMany as exc:
        mapped = http_error(exc)
        assert mapped is not None
        raise mapped from None


def principal_from_request(services: Services, request: Request) -> Principal:
    with _sign_in_errors():
        return identity.authenticate_header(services, request.headers.get("Authorization"), request.remote_addr)


def sign_in(services: Services, email: str, password: str, source: str | None) -> Principal:
    """Email + password, throttled per email and per source address (429 while locked)."""
    with _sign_in_errors():
        return identity.sign_in(services, email, password, source)


def authorise(services: Services, principal: Principal, account_id: str, action: Action) -> Decision:
    """Account-level gate (sensitivity is decided per study further in)."""
    with service_errors(account_id):
        return holder.check(services.db, principal, action, account_id)


@contextlib.contextmanager
def service_errors(account_id: str) -> Iterator[None]:
    """The services' refusals as HTTP answers: the account gate says no more than "no account"
    (404, revealing nothing) or "not allowed: why" (403); the rest by class (gateway.http.errors)."""
    try:
        yield
    except NotVisible:
        raise HttpError(404, f"no account {account_id}") from None
    except NotPermitted as exc:
        raise HttpError(403, f"not allowed: {exc}") from None
    except REFUSALS as exc:
        mapped = http_error(exc)
        assert mapped is not None
        raise mapped from None
