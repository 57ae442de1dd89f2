"""gateway.identity.credentials.VerifiedCredentials: a repeated Basic request skips argon2 only while nothing changed."""

from __future__ import annotations

import pytest

from gateway.identity import credentials as auth
from gateway.identity.credentials import Credentials, VerifiedCredentials, authenticate, hash_password
from gateway.db import Database
from gateway.db.migrate import upgrade
from gateway.db.models import User


@pytest.fixture
def db(tmp_path):
    d = Database(f"sqlite:///{tmp_path / 'index.sqlite3'}")
    upgrade(d)
    with d.session(write=True) as s:
        s.add(User(id="usr_1", email="a@example.org", password_hash=hash_password("right password")))
    yield d
    d.dispose()


def test_verified_credentials_skip_argon2_until_the_user_changes(db, monkeypatch):
    cache = VerifiedCredentials(ttl=60)
    calls = []
    real = auth.verify_password
    monkeypatch.setattr(auth, "verify_password", lambda h, p: calls.append(1) or real(h, p))
    with db.session() as s:
        assert cache.user(s, "a@example.org", "right password") is None
        authenticate(s, Credentials("basic", email="a@example.org", password="right password"), source=None, operator_token=None, verified=cache)
    assert len(calls) == 1
    with db.session() as s:
        assert cache.user(s, "a@example.org", "right password").id == "usr_1"
        assert cache.user(s, "a@example.org", "wrong password") is None  # another password: no entry
    with db.session(write=True) as s:  # a password change ends it, in every process (the row is read)
        s.get(User, "usr_1").password_hash = hash_password("new password 1")
    with db.session() as s:
        assert cache.user(s, "a@example.org", "right password") is None


def test_a_disabled_user_or_an_expired_entry_is_not_let_through(db):
    from gateway.db.base import utcnow

    cache = VerifiedCredentials(ttl=60)
    with db.session() as s:
        authenticate(s, Credentials("basic", email="a@example.org", password="right password"), source=None, operator_token=None, verified=cache)
    with db.session(write=True) as s:
        s.get(User, "usr_1").disabled_at = utcnow()
    with db.session() as s:
        assert cache.user(s, "a@example.org", "right password") is None
    expired = VerifiedCredentials(ttl=-1)
    with db.session(write=True) as s:
        s.get(User, "usr_1").disabled_at = None
    with db.session() as s:
        authenticate(s, Credentials("basic", email="a@example.org", password="right password"), source=None, operator_token=None, verified=expired)
        assert expired.user(s, "a@example.org", "right password") is None


def test_wrong_passwords_are_never_remembered(db):
    cache = VerifiedCredentials()
    with db.session() as s:
        with pytest.raises(auth.AuthError):
            authenticate(s, Credentials("basic", email="a@example.org", password="wrong"), source=None, operator_token=None,
                         verified=cache)
        assert cache.user(s, "a@example.org", "wrong") is None
    assert not cache._entries
