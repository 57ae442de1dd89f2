"""Association policy: decided at A-ASSOCIATE, before any DIMSE message.

The rule is ``consent.decision.decide_association`` (asked through
``gateway.archive.access.admit_association``); this module translates its
verdict into the A-ASSOCIATE-RJ pynetdicom sends, and counts it. Rejections
are rejected-permanent from the service user with the reason PS3.8 defines:
calling-AE-not-recognised (0x03) for an unknown calling AE or a source
address outside the provider's networks, called-AE-not-recognised (0x07) for
an unknown account AE, or one with which the provider has no link in force
(so a stranger learns nothing about which accounts exist).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from consent.decision import AeNotRecognised, Principal
from gateway.archive.access import admit_association
from gateway.ops.metrics import ASSOCIATIONS

REJECTED_PERMANENT = 0x01
SOURCE_SERVICE_USER = 0x01
CALLING_AE_NOT_RECOGNISED = 0x03
CALLED_AE_NOT_RECOGNISED = 0x07

_DIAGNOSTIC = {AeNotRecognised.CALLING: CALLING_AE_NOT_RECOGNISED, AeNotRecognised.CALLED: CALLED_AE_NOT_RECOGNISED}


@dataclass(frozen=True)
class Verdict:
    accepted: bool
    reason: str
    diagnostic: int = 0
    principal: Principal | None = None
    account_id: str | None = None


def decide_association(db: Any, calling_ae: str, called_ae: str, address: str) -> Verdict:
    """``db``: the services' database (passed through to the gate; this adapter opens no transaction)."""
    decision = admit_association(db, calling_ae, called_ae, address)
    ASSOCIATIONS.labels("accepted" if decision.accepted else "rejected").inc()
    if not decision.accepted:
        assert decision.refused_on is not None
        return Verdict(False, decision.reason, _DIAGNOSTIC[decision.refused_on])
    return Verdict(True, decision.reason, principal=decision.principal, account_id=decision.account_id)
