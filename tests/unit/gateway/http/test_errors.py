"""gateway.http.errors: one table from a refusal's class to an HTTP status."""

from __future__ import annotations

import pytest

from consent import errors as consent_errors
from consent.decision import Principal
from gateway.archive.erasure import ErasureError, delete_account
from gateway.errors import Conflict, Forbidden, Invalid, NotFound, TooMany
from gateway.http.errors import STATUS, http_error
from gateway.identity import users


@pytest.mark.parametrize("exc, status", [
    (NotFound("no such thing"), 404),
    (Forbidden("not yours"), 403),
    (Conflict("already there"), 409),
    (Invalid("bad value"), 400),
    (consent_errors.UnknownParty("no link lnk_1"), 404),
    (consent_errors.NotPermitted("viewer cannot manage"), 403),
    (consent_errors.AlreadyDone("share shr_1 was already revoked"), 409),
    (consent_errors.ConsentError("role must be viewer or editor"), 400),
])
def test_each_kind_has_its_status_and_keeps_the_message(exc, status):
    err = http_error(exc)
    assert err is not None and (err.status, err.message, err.headers) == (status, str(exc), None)


def test_no_standing_says_nothing_of_why():
    """The gate's reason (whose networks, which share) must not reach a caller without standing."""
    err = http_error(consent_errors.NotVisible("source address 192.0.2.1 is outside the networks of provider prv_1"))
    assert (err.status, err.message) == (404, "no such account")


def test_the_status_is_decided_by_class_not_by_text():
    assert http_error(Invalid("no such luck")).status == 400
    assert http_error(NotFound("nothing to see")).status == 404


def test_too_many_is_429_with_retry_after():
    err = http_error(TooMany("too many failed sign-ins; try again in 17 s", 17))
    assert (err.status, err.headers) == (429, {"Retry-After": "17"})


def test_an_erasure_refusal_keeps_its_status(services):
    view = users.create_account(services.db, "o@example.org", lambda: "correct horse battery", None, actor="t",
                                base_url="http://gw")
    with pytest.raises(ErasureError) as info:
        delete_account(services.db, Principal.for_user("usr_stranger", "s@example.org"), view["id"])
    err = http_error(info.value)
    assert (err.status, err.message) == (404, f"no account {view['id']}")


@pytest.mark.parametrize("exc", [ValueError("x"), KeyError("k"), RuntimeError("boom")])
def test_anything_else_is_not_a_refusal(exc):
    assert http_error(exc) is None  # the app's handler answers 500


def test_the_table_covers_every_kind():
    assert set(STATUS) == {NotFound, Forbidden, Conflict, Invalid, TooMany}
