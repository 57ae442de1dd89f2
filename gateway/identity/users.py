"""Users and accounts as the operator makes them (the CLI): one transaction each, plain views.

The rules are ``gateway.identity.accounts``; this module opens the
transaction and shapes what the command prints.
"""

from __future__ import annotations

from typing import Callable

from gateway.db import Database
from gateway.errors import NotFound
from gateway.identity import accounts, consents
from gateway.identity.credentials import issue_token


def create_user(db: Database, email: str, password: str) -> dict:
    with db.session(write=True) as s:
        user = accounts.create_user(s, email, password)
        return {"id": user.id, "email": user.email, "created": user.created_at.isoformat()}


def create_account(db: Database, email: str, password: Callable[[], str], ae_title: str | None, *, actor: str,
                   base_url: str) -> dict:
    """An account owned by the user ``email`` names, made with ``password()`` if there is none yet."""
    with db.session(write=True) as s:
        user = accounts.find_user(s, email)
        if user is None:
            user = accounts.create_user(s, email, password())
        account = accounts.create_account(s, user, ae_title, actor=actor)
        return accounts.account_view(s, account, base_url)


def list_accounts(db: Database, base_url: str) -> list[dict]:
    with db.session() as s:
        return [accounts.account_view(s, a, base_url) for a in accounts.list_accounts(s)]


def show_account(db: Database, account_id: str, base_url: str) -> dict:
    """The account's view with the links and shares in force."""
    with db.session() as s:
        account = accounts.get_account(s, account_id)
        if account is None:
            raise NotFound(f"no account {account_id}")
        view = accounts.account_view(s, account, base_url)
        view["links"] = consents.list_links(s, account_id, in_force_only=True)
        view["shares"] = consents.list_shares(s, account_id, in_force_only=True)
        return view


def issue_user_token(db: Database, email: str, ttl: int | None) -> dict:
    """A bearer token for the user ``email`` names (one who can sign in)."""
    with db.session(write=True) as s:
        user = accounts.find_user(s, email)
        if user is None:
            raise NotFound(f"no user with email {email}")
        token, row = issue_token(s, user_id=user.id, ttl=ttl)
        return {"user": user.email, "token": token,
                "expires": row.expires_at.isoformat() if row.expires_at else None}
