"""What account holders (and the operator) read of an account, one transaction per call.

The account-level gate is ``consent.decision.require`` (the one consent
decision): no standing raises ``NotVisible``, standing without the right
``NotPermitted`` (``consent.errors``). Results are plain values (dicts, :class:`OpenedAccount`),
never ORM objects, so no adapter holds a row past its transaction.
"""

from __future__ import annotations

from dataclasses import dataclass

from consent.decision import Action, Decision, Principal, decide, load_account
from gateway.archive.access import require
from gateway.archive.query import live_study_count as _live_study_count
from gateway.archive.query import visible_studies as _visible_studies
from gateway.db import Database
from gateway.identity import consents
from gateway.identity.accounts import account_view, get_account
from gateway.identity.accounts import my_accounts as _my_accounts
from gateway.ops import audit


@dataclass(frozen=True)
class OpenedAccount:
    """An account the caller passed the gate of: who owns it, its view, and the decision."""

    id: str
    owner_id: str
    view: dict
    decision: Decision

    def owned_by(self, principal: Principal) -> bool:
        return principal.kind == "user" and principal.id == self.owner_id


def check(db: Database, principal: Principal, action: Action, account_id: str) -> Decision:
    """The account-level gate alone (sensitivity is decided per study further in)."""
    with db.session() as s:
        return require(s, principal, action, account_id)


def open_account(db: Database, principal: Principal, action: Action, account_id: str,
                 base_url: str) -> OpenedAccount:
    with db.session() as s:
        decision = require(s, principal, action, account_id)
        account = get_account(s, account_id)
        assert account is not None  # require() found it visible
        return OpenedAccount(account.id, account.owner_id, account_view(s, account, base_url), decision)


def my_accounts(db: Database, principal: Principal, base_url: str) -> list[dict]:
    """Accounts the user owns or holds a share in force on."""
    with db.session() as s:
        return _my_accounts(s, principal, base_url)


def visible_studies(db: Database, principal: Principal, account_id: str) -> list[dict]:
    with db.session() as s:
        return _visible_studies(s, principal, account_id)


def account_studies(db: Database, principal: Principal, account_id: str) -> tuple[list[dict], bool]:
    """The studies the caller may see, and whether the caller may delete them (one read)."""
    with db.session() as s:
        studies = _visible_studies(s, principal, account_id)
        may_delete = decide(s, principal, Action.DELETE, load_account(s, account_id)).allowed
    return studies, may_delete


def live_study_count(db: Database, account_id: str) -> int:
    """Studies of the account not deleted (what deleting the account would erase)."""
    with db.session() as s:
        return _live_study_count(s, account_id)


def access_lists(db: Database, account_id: str) -> tuple[list[dict], list[dict]]:
    """The shares and links in force on the account."""
    with db.session() as s:
        return (consents.list_shares(s, account_id, in_force_only=True),
                consents.list_links(s, account_id, in_force_only=True))


def audit_entries(db: Database, account_id: str, *, limit: int, before_id: int | None) -> list[dict]:
    """The account's audit trail, newest first."""
    with db.session() as s:
        return audit.entries(s, account_id, limit=limit, before_id=before_id)
