"""Association policy: decided at A-ASSOCIATE, before any DIMSE message.

Called AE title -> account; calling AE title + peer address -> provider.
Rejections are rejected-permanent from the service user with the reason
PS3.8 defines: calling-AE-not-recognised (0x03) for an unknown calling AE
or a source address outside the provider's networks, called-AE-not-recognised
(0x07) for an unknown account AE, or one with which the provider has no link
in force (so a stranger learns nothing about which accounts exist).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from consent.decision import Principal, has_active_link
from consent.providers import identify_by_ae
from gateway.identity.accounts import account_by_ae
from gateway.db import Database

log = logging.getLogger(__name__)

REJECTED_PERMANENT = 0x01
SOURCE_SERVICE_USER = 0x01
CALLING_AE_NOT_RECOGNISED = 0x03
CALLED_AE_NOT_RECOGNISED = 0x07


@dataclass(frozen=True)
class Verdict:
    accepted: bool
    reason: str
    diagnostic: int = 0
    principal: Principal | None = None
    account_id: str | None = None


def decide_association(db: Database, calling_ae: str, called_ae: str, address: str) -> Verdict:
    from gateway.ops.metrics import ASSOCIATIONS
    from gateway.ops.usage import record_usage

    verdict = _decide(db, calling_ae, called_ae, address)
    ASSOCIATIONS.labels("accepted" if verdict.accepted else "rejected").inc()
    if verdict.accepted:
        record_usage(db, kind="association", account_id=verdict.account_id, detail="dimse")
    return verdict


def _decide(db: Database, calling_ae: str, called_ae: str, address: str) -> Verdict:
    with db.session() as s:
        ident = identify_by_ae(s, calling_ae, address)
        if ident.provider is None:
            return Verdict(False, ident.reason, CALLING_AE_NOT_RECOGNISED)
        provider = ident.provider
        account = account_by_ae(s, called_ae)
        if account is None:
            return Verdict(False, f"called AE title {called_ae.strip()!r} is not an account",
                           CALLED_AE_NOT_RECOGNISED)
        if not has_active_link(s, account.id, provider.id):
            return Verdict(False, f"provider {provider.id} has no link in force with {called_ae.strip()!r}",
                           CALLED_AE_NOT_RECOGNISED)
        principal = Principal.for_provider(provider, address)
        return Verdict(True, "link in force", principal=principal, account_id=account.id)
