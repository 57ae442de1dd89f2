"""gateway.identity.holder, grants and users: one transaction per call, plain values out, typed refusals."""

from __future__ import annotations

import io

import pytest

from consent.decision import Action, Principal
from consent.errors import ConsentError
from gateway.archive.access import NotPermitted, NotVisible
from gateway.errors import NotFound
from gateway.http.errors import http_error
from gateway.identity import grants, holder, users
from gateway.identity.sign_in import sign_in
from tests.support.data import uids, variant

PASSWORD = "correct horse battery"


@pytest.fixture
def account(services):
    view = users.create_account(services.db, "owner@example.org", lambda: PASSWORD, None, actor="t",
                                base_url="http://gw")
    return view, sign_in(services, "owner@example.org", PASSWORD, None)


def _user_id(services, email):
    return sign_in(services, email, PASSWORD, None).id


def test_create_account_makes_the_user_once_and_asks_the_password_only_then(services):
    asked = []
    first = users.create_account(services.db, "new@example.org", lambda: asked.append(1) or PASSWORD, None,
                                 actor="t", base_url="http://gw/")
    second = users.create_account(services.db, "new@example.org", lambda: asked.append(1) or PASSWORD, None,
                                  actor="t", base_url="http://gw/")
    assert len(asked) == 1 and first["owner"] == second["owner"] == "new@example.org"
    assert first["dicomweb_url"] == f"http://gw/accounts/{first['id']}/dicomweb"
    assert {a["id"] for a in users.list_accounts(services.db, "http://gw")} == {first["id"], second["id"]}


def test_unknown_accounts_and_users_are_not_found(services):
    with pytest.raises(NotFound, match="no account acc_nope"):
        users.show_account(services.db, "acc_nope", "http://gw")
    with pytest.raises(NotFound, match="no user with email ghost@example.org"):
        users.issue_user_token(services.db, "ghost@example.org", ttl=60)


def test_open_account_returns_plain_values_not_rows(services, account):
    view, owner = account
    opened = holder.open_account(services.db, owner, Action.MANAGE, view["id"], "http://gw")
    assert opened.id == view["id"] and opened.owned_by(owner) and opened.decision.allowed
    assert opened.view == {k: view[k] for k in ("id", "ae_title", "dicomweb_url", "owner", "created")}
    assert all(type(v).__module__ == "builtins" for v in opened.view.values())


def test_the_gate_hides_an_account_from_a_stranger_and_refuses_a_viewer_manage(services, account):
    view, owner = account
    users.create_user(services.db, "viewer@example.org", PASSWORD)
    stranger = Principal.for_user("usr_stranger", "stranger@example.org")
    with pytest.raises(NotVisible):
        holder.open_account(services.db, stranger, Action.READ, view["id"], "http://gw")
    grants.grant_share(services.db, account_id=view["id"], email="viewer@example.org", role="viewer",
                       sensitive=False, expires=None, actor=owner.label)
    viewer = Principal.for_user(_user_id(services, "viewer@example.org"), "viewer@example.org")
    assert holder.check(services.db, viewer, Action.READ, view["id"]).allowed
    with pytest.raises(NotPermitted):
        holder.check(services.db, viewer, Action.MANAGE, view["id"])
    assert [a["id"] for a in holder.my_accounts(services.db, viewer, "http://gw")] == [view["id"]]


def test_studies_and_counts_follow_ingest_and_deletion(services, account):
    view, owner = account
    body = variant(PatientName="Holder^Test")
    assert services.ingest.store_instance(owner, view["id"], io.BytesIO(body), len(body)).outcome.ok
    studies, may_delete = holder.account_studies(services.db, owner, view["id"])
    assert may_delete and [s["study"] for s in studies] == [uids(body)[0]]
    assert holder.live_study_count(services.db, view["id"]) == 1
    assert holder.visible_studies(services.db, owner, view["id"]) == studies


def test_links_and_shares_change_in_one_call_each_and_refuse_by_kind(services, account):
    view, owner = account
    prv = grants.add_provider(services.db, name="PACS", ae_title="PACSH", networks=["10.0.0.0/8"], host=None,
                              port=None, actor="op")
    assert "token" in prv and [p["id"] for p in grants.list_providers(services.db)] == [prv["id"]]
    link = grants.create_link(services.db, account_id=view["id"], provider_id=prv["id"], push=True, pull=False,
                              sensitive=False, expires=None, actor="op")
    shares, links = holder.access_lists(services.db, view["id"])
    assert shares == [] and [l["id"] for l in links] == [link["id"]]
    assert grants.revoke_link(services.db, link["id"], actor="op")["in_force"] is False
    with pytest.raises(ConsentError) as info:
        grants.revoke_link(services.db, link["id"], actor="op")
    assert "already revoked" in str(info.value) and http_error(info.value).status in (400, 409)
    with pytest.raises(ConsentError) as info:
        grants.revoke_link(services.db, "lnk_nope", actor="op")
    assert http_error(info.value).status == 404 and str(info.value) == "no link lnk_nope"
    assert grants.list_links(services.db, view["id"], in_force_only=True) == []
    entries = holder.audit_entries(services.db, view["id"], limit=10, before_id=None)
    assert [e["action"] for e in entries][:2] == ["link.revoked", "link.created"]


def test_a_token_for_a_removed_provider_is_refused(services):
    prv = grants.add_provider(services.db, name="Gone", ae_title="GONE1", networks=[], host=None, port=None,
                              actor="op")
    assert grants.issue_provider_token(services.db, prv["id"])["provider"] == prv["id"]
    grants.remove_provider(services.db, prv["id"], actor="op")
    with pytest.raises(ConsentError) as info:
        grants.issue_provider_token(services.db, prv["id"])
    assert http_error(info.value).status == 404
