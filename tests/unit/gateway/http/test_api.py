"""gateway.http.api in-process: a service's refusal becomes JSON with the status of its class, from
the app's one handler (no per-route wrapper)."""

from __future__ import annotations

import pytest

from gateway.http.app import create_app
from gateway.identity import grants, users
from gateway.runtime.settings import replace

OPERATOR = "an-operator-token-long-enough"


@pytest.fixture
def client(services):
    services.settings = replace(services.settings, operator_token=OPERATOR)
    c = create_app(services).test_client()
    c.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {OPERATOR}"
    return c


def test_an_unknown_provider_is_404_json(client):
    r = client.delete("/api/v1/providers/prv_nope")
    assert (r.status_code, r.get_json()) == (404, {"error": "no provider prv_nope"})


def test_an_already_revoked_link_is_409_and_a_bad_value_400(client, services):
    acc = users.create_account(services.db, "api@example.org", lambda: "correct horse battery", None,
                               actor="t", base_url="http://gw")
    prv = grants.add_provider(services.db, name="P", ae_title="APIP", networks=[], host=None, port=None,
                              actor="op")
    link = client.post(f"/api/v1/accounts/{acc['id']}/links", json={"provider": prv["id"], "push": True})
    assert link.status_code == 201
    assert client.delete(f"/api/v1/accounts/{acc['id']}/links/{link.get_json()['id']}").status_code == 204
    again = client.delete(f"/api/v1/accounts/{acc['id']}/links/{link.get_json()['id']}")
    assert again.status_code == 409 and "already revoked" in again.get_json()["error"]
    bad = client.post(f"/api/v1/accounts/{acc['id']}/links", json={"provider": prv["id"]})  # no scope
    assert bad.status_code == 400 and "scope" in bad.get_json()["error"]


def test_a_provider_ae_title_clash_is_409(client):
    body = {"name": "One", "ae_title": "CLASHAE"}
    assert client.post("/api/v1/providers", json=body).status_code == 201
    r = client.post("/api/v1/providers", json=body | {"name": "Two"})
    assert r.status_code == 409 and "already registered" in r.get_json()["error"]


def test_an_unknown_account_is_404_for_the_operator_too(client):
    r = client.post("/api/v1/accounts/acc_nope/links", json={"provider": "prv_x", "push": True})
    assert (r.status_code, r.get_json()) == (404, {"error": "no account acc_nope"})
