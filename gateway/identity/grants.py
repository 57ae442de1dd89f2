"""Consent changes and listings as the adapters ask for them: one transaction each.

The rules and the audit trail are ``gateway.identity.consents`` (over
``consent/``); this module only opens the transaction, so that the CLI, the
REST API and the pages never do. Refusals are the consent/account errors as
raised (adapters map them by class); results are JSON-ready dicts.
"""

from __future__ import annotations

from consent.providers import list_providers as _list_providers
from gateway.db import Database
from gateway.identity import consents


def grant_share(db: Database, *, account_id: str, email: str, role: str, sensitive: bool, expires: str | None,
                actor: str, source: str | None = None) -> dict:
    with db.session(write=True) as s:
        return consents.grant_share(s, account_id=account_id, email=email, role=role, sensitive=sensitive,
                                    expires=expires, actor=actor, source=source)


def revoke_share(db: Database, share_id: str, *, actor: str, account_id: str | None = None,
                 source: str | None = None) -> dict:
    with db.session(write=True) as s:
        return consents.revoke_share(s, share_id, actor=actor, account_id=account_id, source=source)


def list_shares(db: Database, account_id: str, *, in_force_only: bool = False) -> list[dict]:
    with db.session() as s:
        return consents.list_shares(s, account_id, in_force_only=in_force_only)


def create_link(db: Database, *, account_id: str, provider_id: str, push: bool, pull: bool, sensitive: bool,
                expires: str | None, actor: str, source: str | None = None) -> dict:
    with db.session(write=True) as s:
        return consents.create_link(s, account_id=account_id, provider_id=provider_id, push=push, pull=pull,
                                    sensitive=sensitive, expires=expires, actor=actor, source=source)


def revoke_link(db: Database, link_id: str, *, actor: str, account_id: str | None = None,
                source: str | None = None) -> dict:
    with db.session(write=True) as s:
        return consents.revoke_link(s, link_id, actor=actor, account_id=account_id, source=source)


def list_links(db: Database, account_id: str | None = None, *, in_force_only: bool = False) -> list[dict]:
    with db.session() as s:
        return consents.list_links(s, account_id, in_force_only=in_force_only)


def list_providers(db: Database) -> list[dict]:
    with db.session() as s:
        return [consents.provider_view(p) for p in _list_providers(s)]


def add_provider(db: Database, *, name: str, ae_title: str, networks: list[str], host: str | None,
                 port: int | None, actor: str) -> dict:
    """The new provider's view, with its token (shown once)."""
    with db.session(write=True) as s:
        return consents.add_provider(s, name=name, ae_title=ae_title, networks=networks, host=host, port=port,
                                     actor=actor)


def remove_provider(db: Database, provider_id: str, *, actor: str) -> dict:
    with db.session(write=True) as s:
        return consents.remove_provider(s, provider_id, actor=actor)


def issue_provider_token(db: Database, provider_id: str) -> dict:
    with db.session(write=True) as s:
        return consents.issue_provider_token(s, provider_id)
