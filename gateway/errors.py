"""Typed refusals raised by the services; each adapter maps them to its protocol in one table.

HTTP: NotFound 404, Forbidden 403, Conflict 409, Invalid 400, TooMany 429 (+ Retry-After).
DIMSE adapters map them to the status codes of their service class. A message is for the
caller to read, never for code to parse: decide on the class, not the text.
"""

from __future__ import annotations

from consent import errors as c


class ServiceError(Exception):
    """Base of every refusal a service raises on purpose."""


class NotFound(ServiceError):
    """No such thing, or the caller has no standing to learn that it exists."""


class Forbidden(ServiceError):
    """The caller has standing, but not for this action."""


class Conflict(ServiceError):
    """The request contradicts what is stored (already exists, already linked, wrong state)."""


class Invalid(ServiceError):
    """The request itself is malformed or out of bounds."""


class TooMany(ServiceError):
    """Refused for now: too many attempts; try again after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def classify(exc: BaseException) -> type[ServiceError] | None:
    """The service error a refusal stands for (a consent refusal included), None for anything else.

    The one place an adapter learns what kind of refusal it holds; each adapter then maps
    the kind to its protocol in its own table.
    """
    if isinstance(exc, ServiceError):
        return type(exc) if type(exc) in _KINDS else next(k for k in _KINDS if isinstance(exc, k))
    if isinstance(exc, (c.UnknownParty, c.NotVisible)):
        return NotFound
    if isinstance(exc, c.NotPermitted):
        return Forbidden
    if isinstance(exc, c.AlreadyDone):
        return Conflict
    if isinstance(exc, c.ConsentError):
        return Invalid
    return None


_KINDS = (NotFound, Forbidden, Conflict, Invalid, TooMany)
