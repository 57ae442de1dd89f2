"""gateway.http.auth against a real SQLite index: 401 with both challenges, 429 after repeated
failures (Retry-After), the Basic cache, and the account gate's 404 / 403."""

from __future__ import annotations

import base64

import pytest
from flask import Flask, request

from consent.decision import Action
from gateway.http.auth import CHALLENGE, HttpError, authorise, principal_from_request, sign_in
from gateway.identity import credentials, users
from gateway.identity.sign_in import issue_user_token
from gateway.runtime.settings import replace

PASSWORD = "correct horse battery"
OPERATOR = "an-operator-token-long-enough"
app = Flask("test-auth")


def _basic(email: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{email}:{password}".encode()).decode()


def _call(services, authorization: str | None, source: str = "192.0.2.7"):
    headers = {"Authorization": authorization} if authorization is not None else {}
    with app.test_request_context("/", headers=headers, environ_base={"REMOTE_ADDR": source}):
        return principal_from_request(services, request)


def _refused(services, authorization: str | None, source: str = "192.0.2.7") -> HttpError:
    with pytest.raises(HttpError) as info:
        _call(services, authorization, source)
    return info.value


@pytest.fixture
def holder(services):
    services.settings = replace(services.settings, operator_token=OPERATOR)
    return users.create_account(services.db, "holder@example.org", lambda: PASSWORD, None, actor="t",
                                base_url="http://gw")


def test_no_credentials_is_401_with_one_header_per_challenge(services):
    err = _refused(services, None)
    assert err.status == 401 and "credentials are required" in err.message
    assert err.headers == CHALLENGE and len(err.headers["WWW-Authenticate"]) == 2


@pytest.mark.parametrize("header", ["Digest abc", "Basic !!!notbase64", "Basic " + base64.b64encode(b"nocolon").decode()])
def test_malformed_authorization_is_401(services, header):
    assert _refused(services, header).status == 401


def test_basic_with_the_right_password_is_the_user(services, holder):
    principal = _call(services, _basic("holder@example.org", PASSWORD))
    assert principal.kind == "user" and principal.label == "user:holder@example.org"
    assert principal.source == "192.0.2.7"


def test_wrong_password_is_401_and_the_6th_attempt_is_429_even_when_right(services, holder):
    for _ in range(5):
        err = _refused(services, _basic("holder@example.org", "wrong password"))
        assert err.status == 401 and err.headers == CHALLENGE
    err = _refused(services, _basic("holder@example.org", PASSWORD))
    assert err.status == 429 and "too many failed sign-ins" in err.message
    assert 0 < int(err.headers["Retry-After"]) <= 30
    assert "WWW-Authenticate" not in err.headers


def test_sign_in_is_throttled_per_email_across_addresses(services, holder):
    for n in range(5):
        with pytest.raises(HttpError):
            sign_in(services, "holder@example.org", "wrong password", f"198.51.100.{n}")
    with pytest.raises(HttpError) as info:
        sign_in(services, "holder@example.org", PASSWORD, "198.51.100.99")
    assert info.value.status == 429


def test_a_verified_basic_pair_skips_argon2_and_the_throttle(services, holder, monkeypatch):
    checks, begun = [], []
    real_verify, real_begin = credentials.verify_password, services.throttle.begin
    monkeypatch.setattr(credentials, "verify_password", lambda h, p: checks.append(1) or real_verify(h, p))
    monkeypatch.setattr(services.throttle, "begin", lambda *k: begun.append(k) or real_begin(*k))
    header = _basic("holder@example.org", PASSWORD)
    first, second = _call(services, header), _call(services, header)
    assert first.id == second.id
    assert len(checks) == 1 and len(begun) == 1  # the second request: neither argon2 nor the throttle
    assert _refused(services, _basic("holder@example.org", "wrong password")).status == 401  # not cached


def test_bearer_tokens_ours_and_the_operators(services, holder):
    user = _call(services, _basic("holder@example.org", PASSWORD))
    token, _ = issue_user_token(services.db, user.id, ttl=3600)
    assert _call(services, f"Bearer {token}").id == user.id
    assert _call(services, f"Bearer {OPERATOR}").kind == "operator"
    err = _refused(services, "Bearer dg_not-a-token-we-issued")
    assert err.status == 401 and err.message == "the token is not valid"


def test_guessed_bearer_tokens_are_throttled_per_address(services, holder):
    for _ in range(5):
        assert _refused(services, "Bearer guess", source="203.0.113.5").status == 401
    err = _refused(services, f"Bearer {OPERATOR}", source="203.0.113.5")
    assert err.status == 429 and int(err.headers["Retry-After"]) > 0
    assert _call(services, f"Bearer {OPERATOR}", source="203.0.113.6").kind == "operator"  # another address


def test_our_tokens_are_never_throttled(services, holder):
    for _ in range(8):  # 256-bit random: not worth guessing, so not counted
        assert _refused(services, "Bearer dg_wrong", source="203.0.113.9").status == 401
    user = _call(services, _basic("holder@example.org", PASSWORD))
    token, _ = issue_user_token(services.db, user.id, ttl=3600)
    assert _call(services, f"Bearer {token}", source="203.0.113.9").id == user.id


def test_authorise_hides_an_account_without_standing_and_refuses_a_missing_right(services, holder):
    owner = _call(services, _basic("holder@example.org", PASSWORD))
    assert authorise(services, owner, holder["id"], Action.MANAGE).allowed
    users.create_user(services.db, "stranger@example.org", PASSWORD)
    stranger = _call(services, _basic("stranger@example.org", PASSWORD))
    with pytest.raises(HttpError) as info:
        authorise(services, stranger, holder["id"], Action.READ)
    assert info.value.status == 404 and info.value.message == f"no account {holder['id']}"
    operator = _call(services, f"Bearer {OPERATOR}")
    with pytest.raises(HttpError) as info:
        authorise(services, operator, holder["id"], Action.READ)  # the operator manages, never reads images
    assert info.value.status == 403 and info.value.message.startswith("not allowed: ")
