"""CORS (issue 14, point 1): a viewer served from another origin can call DICOMweb and the REST API."""

from __future__ import annotations

import pytest
import requests

from tests.conftest import make_backend
from tests.support.data import variant
from tests.support.gateway import Gateway, user_token

VIEWER = "http://viewer.example:3000"
OTHER = "https://ohif.example.org"


@pytest.fixture(scope="module")
def gw(tmp_path_factory, request):
    gw = Gateway(make_backend("sqlite", tmp_path_factory.mktemp("cors"), request),
                 extra_env={"DICOMGATE_CORS_ORIGINS": f"{VIEWER}, {OTHER}"}).start()
    yield gw
    gw.close()
    gw.stop()


@pytest.fixture(scope="module")
def holder(gw):
    acc = gw.new_account()
    return acc, user_token(gw, acc["owner"])


@pytest.mark.parametrize("path", ["/accounts/{id}/dicomweb/studies", "/api/v1/accounts"])
def test_a_preflight_from_a_listed_origin_is_answered(gw, holder, path):
    acc, _ = holder
    r = requests.options(gw.url + path.format(id=acc["id"]), timeout=30, headers={
        "Origin": VIEWER, "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization, accept"})
    assert r.status_code == 204
    assert r.headers["Access-Control-Allow-Origin"] == VIEWER
    assert "GET" in r.headers["Access-Control-Allow-Methods"]
    assert {"authorization", "accept", "content-type"} <= {
        h.strip().lower() for h in r.headers["Access-Control-Allow-Headers"].split(",")}
    assert int(r.headers["Access-Control-Max-Age"]) > 0
    assert "Origin" in r.headers["Vary"]


def test_every_answer_carries_the_origin_errors_included(gw, holder):
    acc, token = holder
    base = f"{gw.url}/accounts/{acc['id']}/dicomweb/studies"
    ok = requests.get(base, headers={"Origin": OTHER, "Authorization": f"Bearer {token}"}, timeout=30)
    assert ok.status_code in (200, 204) and ok.headers["Access-Control-Allow-Origin"] == OTHER
    denied = requests.get(base, headers={"Origin": OTHER}, timeout=30)
    assert denied.status_code == 401
    assert denied.headers["Access-Control-Allow-Origin"] == OTHER and "Origin" in denied.headers["Vary"]
    stow = requests.post(base, data=variant(), timeout=60, headers={
        "Origin": VIEWER, "Authorization": f"Bearer {token}", "Content-Type": "application/dicom"})
    assert stow.status_code == 200 and stow.headers["Access-Control-Allow-Origin"] == VIEWER


def test_an_origin_not_listed_gets_no_allow_origin(gw, holder):
    acc, token = holder
    r = requests.options(f"{gw.url}/api/v1/accounts", timeout=30, headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "GET"})
    assert "Access-Control-Allow-Origin" not in r.headers
    g = requests.get(f"{gw.url}/api/v1/accounts", headers={"Origin": "https://evil.example",
                                                           "Authorization": f"Bearer {token}"}, timeout=30)
    assert g.status_code == 200 and "Access-Control-Allow-Origin" not in g.headers


def test_the_holders_pages_stay_same_origin(gw):
    r = requests.get(f"{gw.url}/sign-in", headers={"Origin": VIEWER}, timeout=30)
    assert "Access-Control-Allow-Origin" not in r.headers


def test_cors_origins_must_be_origins():
    from gateway.runtime.settings import SettingsError, load_settings

    assert load_settings(env={"DICOMGATE_CORS_ORIGINS": f"{VIEWER},{OTHER}"}).cors_origins == [VIEWER, OTHER]
    assert load_settings(env={}).cors_origins is None
    with pytest.raises(SettingsError, match="not an origin"):
        load_settings(env={"DICOMGATE_CORS_ORIGINS": "http://viewer.example/path"})
