"""gateway.http.pages in-process: the delete-confirmation page finds its one study through the query
service (no scan), and a refusal's page status comes from its class."""

from __future__ import annotations

import io

import pytest

from gateway.http.app import create_app
from gateway.identity import grants, users
from gateway.identity.sign_in import issue_user_token, sign_in
from tests.support.data import uids, variant

PASSWORD = "correct horse battery"


@pytest.fixture
def page(services):
    view = users.create_account(services.db, "pages@example.org", lambda: PASSWORD, None, actor="t",
                                base_url="http://gw")
    owner = sign_in(services, "pages@example.org", PASSWORD, None)
    body = variant(PatientName="Page^Patient", StudyDescription="Knee MRI")
    assert services.ingest.store_instance(owner, view["id"], io.BytesIO(body), len(body)).outcome.ok
    token, _ = issue_user_token(services.db, owner.id, ttl=600)
    client = create_app(services).test_client()
    client.set_cookie("dg_session", token)
    return client, view["id"], uids(body)[0]


def test_the_delete_confirmation_shows_the_one_study(page):
    client, account_id, study = page
    r = client.get(f"/accounts/{account_id}/studies/{study}/delete")
    assert r.status_code == 200
    text = r.get_data(as_text=True)
    assert study in text and "Page Patient" in text and "Knee MRI" in text
    assert "<dt>Instances</dt><dd>1</dd>" in text


@pytest.mark.parametrize("uid", ["1.2.3.4.5", "not-a-uid", "1." * 40])
def test_an_unknown_or_malformed_study_is_404(page, uid):
    client, account_id, _ = page
    r = client.get(f"/accounts/{account_id}/studies/{uid}/delete")
    assert r.status_code == 404 and "no such study in this account" in r.get_data(as_text=True)


def test_a_deleted_study_is_404_at_once(page):
    client, account_id, study = page
    from_page = client.get(f"/accounts/{account_id}/studies/{study}/delete").get_data(as_text=True)
    csrf = from_page.split('name="csrf_token" value="')[1].split('"')[0]
    r = client.post(f"/accounts/{account_id}/studies/{study}/delete", data={"csrf_token": csrf})
    assert r.status_code == 303
    assert client.get(f"/accounts/{account_id}/studies/{study}/delete").status_code == 404


def test_refusals_take_their_status_from_their_class(page, services):
    client, account_id, _ = page
    form = client.get(f"/accounts/{account_id}/access").get_data(as_text=True)
    csrf = form.split('name="csrf_token" value="')[1].split('"')[0]
    r = client.post(f"/accounts/{account_id}/links/lnk_nope/revoke", data={"csrf_token": csrf})
    assert r.status_code == 404 and "no link lnk_nope" in r.get_data(as_text=True)  # UnknownParty
    prv = grants.add_provider(services.db, name="P", ae_title="PAGESP", networks=[], host=None, port=None,
                              actor="op")
    link = grants.create_link(services.db, account_id=account_id, provider_id=prv["id"], push=True, pull=False,
                              sensitive=False, expires=None, actor="op")
    assert client.post(f"/accounts/{account_id}/links/{link['id']}/revoke",
                       data={"csrf_token": csrf}).status_code == 303
    r = client.post(f"/accounts/{account_id}/links/{link['id']}/revoke", data={"csrf_token": csrf})
    assert r.status_code == 409 and "already revoked" in r.get_data(as_text=True)  # AlreadyDone
