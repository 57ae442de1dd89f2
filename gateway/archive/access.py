"""The gates every service asks first: the account-level gate and the DIMSE association gate.

Both are the rules of ``consent.decision``; this module only opens the
transaction and records what an accepted association counts for usage.

``require`` raises :class:`NotVisible` for "no standing at all" (adapters
answer 404 / called-AE-not-recognised, revealing nothing) and
:class:`NotPermitted`, a ``PermissionError``, for "standing, but not this"
(403 / a refusal status).
"""

from __future__ import annotations

from consent.decision import AssociationDecision, decide_association, require
from consent.errors import NotPermitted, NotVisible
from gateway.db import Database
from gateway.ops.usage import record_usage

__all__ = ["NotPermitted", "NotVisible", "admit_association", "require"]


def admit_association(db: Database, calling_ae: str, called_ae: str, address: str) -> AssociationDecision:
    """``consent.decision.decide_association`` in its own transaction; an accepted one counts as usage."""
    with db.session() as s:
        verdict = decide_association(s, calling_ae, called_ae, address)
    if verdict.accepted:
        record_usage(db, kind="association", account_id=verdict.account_id, detail="dimse")
    return verdict
