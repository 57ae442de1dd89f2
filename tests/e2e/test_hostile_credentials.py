"""Issue 11, hostile peers: credentials, cookies, files and numbers, against a real ``dicomgate serve``.

- numbers in query parameters (REST, pages, QIDO) out of range or not numbers: 400, never 500
- the sign-in throttle answers 429 on the 6th attempt after 5 failures (REST, HTTP Basic, the page)
- the operator's page cookie is a session token of its own, dead after sign-out
- cookies are ``Secure`` when ``public_url`` is https; ``public_url`` is the CLI's ``dicomweb_url``
- the index database and its WAL / SHM files are 0600, a data directory the service makes 0700
- passwords shorter than 8 characters are refused with a clear error
- a share to an unknown email answers exactly like one to a known email
"""

from __future__ import annotations

import os
import re
import secrets
import stat
import subprocess

import pytest
import requests
from requests.adapters import HTTPAdapter

from tests.support.data import variant
from tests.support.gateway import BIN, Backend, Gateway, user_token

OPERATOR = "op-" + secrets.token_urlsafe(24)
PUBLIC = "https://dicomgate.example.org"


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def hgw(request, tmp_path_factory):
    """A gateway with an operator token and an https public_url, per backend."""
    from tests.conftest import make_backend

    g = Gateway(make_backend(request.param, tmp_path_factory.mktemp(f"hostile-{request.param}"), request),
                extra_env={"DICOMGATE_OPERATOR_TOKEN": OPERATOR, "DICOMGATE_PUBLIC_URL": PUBLIC}).start()
    yield g
    g.close()
    g.stop()


class _SourceAdapter(HTTPAdapter):
    """Connections from one loopback address of our own, so each test has its own per-address budget."""

    def __init__(self, source: str) -> None:
        self.source = source
        super().__init__()

    def init_poolmanager(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        kwargs["source_address"] = (self.source, 0)
        super().init_poolmanager(*args, **kwargs)


def from_address() -> requests.Session:
    sess = requests.Session()
    sess.mount("http://", _SourceAdapter(f"127.{secrets.randbelow(200) + 20}.{secrets.randbelow(250) + 1}."
                                         f"{secrets.randbelow(250) + 2}"))
    return sess


def set_cookies(resp: requests.Response) -> dict[str, str]:
    """name -> the whole Set-Cookie header (requests drops Secure cookies on http, so read the headers)."""
    out = {}
    for header in resp.raw.headers.getlist("Set-Cookie"):
        out[header.split("=", 1)[0]] = header
    return out


def cookie_value(header: str) -> str:
    return header.split("=", 1)[1].split(";", 1)[0]


# ---------------------------------------------------------------- numbers
HUGE = "99999999999999999999"
BAD_NUMBERS = [HUGE, "9223372036854775808", "-1", "abc", "1e3", "\u00b2", "\u0661\u0662", "1_000", ""]


@pytest.mark.parametrize("param", ["limit", "before"])
def test_rest_audit_numbers_out_of_range_are_400(hgw, param):
    acc = hgw.new_account()
    token = user_token(hgw, acc["owner"])
    url = f"{hgw.url}/api/v1/accounts/{acc['id']}/audit"
    for value in BAD_NUMBERS + (["0", "1001"] if param == "limit" else ["0"]):
        r = requests.get(url, params={param: value}, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert r.status_code == 400, (param, value, r.status_code, r.text[:200])
        assert param in r.json()["error"]
    ok = requests.get(url, params={param: "9223372036854775807" if param == "before" else "1000"},
                      headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert ok.status_code == 200 and ok.json()


def test_page_audit_numbers_out_of_range_are_400(hgw):
    acc = hgw.new_account()
    cookie = {"Cookie": f"dg_session={user_token(hgw, acc['owner'])}"}
    url = f"{hgw.url}/accounts/{acc['id']}/audit"
    for value in BAD_NUMBERS[:-1] + ["0"]:
        r = requests.get(url, params={"before": value}, headers=cookie, timeout=30, allow_redirects=False)
        assert r.status_code == 400 and "before" in r.text, (value, r.status_code)
    assert requests.get(url, headers=cookie, timeout=30, allow_redirects=False).status_code == 200


@pytest.mark.parametrize("param", ["limit", "offset", "SeriesNumber", "InstanceNumber"])
def test_qido_numbers_out_of_range_are_400(hgw, param):
    acc = hgw.new_account()
    prv = hgw.new_provider()
    hgw.link(acc, prv, push=True, pull=True)
    assert hgw.stow(acc["id"], [variant()], token=prv["token"]).status_code == 200
    level = "instances" if param == "InstanceNumber" else "series"
    url = f"{hgw.url}/accounts/{acc['id']}/dicomweb/{level}"
    headers = {"Authorization": f"Bearer {prv['token']}"}
    bad = BAD_NUMBERS if param in ("limit", "offset") else [HUGE, "2147483648", "abc", "\u00b2"]
    for value in bad:
        r = requests.get(url, params={param: value}, headers=headers, timeout=30)
        assert r.status_code == 400, (param, value, r.status_code, r.text[:200])
        assert param in r.text
    r = requests.get(url, params={param: "0" if param == "offset" else "1"}, headers=headers, timeout=30)
    assert r.status_code == 200
    largest = {"limit": "1000", "offset": "9223372036854775807"}.get(param, "2147483647")
    r = requests.get(url, params={param: largest}, headers=headers, timeout=30)
    assert r.status_code == 200 and (r.json() == []) == (param != "limit")


# ---------------------------------------------------------------- throttle
def _attempts(send, n: int) -> list[int]:
    return [send(i).status_code for i in range(n)]


def test_rest_sign_in_is_refused_on_the_6th_attempt(hgw):
    acc = hgw.new_account()
    sess = from_address()
    url = f"{hgw.url}/api/v1/auth/token"
    codes = _attempts(lambda i: sess.post(url, json={"email": acc["owner"], "password": f"bad-{i}"},
                                          timeout=30), 5)
    assert codes == [401] * 5
    r = sess.post(url, json={"email": acc["owner"], "password": acc["password"]}, timeout=30)
    assert r.status_code == 429 and 0 < int(r.headers["Retry-After"]) <= 30  # the right password too
    # the email is locked from any address
    r = from_address().post(url, json={"email": acc["owner"], "password": acc["password"]}, timeout=30)
    assert r.status_code == 429


def test_basic_auth_is_refused_on_the_6th_attempt(hgw):
    acc = hgw.new_account()
    sess = from_address()
    url = f"{hgw.url}/accounts/{acc['id']}/dicomweb/studies"
    codes = _attempts(lambda i: sess.get(url, auth=(acc["owner"], f"bad-{i}"), timeout=30), 5)
    assert codes == [401] * 5
    r = sess.get(url, auth=(acc["owner"], acc["password"]), timeout=30)
    assert r.status_code == 429 and 0 < int(r.headers["Retry-After"]) <= 30


def test_sign_in_page_is_refused_on_the_6th_attempt(hgw):
    acc = hgw.new_account()
    sess = from_address()

    def post(password: str) -> requests.Response:
        return sess.post(f"{hgw.url}/sign-in", data={"email": acc["owner"], "password": password,
                                                      "csrf_token": "pre"},
                         headers={"Cookie": "dg_signin=pre"}, allow_redirects=False, timeout=30)

    assert _attempts(lambda i: post(f"bad-{i}"), 5) == [401] * 5
    r = post(acc["password"])
    assert r.status_code == 429 and 0 < int(r.headers["Retry-After"]) <= 30


def test_a_success_before_the_limit_clears_the_count(hgw):
    acc = hgw.new_account()
    sess = from_address()
    url = f"{hgw.url}/api/v1/auth/token"
    assert _attempts(lambda i: sess.post(url, json={"email": acc["owner"], "password": f"bad-{i}"},
                                         timeout=30), 4) == [401] * 4
    assert sess.post(url, json={"email": acc["owner"], "password": acc["password"]}, timeout=30).status_code == 200
    assert _attempts(lambda i: sess.post(url, json={"email": acc["owner"], "password": f"bad-{i}"},
                                         timeout=30), 5) == [401] * 5


# ---------------------------------------------------------------- cookies
def _operator_sign_in(gw: Gateway, sess: requests.Session) -> requests.Response:
    return sess.post(f"{gw.url}/operator/sign-in", data={"operator_token": OPERATOR, "csrf_token": "pre"},
                     headers={"Cookie": "dg_signin=pre"}, allow_redirects=False, timeout=30)


def test_operator_cookie_is_a_session_that_sign_out_ends(hgw):
    sess = from_address()
    r = _operator_sign_in(hgw, sess)
    assert r.status_code == 303 and r.headers["Location"].endswith("/operator/providers")
    value = cookie_value(set_cookies(r)["dg_session"])
    assert value and OPERATOR not in value and value != OPERATOR
    headers = {"Cookie": f"dg_session={value}"}
    page = sess.get(f"{hgw.url}/operator/providers", headers=headers, allow_redirects=False, timeout=30)
    assert page.status_code == 200
    # the session is for the pages, not an operator token for the API
    assert sess.get(f"{hgw.url}/api/v1/providers", headers={"Authorization": f"Bearer {value}"},
                    timeout=30).status_code == 401
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    out = sess.post(f"{hgw.url}/sign-out", data={"csrf_token": csrf}, headers=headers, allow_redirects=False,
                    timeout=30)
    assert out.status_code == 303
    again = sess.get(f"{hgw.url}/operator/providers", headers=headers, allow_redirects=False, timeout=30)
    assert again.status_code == 303 and again.headers["Location"].endswith("/sign-in")


def test_parallel_basic_requests_with_the_right_password_are_never_throttled(hgw):
    """A viewer fetching with HTTP Basic, ten requests at once (issue 14: 4 of 10 got 429)."""
    from concurrent.futures import ThreadPoolExecutor

    acc = hgw.new_account()
    sess = from_address()
    url = f"{hgw.url}/accounts/{acc['id']}/dicomweb/studies"

    def fetch(_: int) -> int:
        return sess.get(url, auth=(acc["owner"], acc["password"]), timeout=60).status_code

    with ThreadPoolExecutor(10) as pool:
        for _ in range(2):
            assert sorted(pool.map(fetch, range(10))) == [200] * 10


def test_dicomweb_urls_follow_public_url(hgw):
    acc = hgw.new_account()
    token = user_token(hgw, acc["owner"])
    rsp = requests.post(f"{hgw.url}/accounts/{acc['id']}/dicomweb/studies", data=variant(), timeout=60,
                        headers={"Content-Type": "application/dicom", "Authorization": f"Bearer {token}"})
    assert rsp.status_code == 200, rsp.text
    assert rsp.json()["00081190"]["Value"][0].startswith(f"{PUBLIC}/accounts/{acc['id']}/dicomweb/studies/")


def test_changing_the_operator_token_ends_operator_sessions(tmp_path, request):
    """A session opened with the old operator token (say, a leaked one) is not valid under the new one."""
    from tests.conftest import make_backend

    backend = make_backend("sqlite", tmp_path, request)
    g = Gateway(backend, extra_env={"DICOMGATE_OPERATOR_TOKEN": OPERATOR}).start()
    try:
        sess = from_address()
        value = cookie_value(set_cookies(_operator_sign_in(g, sess))["dg_session"])
        headers = {"Cookie": f"dg_session={value}"}
        assert sess.get(f"{g.url}/operator/providers", headers=headers, allow_redirects=False,
                        timeout=30).status_code == 200
    finally:
        g.close()
        g.stop()
    g = Gateway(backend, extra_env={"DICOMGATE_OPERATOR_TOKEN": "op-" + secrets.token_urlsafe(24)}).start()
    try:
        again = sess.get(f"{g.url}/operator/providers", headers=headers, allow_redirects=False, timeout=30)
        assert again.status_code == 303 and again.headers["Location"].endswith("/sign-in")
    finally:
        g.close()
        g.stop()


def test_cookies_are_secure_with_an_https_public_url(hgw):
    sess = from_address()
    form = sess.get(f"{hgw.url}/sign-in", timeout=30)
    assert "Secure" in set_cookies(form)["dg_signin"]
    acc = hgw.new_account()
    r = sess.post(f"{hgw.url}/sign-in", data={"email": acc["owner"], "password": acc["password"],
                                               "csrf_token": "pre"},
                  headers={"Cookie": "dg_signin=pre"}, allow_redirects=False, timeout=30)
    assert r.status_code == 303
    cookie = set_cookies(r)["dg_session"]
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert "Secure" in set_cookies(_operator_sign_in(hgw, sess))["dg_session"]


def _cli(data_dir, *args: str, env: dict[str, str] | None = None, input: str | None = None,
         database_url: str | None = None) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("DICOMGATE_")} | (env or {})
    extra = ["--database-url", database_url] if database_url else []
    return subprocess.run([str(BIN), *args, "--data-dir", str(data_dir), *extra], input=input,
                          capture_output=True, text=True, env=full_env, timeout=120)


def test_cli_dicomweb_url_follows_public_url_and_http_port(tmp_path):
    import json

    r = _cli(tmp_path / "d", "account", "create", "--email", "pub@example.org", "--password-stdin", "--json",
             env={"DICOMGATE_PUBLIC_URL": PUBLIC + "/"}, input="a long passphrase\n")
    assert r.returncode == 0, r.stderr
    acc = json.loads(r.stdout)
    assert acc["dicomweb_url"] == f"{PUBLIC}/accounts/{acc['id']}/dicomweb"
    r = _cli(tmp_path / "d", "account", "show", acc["id"], "--json", env={"DICOMGATE_HTTP_PORT": "9443"})
    assert json.loads(r.stdout)["dicomweb_url"] == f"http://127.0.0.1:9443/accounts/{acc['id']}/dicomweb"


# ---------------------------------------------------------------- files
def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_index_files_are_private(tmp_path):
    data = tmp_path / "data"
    gw = Gateway(Backend("sqlite", data)).start()
    try:
        db = data / "index.sqlite3"
        files = [db, data / "index.sqlite3-wal", data / "index.sqlite3-shm"]
        assert {f.name: oct(_mode(f)) for f in files} == {f.name: "0o600" for f in files}
        acc = gw.new_account()
        assert requests.post(f"{gw.url}/api/v1/auth/token", json={"email": acc["owner"],
                                                                   "password": acc["password"]},
                             timeout=30).status_code == 200
        assert {f.name: oct(_mode(f)) for f in files} == {f.name: "0o600" for f in files}
    finally:
        gw.close()
        gw.stop()
    # a data directory the service makes itself is the service's alone
    fresh = tmp_path / "fresh"
    assert _cli(fresh, "account", "list").returncode == 0
    assert _mode(fresh) == 0o700 and _mode(fresh / "index.sqlite3") == 0o600


def test_an_existing_world_readable_index_is_made_private(tmp_path):
    data = tmp_path / "old"
    assert _cli(data, "account", "list").returncode == 0
    for f in data.glob("index.sqlite3*"):
        os.chmod(f, 0o644)
    assert _cli(data, "account", "list").returncode == 0
    assert {f.name: _mode(f) for f in data.glob("index.sqlite3*")} == \
        {f.name: 0o600 for f in data.glob("index.sqlite3*")}


# ---------------------------------------------------------------- passwords
@pytest.mark.parametrize("command", [("user", "create"), ("account", "create")])
def test_short_passwords_are_refused_by_the_cli(tmp_path, command):
    r = _cli(tmp_path / "d", *command, "--email", "short@example.org", "--password-stdin", input="1234567\n")
    assert r.returncode == 1 and "at least 8 characters" in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1  # one line
    assert _cli(tmp_path / "d", "token", "create", "--email", "short@example.org").returncode != 0
    r = _cli(tmp_path / "d", *command, "--email", "short@example.org", "--password-stdin", input="12345678\n")
    assert r.returncode == 0, r.stderr


# ---------------------------------------------------------------- shares
def test_a_share_to_an_unknown_email_answers_like_one_to_a_known_email(hgw):
    owner = hgw.new_account()
    friend = hgw.new_account()
    token = user_token(hgw, owner["owner"])
    url = f"{hgw.url}/api/v1/accounts/{owner['id']}/shares"
    auth = {"Authorization": f"Bearer {token}"}
    stranger = f"nobody-{secrets.token_hex(4)}@example.org"
    known = requests.post(url, json={"email": friend["owner"], "role": "viewer"}, headers=auth, timeout=30)
    unknown = requests.post(url, json={"email": stranger, "role": "viewer"}, headers=auth, timeout=30)
    assert known.status_code == unknown.status_code == 201
    k, u = known.json(), unknown.json()
    assert sorted(k) == sorted(u) and {key: type(v) for key, v in k.items()} == {key: type(v) for key, v in u.items()}
    assert u["email"] == stranger and u["in_force"] is True
    # the page: the same redirect for both
    cookie = {"Cookie": f"dg_session={token}"}
    page = requests.get(f"{hgw.url}/accounts/{owner['id']}/access", headers=cookie, timeout=30)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    answers = []
    for email in (friend["owner"], f"nobody-{secrets.token_hex(4)}@example.org"):
        r = requests.post(f"{hgw.url}/accounts/{owner['id']}/shares", headers=cookie, allow_redirects=False,
                          data={"email": email, "role": "editor", "csrf_token": csrf}, timeout=30)
        answers.append((r.status_code, r.headers.get("Location")))
    assert answers[0] == answers[1] and answers[0][0] == 303
    # the stranger cannot sign in with the share; once they are given a password, the share holds
    r = requests.post(f"{hgw.url}/api/v1/auth/token", json={"email": stranger, "password": ""}, timeout=30)
    assert r.status_code == 401
    made = hgw.cli("user", "create", "--email", stranger, "--password-stdin", input="a long passphrase\n")
    assert made.returncode == 0
    r = from_address().post(f"{hgw.url}/api/v1/auth/token", json={"email": stranger,
                                                                   "password": "a long passphrase"}, timeout=30)
    assert r.status_code == 200
    mine = requests.get(f"{hgw.url}/api/v1/accounts", headers={"Authorization": f"Bearer {r.json()['token']}"},
                        timeout=30).json()
    assert [(a["id"], a["role"]) for a in mine] == [(owner["id"], "viewer")]
