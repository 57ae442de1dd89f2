"""Refusals the consent rules raise, by kind (consent imports no gateway service, so it has its own).

``gateway.errors.classify`` maps each to the service error an adapter answers with.
"""

from __future__ import annotations

from typing import Any


class ConsentError(ValueError):
    """A consent change that cannot be made as asked (bad value): 400."""


class UnknownParty(ConsentError):
    """No such provider, link, share or account, or not one the caller may see: 404."""


class AlreadyDone(ConsentError):
    """Already revoked, already registered, already has access: 409."""


class NotVisible(ConsentError):
    """The caller has no standing on the account, so its existence is not revealed: 404.

    ``decision`` is the :class:`consent.decision.Decision` that refused (its reason is the message).
    """

    def __init__(self, message: str, decision: Any = None) -> None:
        super().__init__(message)
        self.decision = decision


class NotPermitted(ConsentError, PermissionError):
    """The caller has standing on the account, but not for this action: 403.

    Also a ``PermissionError``, which is what callers of ``gateway.archive.access.require`` catch.
    """

    def __init__(self, message: str, decision: Any = None) -> None:
        super().__init__(message)
        self.decision = decision
