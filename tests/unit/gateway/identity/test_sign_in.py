"""gateway.identity.sign_in: the throttle inside the service (TooMany), page sessions, sign-out."""

from __future__ import annotations

import pytest

from gateway.errors import TooMany
from gateway.identity import grants, sign_in, users
from gateway.identity.credentials import AuthError
from gateway.runtime.settings import replace

PASSWORD = "correct horse battery"
OPERATOR = "an-operator-token-long-enough"


@pytest.fixture
def svc(services):
    services.settings = replace(services.settings, operator_token=OPERATOR)
    users.create_user(services.db, "a@example.org", PASSWORD)
    return services


def test_sign_in_returns_the_user_and_records_nothing_on_failure(svc):
    principal = sign_in.sign_in(svc, " A@example.org ", PASSWORD, "192.0.2.1")
    assert principal.kind == "user" and principal.label == "user:a@example.org"
    with pytest.raises(AuthError, match="wrong email or password"):
        sign_in.sign_in(svc, "a@example.org", "wrong password", "192.0.2.1")
    with pytest.raises(AuthError):
        sign_in.sign_in(svc, "nobody@example.org", PASSWORD, "192.0.2.1")


def test_the_sixth_sign_in_after_five_failures_raises_too_many(svc):
    for _ in range(5):
        with pytest.raises(AuthError):
            sign_in.sign_in(svc, "a@example.org", "wrong password", "192.0.2.2")
    with pytest.raises(TooMany) as info:
        sign_in.sign_in(svc, "a@example.org", PASSWORD, "192.0.2.2")
    assert 0 < info.value.retry_after <= 30
    assert str(info.value) == f"too many failed sign-ins; try again in {info.value.retry_after} s"


def test_a_success_clears_the_emails_count(svc):
    for _ in range(4):
        with pytest.raises(AuthError):
            sign_in.sign_in(svc, "a@example.org", "wrong password", "192.0.2.3")
    sign_in.sign_in(svc, "a@example.org", PASSWORD, "192.0.2.3")
    for _ in range(4):
        with pytest.raises(AuthError):
            sign_in.sign_in(svc, "a@example.org", "wrong password", "192.0.2.3")
    assert sign_in.sign_in(svc, "a@example.org", PASSWORD, "192.0.2.3").kind == "user"


def test_a_user_session_is_a_page_session_until_signed_out(svc):
    user = sign_in.sign_in(svc, "a@example.org", PASSWORD, None)
    token, expires = sign_in.issue_user_token(svc.db, user.id, ttl=600)
    assert expires is not None and token.startswith("dg_")
    assert sign_in.session_principal(svc, token, None).id == user.id
    assert sign_in.sign_out(svc, token) is True
    with pytest.raises(AuthError):
        sign_in.session_principal(svc, token, None)
    assert sign_in.sign_out(svc, token) is False  # already ended


def test_neither_the_operator_token_nor_a_provider_token_is_a_page_session(svc):
    with pytest.raises(AuthError):
        sign_in.session_principal(svc, OPERATOR, None)
    provider = grants.add_provider(svc.db, name="PACS", ae_title="PACS1", networks=[], host=None, port=None,
                                   actor="t")
    with pytest.raises(AuthError, match="provider token"):
        sign_in.session_principal(svc, provider["token"], None)
    assert sign_in.sign_out(svc, provider["token"]) is False  # signing out never revokes a provider's token
    assert sign_in.authenticate_header(svc, f"Bearer {provider['token']}", None).kind == "provider"


def test_operator_sign_in_opens_a_bound_session_and_is_throttled(svc):
    token, max_age = sign_in.operator_sign_in(svc, OPERATOR, "192.0.2.4")
    assert token != OPERATOR and max_age == 8 * 3600  # token_ttl is a day; operator sessions last 8 h at most
    assert sign_in.session_principal(svc, token, None).kind == "operator"
    svc.settings = replace(svc.settings, operator_token=OPERATOR + "-changed")
    with pytest.raises(AuthError):  # bound to the operator token it was opened with
        sign_in.session_principal(svc, token, None)
    for _ in range(5):
        with pytest.raises(AuthError, match="not the operator token"):
            sign_in.operator_sign_in(svc, "a guess", "192.0.2.4")
    with pytest.raises(TooMany):
        sign_in.operator_sign_in(svc, OPERATOR + "-changed", "192.0.2.4")


def test_missing_or_malformed_headers_are_auth_errors(svc):
    with pytest.raises(AuthError, match="credentials are required"):
        sign_in.authenticate_header(svc, None, None)
    with pytest.raises(AuthError, match="must be 'Bearer TOKEN' or 'Basic"):
        sign_in.authenticate_header(svc, "Negotiate xyz", None)
