"""The REST API: sign-in, accounts, access, shares, links, audit, deletion with purge,
erasure receipts, trends, providers, OpenAPI, metrics; bad input and role escalation."""

from __future__ import annotations

import json
import secrets
import time

import pytest
import requests

from tests.support.data import uids, variant
from tests.support.gateway import user_token

OPERATOR = "op-" + secrets.token_urlsafe(16)


@pytest.fixture(scope="module")
def api_gw(tmp_path_factory, request):
    """A gateway with an operator token and a short purge window, per backend."""
    from tests.conftest import make_backend
    from tests.support.gateway import Gateway

    gws = []
    for kind in ("sqlite", "postgres"):
        gw = Gateway(make_backend(kind, tmp_path_factory.mktemp(f"api-{kind}"), request),
                     extra_env={"DICOMGATE_OPERATOR_TOKEN": OPERATOR, "DICOMGATE_PURGE_WINDOW": "10"}).start()
        gws.append(gw)
    yield {g.backend.name: g for g in gws}
    for gw in gws:
        gw.close()
        gw.stop()


@pytest.fixture(params=["sqlite", "postgres"])
def gw(api_gw, request):
    return api_gw[request.param]


def call(gw, method, path, token=None, auth=None, **kw):
    headers = kw.pop("headers", {})
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return requests.request(method, f"{gw.url}/api/v1{path}", headers=headers, auth=auth, timeout=60, **kw)


def owner_with_data(gw, n=2, sensitive=False):
    acc = gw.new_account()
    prv = gw.new_provider()
    gw.link(acc, prv, push=True, sensitive=True)
    bodies = [variant(ConfidentialityCode="PSY") if sensitive and i == 0 else variant() for i in range(n)]
    assert gw.stow(acc["id"], bodies, token=prv["token"]).status_code == 200
    return acc, prv, bodies, user_token(gw, acc["owner"])


def test_sign_in_and_wrong_password(gw):
    acc = gw.new_account()
    rsp = call(gw, "POST", "/auth/token", json={"email": acc["owner"], "password": acc["password"]})
    assert rsp.status_code == 200
    body = rsp.json()
    assert body["token"].startswith("dg_") and body["expires"]
    assert call(gw, "GET", "/accounts", body["token"]).status_code == 200
    rsp = call(gw, "POST", "/auth/token", json={"email": acc["owner"], "password": "nope"})
    assert rsp.status_code == 401 and rsp.json()["error"]


def test_repeated_failures_are_slowed_down(gw):
    acc = gw.new_account()
    codes = [call(gw, "POST", "/auth/token", json={"email": acc["owner"], "password": f"bad{i}"}).status_code
             for i in range(7)]
    assert codes == [401] * 5 + [429] * 2  # the 6th attempt, after 5 failures
    rsp = call(gw, "POST", "/auth/token", json={"email": acc["owner"], "password": acc["password"]})
    assert rsp.status_code == 429 and int(rsp.headers["Retry-After"]) > 0  # locked even with the right one


def test_accounts_lists_owned_and_shared(gw):
    acc, _, _, token = owner_with_data(gw)
    friend = gw.new_account()
    friend_token = user_token(gw, friend["owner"])
    assert [a["id"] for a in call(gw, "GET", "/accounts", friend_token).json()] == [friend["id"]]
    rsp = call(gw, "POST", f"/accounts/{acc['id']}/shares", token,
               json={"email": friend["owner"], "role": "viewer"})
    assert rsp.status_code == 201
    listed = {a["id"]: a["role"] for a in call(gw, "GET", "/accounts", friend_token).json()}
    assert listed == {friend["id"]: "owner", acc["id"]: "viewer"}


def test_access_lists_everyone_and_revocation_is_immediate(gw):
    acc, prv, bodies, token = owner_with_data(gw)
    friend = gw.new_account()
    ftoken = user_token(gw, friend["owner"])
    share = call(gw, "POST", f"/accounts/{acc['id']}/shares", token,
                 json={"email": friend["owner"], "role": "viewer", "expires": "2099-01-01T00:00:00Z"}).json()
    access = call(gw, "GET", f"/accounts/{acc['id']}/access", token).json()
    assert access["owner"]["email"] == acc["owner"]
    assert [(s["id"], s["email"], s["role"], s["sensitive"]) for s in access["shares"]] == \
        [(share["id"], friend["owner"], "viewer", False)]
    assert access["shares"][0]["expires"].startswith("2099-01-01")
    [link] = access["links"]
    assert link["provider"] == prv["name"] and link["push"] and not link["pull"] and link["sensitive"]

    study = uids(bodies[0])[0]
    wado = f"{gw.url}/accounts/{acc['id']}/dicomweb/studies/{study}"
    assert requests.get(wado, headers={"Authorization": f"Bearer {ftoken}"}, timeout=30).status_code == 200
    assert call(gw, "DELETE", f"/accounts/{acc['id']}/shares/{share['id']}", token).status_code == 204
    assert requests.get(wado, headers={"Authorization": f"Bearer {ftoken}"}, timeout=30).status_code == 404
    assert call(gw, "DELETE", f"/accounts/{acc['id']}/links/{link['id']}", token).status_code == 204
    assert gw.stow(acc["id"], [variant()], token=prv["token"]).status_code == 404
    assert call(gw, "GET", f"/accounts/{acc['id']}/access", token).json()["links"] == []


def test_viewer_reads_but_cannot_write_and_sees_no_sensitive(gw):
    acc, _, bodies, token = owner_with_data(gw, sensitive=True)
    viewer = gw.new_account()
    vtoken = user_token(gw, viewer["owner"])
    call(gw, "POST", f"/accounts/{acc['id']}/shares", token, json={"email": viewer["owner"], "role": "viewer"})
    seen = call(gw, "GET", f"/accounts/{acc['id']}/studies", vtoken).json()
    assert [s["study"] for s in seen] == [uids(bodies[1])[0]]
    assert gw.stow(acc["id"], [variant()], token=vtoken).status_code == 403
    rsp = requests.get(f"{gw.url}/accounts/{acc['id']}/dicomweb/studies/{uids(bodies[0])[0]}",
                       headers={"Authorization": f"Bearer {vtoken}"}, timeout=30)
    assert rsp.status_code == 404


@pytest.mark.parametrize("attempt", ["revoke-share", "delete-study", "delete-account", "grant-share", "access",
                                     "audit", "create-link"])
def test_role_escalation_is_refused_and_changes_nothing(gw, attempt):
    acc, prv, bodies, token = owner_with_data(gw)
    viewer = gw.new_account()
    vtoken = user_token(gw, viewer["owner"])
    share = call(gw, "POST", f"/accounts/{acc['id']}/shares", token,
                 json={"email": viewer["owner"], "role": "viewer"}).json()
    study = uids(bodies[0])[0]
    a = acc["id"]
    req = {
        "revoke-share": ("DELETE", f"/accounts/{a}/shares/{share['id']}", None),
        "delete-study": ("DELETE", f"/accounts/{a}/studies/{study}", None),
        "delete-account": ("DELETE", f"/accounts/{a}", None),
        "grant-share": ("POST", f"/accounts/{a}/shares", {"email": viewer["owner"], "role": "editor"}),
        "access": ("GET", f"/accounts/{a}/access", None),
        "audit": ("GET", f"/accounts/{a}/audit", None),
        "create-link": ("POST", f"/accounts/{a}/links", {"provider": prv["id"], "pull": True}),
    }[attempt]
    before = call(gw, "GET", f"/accounts/{a}/access", token).json()
    for who in (vtoken, prv["token"]):
        rsp = call(gw, req[0], req[1], who, json=req[2])
        assert rsp.status_code == 403, (who[:6], rsp.text)
        assert rsp.json()["error"]
    assert call(gw, "GET", f"/accounts/{a}/access", token).json() == before
    assert len(call(gw, "GET", f"/accounts/{a}/studies", token).json()) == 2


def test_other_accounts_ids_are_404(gw):
    acc, _, _, token = owner_with_data(gw)
    other, _, other_bodies, other_token = owner_with_data(gw)
    for method, path in [("GET", f"/accounts/{other['id']}/access"), ("GET", f"/accounts/{other['id']}/audit"),
                         ("DELETE", f"/accounts/{other['id']}"),
                         ("DELETE", f"/accounts/{other['id']}/studies/{uids(other_bodies[0])[0]}"),
                         ("GET", "/accounts/acc_doesnotexist/access")]:
        assert call(gw, method, path, token).status_code == 404, path
    assert len(call(gw, "GET", f"/accounts/{other['id']}/studies", other_token).json()) == 2


@pytest.mark.parametrize("body,status", [
    (b"{not json", 400), (b"[1,2]", 400), (b'{"email": "x@example.org"}', 400),
    (b'{"email": "x@example.org", "role": "admin"}', 400),
    (b'{"email": "x@example.org", "role": "viewer", "sensitive": "yes"}', 400),
    (b'{"email": "x@example.org", "role": "viewer", "extra": 1}', 400),
    (b'{"email": "nobody@localhost", "role": "viewer"}', 400),  # an unknown email is granted (no enumeration)
    (b'{"email": "x@example.org", "role": "viewer", "expires": "yesterday"}', 400),
    (json.dumps({"email": "x@example.org", "role": "viewer", "pad": "x" * 70000}).encode(), 413),
])
def test_malformed_or_oversized_json_changes_nothing(gw, body, status):
    acc, _, _, token = owner_with_data(gw, n=1)
    gw.new_account("x@example.org") if not _user_exists(gw, "x@example.org") else None
    rsp = call(gw, "POST", f"/accounts/{acc['id']}/shares", token, data=body,
               headers={"Content-Type": "application/json"})
    assert rsp.status_code == status, rsp.text
    assert rsp.json()["error"]
    assert call(gw, "GET", f"/accounts/{acc['id']}/access", token).json()["shares"] == []


def _user_exists(gw, email):
    from gateway.identity.accounts import find_user

    with gw.services.db.session() as s:
        return find_user(s, email) is not None


def test_expired_and_revoked_tokens(gw):
    acc = gw.new_account()
    expired = user_token(gw, acc["owner"], ttl=1)
    time.sleep(1.5)
    rsp = call(gw, "GET", "/accounts", expired)
    assert rsp.status_code == 401 and "expired" in rsp.json()["error"]
    good = user_token(gw, acc["owner"])
    from gateway.identity.credentials import hash_token
    from gateway.db.base import utcnow
    from gateway.db.models import ApiToken
    from sqlalchemy import select

    with gw.services.db.session(write=True) as s:
        s.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(good))).revoked_at = utcnow()
    assert call(gw, "GET", "/accounts", good).status_code == 401


def test_audit_trail_is_newest_first_and_append_only(gw):
    acc, prv, bodies, token = owner_with_data(gw)
    requests.get(f"{gw.url}/accounts/{acc['id']}/dicomweb/studies/{uids(bodies[0])[0]}",
                 headers={"Authorization": f"Bearer {token}"}, timeout=30)
    entries = call(gw, "GET", f"/accounts/{acc['id']}/audit", token).json()
    assert [e["action"] for e in entries[:3]] == ["study.retrieved", "instance.stored", "instance.stored"]
    assert {"time", "actor", "action", "study", "detail"} <= set(entries[0])
    assert entries[-1]["action"] == "account.created"
    ids = [e["id"] for e in entries]
    assert ids == sorted(ids, reverse=True)
    # no method changes an entry: every write verb on the audit path is refused
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        assert call(gw, method, f"/accounts/{acc['id']}/audit", token, json={}).status_code == 405
        assert call(gw, method, f"/accounts/{acc['id']}/audit/{ids[0]}", token, json={}).status_code in (404, 405)
    again = call(gw, "GET", f"/accounts/{acc['id']}/audit", token).json()
    assert [e for e in again if e["id"] in ids] == entries


def _no_trace(gw, acc_id, sop_uids, names):
    """No object, row or database file under the data store holds the erased UIDs or names."""
    keys = list(gw.services.store.iter_keys(""))
    assert not [k for k in keys if any(u in k for u in sop_uids)]
    for key in keys:
        data = gw.read_object(key)
        assert not any(u.encode() in data for u in sop_uids)
    for path in gw.backend.data_dir.rglob("*"):
        if path.is_file() and not path.name.endswith(".log"):
            data = path.read_bytes()
            for needle in list(sop_uids) + list(names):
                assert needle.encode() not in data, (path, needle)


def test_delete_study_invisible_at_once_then_purged(gw):
    acc, prv, bodies, token = owner_with_data(gw, n=3)
    target = variant(PatientName="Erase^Me^Please", PatientID="ERASE1")
    assert gw.stow(acc["id"], [target], token=prv["token"]).status_code == 200
    study, series, sop = uids(target)
    rsp = call(gw, "DELETE", f"/accounts/{acc['id']}/studies/{study}", token)
    assert rsp.status_code == 202
    status_url = rsp.json()["status_url"]
    # invisible at once: QIDO, WADO, the studies list, DIMSE
    base = f"{gw.url}/accounts/{acc['id']}/dicomweb"
    hdr = {"Authorization": f"Bearer {token}"}
    assert requests.get(f"{base}/studies/{study}", headers=hdr, timeout=30).status_code == 404
    assert study not in [i["0020000D"]["Value"][0] for i in requests.get(f"{base}/studies", headers=hdr, timeout=30).json()]
    assert study not in [s["study"] for s in call(gw, "GET", f"/accounts/{acc['id']}/studies", token).json()]
    assert requests.get(status_url, timeout=30).json()["status"] in ("pending", "purged")
    # purged by the scheduler within the window (10 s here)
    deadline = time.time() + 30
    while time.time() < deadline and requests.get(status_url, timeout=30).json()["status"] != "purged":
        time.sleep(0.5)
    receipt = requests.get(status_url, timeout=30).json()
    assert receipt["status"] == "purged" and receipt["objects_removed"] == 1 and receipt["purged_at"]
    _no_trace(gw, acc["id"], [sop], ["Erase^Me^Please", "ERASE1"])
    assert len(call(gw, "GET", f"/accounts/{acc['id']}/studies", token).json()) == 3


def test_delete_account_202_with_unguessable_receipt_then_purged(gw):
    acc, prv, _, token = owner_with_data(gw, n=1)
    name = "Gone^" + secrets.token_hex(4)
    bodies = [variant(PatientName=name), variant(PatientName=name)]
    assert gw.stow(acc["id"], bodies, token=prv["token"]).status_code == 200
    sops = [uids(b)[2] for b in bodies]
    rsp = call(gw, "DELETE", f"/accounts/{acc['id']}", token)
    assert rsp.status_code == 202
    status_url = rsp.json()["status_url"]
    assert len(status_url.rsplit("/", 1)[1]) >= 40
    assert call(gw, "GET", f"/accounts/{acc['id']}/access", token).status_code == 404
    assert gw.stow(acc["id"], [variant()], token=prv["token"]).status_code == 404
    assert requests.get(f"{gw.url}/api/v1/erasures/{'x' * 43}", timeout=30).status_code == 404
    rsp = gw.cli("jobs", "run", "purge", "--json")
    assert json.loads(rsp.stdout)["accounts"] >= 1 or requests.get(status_url, timeout=30).json()["status"] == "purged"
    receipt = requests.get(status_url, timeout=30).json()
    assert receipt["status"] == "purged" and receipt["objects_removed"] == 3
    assert set(receipt) >= {"status", "requested", "purged_at", "objects_removed"}
    _no_trace(gw, acc["id"], sops, [name])
    assert gw.object_keys(acc["id"]) == [] and gw.instance_rows(acc["id"]) == []


def test_trends_are_published_to_signed_in_users_only(gw):
    acc = gw.new_account()
    token = user_token(gw, acc["owner"])
    body = call(gw, "GET", "/stats/trends", token).json()
    assert set(body) == {"k", "cells", "suppressed_cells"} and body["k"] == 10
    assert all(c["studies"] >= 10 for c in body["cells"])
    assert call(gw, "GET", "/stats/trends").status_code == 401
    cli = gw.cli_json("stats", "trends")
    assert cli["k"] == body["k"]


def test_operator_manages_providers_and_links(gw):
    acc = gw.new_account()
    op = OPERATOR
    rsp = call(gw, "POST", "/providers", op, json={"name": "Op PACS", "ae_title": "OPPACS" + secrets.token_hex(2).upper(),
                                                   "networks": ["127.0.0.0/8"]})
    assert rsp.status_code == 201
    prv = rsp.json()
    assert prv["token"].startswith("dg_")
    assert prv["id"] in [p["id"] for p in call(gw, "GET", "/providers", op).json()]
    link = call(gw, "POST", f"/accounts/{acc['id']}/links", op, json={"provider": prv["id"], "push": True})
    assert link.status_code == 201
    assert gw.stow(acc["id"], [variant()], token=prv["token"]).status_code == 200
    assert call(gw, "DELETE", f"/providers/{prv['id']}", op).status_code == 204
    assert gw.stow(acc["id"], [variant()], token=prv["token"]).status_code == 401
    # the operator never reads images nor the holder's access list
    assert call(gw, "GET", f"/accounts/{acc['id']}/access", op).status_code == 403
    assert requests.get(f"{gw.url}/accounts/{acc['id']}/dicomweb/studies",
                        headers={"Authorization": f"Bearer {op}"}, timeout=30).status_code == 403
    # users are not operators
    assert call(gw, "GET", "/providers", user_token(gw, acc["owner"])).status_code == 403


def test_openapi_matches_the_routes(gw):
    doc = call(gw, "GET", "/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    paths = doc["paths"]
    for path, method in [("/api/v1/auth/token", "post"), ("/api/v1/accounts", "get"),
                         ("/api/v1/accounts/{account_id}/access", "get"),
                         ("/api/v1/accounts/{account_id}/shares", "post"),
                         ("/api/v1/accounts/{account_id}/shares/{share_id}", "delete"),
                         ("/api/v1/accounts/{account_id}/links", "post"),
                         ("/api/v1/accounts/{account_id}/links/{link_id}", "delete"),
                         ("/api/v1/accounts/{account_id}/audit", "get"),
                         ("/api/v1/accounts/{account_id}/studies/{study}", "delete"),
                         ("/api/v1/accounts/{account_id}", "delete"),
                         ("/api/v1/stats/trends", "get"), ("/api/v1/providers", "get"),
                         ("/api/v1/providers", "post"), ("/api/v1/providers/{provider_id}", "delete")]:
        assert method in paths.get(path, {}), (path, method)
    # every documented operation exists, and every API route is documented
    from gateway.http.app import create_app

    app = create_app(gw.services)
    rules = {(r.rule, m.lower()) for r in app.url_map.iter_rules() if r.rule.startswith("/api/v1")
             and not r.rule.endswith("openapi.json") for m in r.methods - {"HEAD", "OPTIONS"}}
    import re

    documented = {(re.sub(r"\{([^}]+)\}", r"<\1>", p), m) for p, ops in paths.items() for m in ops}
    assert documented == rules


def test_metrics_and_healthz(gw):
    acc, _, _, _ = owner_with_data(gw, n=1)
    text = requests.get(f"{gw.url}/metrics", timeout=30).text
    assert "dicomgate_ingest_instances_total" in text and 'outcome="stored"' in text
    assert "dicomgate_http_requests_total" in text
    assert acc["id"] not in text
    assert requests.get(f"{gw.url}/healthz", timeout=30).json()["status"] == "ok"


def test_sensitive_study_is_not_found_for_an_editor_without_the_flag(gw):
    acc, prv, bodies, token = owner_with_data(gw, sensitive=True)
    editor = gw.new_account()
    etoken = user_token(gw, editor["owner"])
    call(gw, "POST", f"/accounts/{acc['id']}/shares", token, json={"email": editor["owner"], "role": "editor"})
    sensitive_study, plain_study = uids(bodies[0])[0], uids(bodies[1])[0]
    rsp = call(gw, "DELETE", f"/accounts/{acc['id']}/studies/{sensitive_study}", etoken)
    assert rsp.status_code == 404  # exactly like a study that does not exist
    assert call(gw, "DELETE", f"/accounts/{acc['id']}/studies/1.2.3.4.5", etoken).status_code == 404
    assert call(gw, "DELETE", f"/accounts/{acc['id']}/studies/{plain_study}", etoken).status_code == 202
    assert len(call(gw, "GET", f"/accounts/{acc['id']}/studies", token).json()) == 1


def test_provider_tokens_do_not_get_the_studies_list(gw):
    acc = gw.new_account()
    prv = gw.new_provider()
    gw.link(acc, prv, pull=True, push=True)
    assert call(gw, "GET", f"/accounts/{acc['id']}/studies", prv["token"]).status_code == 403


def test_guessing_the_operator_token_is_throttled(gw):
    codes = [call(gw, "GET", "/providers", f"not-the-operator-token-{i}").status_code for i in range(8)]
    assert codes == [401] * 5 + [429] * 3
