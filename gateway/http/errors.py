"""The HTTP adapters' one table from a service's refusal to a status (REST API, pages, DICOMweb).

A service raises a typed refusal (``gateway.errors``, ``consent.errors``);
:func:`gateway.errors.classify` names its kind and :data:`STATUS` its status.
The message is the service's, shown as it is; no code reads it.
"""

from __future__ import annotations

from dataclasses import dataclass

from consent.errors import ConsentError, NotVisible
from gateway.errors import Conflict, Forbidden, Invalid, NotFound, ServiceError, TooMany, classify


@dataclass
class HttpError(Exception):
    status: int
    message: str
    #: a list value is sent as that many headers of the name
    headers: dict[str, str | list[str]] | None = None


STATUS: dict[type[ServiceError], int] = {NotFound: 404, Forbidden: 403, Conflict: 409, Invalid: 400, TooMany: 429}

#: every refusal a service raises on purpose (what a form shows next to its fields); the account,
#: erasure and query refusals are service errors too
REFUSALS: tuple[type[Exception], ...] = (ServiceError, ConsentError)


def http_error(exc: BaseException) -> HttpError | None:
    """The answer to a service's refusal (429 with ``Retry-After``); None for anything else."""
    kind = classify(exc)
    if kind is None:
        return None
    if isinstance(exc, NotVisible):  # the gate's reason would say why the caller has no standing: say nothing
        return HttpError(404, "no such account")
    headers: dict[str, str | list[str]] | None = (
        {"Retry-After": str(exc.retry_after)} if isinstance(exc, TooMany) else None)
    return HttpError(STATUS[kind], str(exc), headers)
