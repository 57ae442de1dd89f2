"""The account-level gate every service asks first, and its two refusals.

``require`` runs the one consent decision for an action on an account and
turns "no standing at all" into :class:`NotVisible` (adapters answer 404 /
called-AE-not-recognised, revealing nothing) and "standing, but not this" into
:class:`PermissionError` (403 / a refusal status).
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from consent.decision import Action, Decision, Principal, decide
from gateway.identity.accounts import account_ref, get_account


class NotVisible(Exception):
    """The caller may not see this account (404 / refused association)."""

    def __init__(self, decision: Decision) -> None:
        super().__init__(decision.reason)
        self.decision = decision


def require(s: Session, principal: Principal, action: Action, account_id: str) -> Decision:
    decision = decide(s, principal, action, account_ref(get_account(s, account_id)))
    if not decision.visible:
        raise NotVisible(decision)
    if not decision.allowed:
        raise PermissionError(decision.reason)
    return decision
