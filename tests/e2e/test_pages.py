"""The web pages in a real headless Chromium (Debian's chromium + chromedriver, driven by selenium).

Sign-in, studies, who has access with revoke buttons (revocation effective at
once over DICOMweb), granting a share, the audit trail, deleting a study and
the account with confirmation, CSRF, the 403 / 404 rule, operator pages.
"""

from __future__ import annotations

import re
import secrets
import shutil
import tempfile
from pathlib import Path

import pytest
import requests

from tests.support.data import uids, variant
from tests.support.gateway import user_token

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
OPERATOR = "op-" + secrets.token_urlsafe(16)
SCREENSHOT = Path("/tmp/dicomgate-access.png")


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists() or not Path(CHROMEDRIVER).exists():
        pytest.skip("Debian chromium is not installed (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="dg-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1280,1000", f"--user-data-dir={profile}"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def gw(request, tmp_path_factory):
    """A gateway with an operator token, per backend combination."""
    from tests.conftest import make_backend
    from tests.support.gateway import Gateway

    g = Gateway(make_backend(request.param, tmp_path_factory.mktemp(f"pages-{request.param}"), request),
                extra_env={"DICOMGATE_OPERATOR_TOKEN": OPERATOR, "DICOMGATE_PURGE_WINDOW": "5"}).start()
    yield g
    g.close()
    g.stop()


@pytest.fixture
def b(browser):
    browser.delete_all_cookies()  # cookies are per host, not per port: both gateways share 127.0.0.1
    return browser


# ---------------------------------------------------------------- helpers
def by(css):
    from selenium.webdriver.common.by import By

    return (By.CSS_SELECTOR, css)


def q(driver, css):
    return driver.find_element(*by(css))


def qa(driver, css):
    return driver.find_elements(*by(css))


def click_and_wait(driver, element):
    """Click something that submits / navigates, and wait until the next page has loaded.

    A marker on the old page's window tells the pages apart (element staleness is not reliable:
    chromedriver may answer about a node of the replaced document with a generic error).
    """
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait

    driver.execute_script("window.__dgOldPage = true;")
    try:
        element.click()
    except WebDriverException as exc:  # the same race, on the click's own follow-up
        if "does not belong to the document" not in str(exc):
            raise
    WebDriverWait(driver, 15, ignored_exceptions=(WebDriverException,)).until(
        lambda d: d.execute_script("return !window.__dgOldPage && document.readyState === 'complete';"))


def fill(driver, css, value):
    el = q(driver, css)
    el.clear()
    el.send_keys(value)


def sign_in(driver, gw, email, password):
    driver.get(f"{gw.url}/")
    assert driver.current_url.endswith("/sign-in")
    fill(driver, "#email", email)
    fill(driver, "#password", password)
    click_and_wait(driver, q(driver, "form[action='/sign-in'] button[type=submit]"))


def web_session(gw, email, password) -> requests.Session:
    """A requests session signed in through the sign-in form (double-submit token included)."""
    sess = requests.Session()
    r = sess.get(f"{gw.url}/sign-in", timeout=30)
    pre = re.search(r'name="csrf_token" value="([^"]+)"', r.text).group(1)
    r = sess.post(f"{gw.url}/sign-in", data={"email": email, "password": password, "csrf_token": pre},
                  allow_redirects=False, timeout=30)
    assert r.status_code == 303 and r.headers["Location"].endswith("/accounts"), r.text
    cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Secure" not in cookie
    return sess


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def qido(gw, account_id, token):
    return requests.get(f"{gw.url}/accounts/{account_id}/dicomweb/studies",
                        headers={"Authorization": f"Bearer {token}", "Accept": "application/dicom+json"}, timeout=30)


def share(gw, account, email, role="viewer", sensitive=False):
    from gateway.identity import consents

    with gw.services.db.session(write=True) as s:
        return consents.grant_share(s, account_id=account["id"], email=email, role=role, sensitive=sensitive,
                                    expires=None, actor="test")


def owner_with_studies(gw, n=2):
    acc = gw.new_account()
    prv = gw.new_provider()
    link = gw.link(acc, prv, push=True, pull=True, sensitive=True)
    bodies = [variant(StudyDescription=f"Study number {i}", PatientName=f"Doe^Jane{i}",
                      **({"ConfidentialityCode": "PSY"} if i == 0 else {})) for i in range(n)]
    assert gw.stow(acc["id"], bodies, token=prv["token"]).status_code == 200
    return acc, prv, link, bodies


# ---------------------------------------------------------------- account holders
def test_sign_in_studies_access_revoke_grant_audit(gw, b):
    acc, prv, link, bodies = owner_with_studies(gw)
    viewer = gw.new_account()
    friend = gw.new_account()
    shr = share(gw, acc, viewer["owner"])

    # not signed in: every page leads to the sign-in form
    b.get(f"{gw.url}/accounts/{acc['id']}/access")
    assert b.current_url.endswith("/sign-in")

    # a wrong password: the form again, with a clear error (and 401)
    sign_in(b, gw, acc["owner"], "not-the-password")
    assert b.current_url.endswith("/sign-in")
    assert "Wrong email or password" in q(b, "[role=alert]").text
    assert q(b, "#email").get_attribute("value") == acc["owner"]
    pre = requests.Session()
    r = pre.get(f"{gw.url}/sign-in", timeout=30)
    r = pre.post(f"{gw.url}/sign-in", data={"email": acc["owner"], "password": "nope",
                                            "csrf_token": csrf_of(r.text)}, timeout=30)
    assert r.status_code == 401 and "Wrong email or password" in r.text

    # the right one lands on /accounts
    sign_in(b, gw, acc["owner"], acc["password"])
    assert b.current_url.endswith("/accounts")
    click_and_wait(b, q(b, f"a[href='/accounts/{acc['id']}']"))

    # the studies, with the sensitive marker
    rows = qa(b, "#studies tbody tr")
    assert len(rows) == 2
    text = q(b, "#studies").text
    assert "Study number 0" in text and "Study number 1" in text and "Doe Jane0" in text
    assert "CT" in text and "Sensitive" in text and "PSY" in text

    # who has access
    click_and_wait(b, q(b, "nav.tabs a[href$='/access']"))
    assert acc["owner"] in q(b, "#owner").text
    assert viewer["owner"] in q(b, f"tr[data-share='{shr['id']}']").text
    assert prv["name"] in q(b, f"tr[data-link='{link['id']}']").text
    b.save_screenshot(str(SCREENSHOT))

    # before: the viewer reads, the provider stores
    viewer_token = user_token(gw, viewer["owner"])
    assert qido(gw, acc["id"], viewer_token).status_code == 200
    assert gw.stow(acc["id"], [variant()], token=prv["token"]).status_code == 200

    # revoke the share with its button: the viewer's next request is refused
    click_and_wait(b, q(b, f"tr[data-share='{shr['id']}'] button"))
    assert "revoked" in q(b, "[role=status]").text
    assert not qa(b, f"tr[data-share='{shr['id']}']")
    assert qido(gw, acc["id"], viewer_token).status_code == 404

    # revoke the link: the provider's next STOW is refused
    click_and_wait(b, q(b, f"tr[data-link='{link['id']}'] button"))
    assert not qa(b, f"tr[data-link='{link['id']}']")
    assert gw.stow(acc["id"], [variant()], token=prv["token"]).status_code == 404

    # grant a share with the form
    fill(b, "#share-email", friend["owner"])
    from selenium.webdriver.support.ui import Select

    Select(q(b, "#share-role")).select_by_value("editor")
    q(b, "#share-sensitive").click()
    click_and_wait(b, q(b, "#grant button[type=submit]"))
    row = [r for r in qa(b, "#shares tbody tr") if friend["owner"] in r.text]
    assert len(row) == 1 and "editor" in row[0].text and "Yes" in row[0].text
    friend_token = user_token(gw, friend["owner"])
    assert qido(gw, acc["id"], friend_token).status_code == 200

    # a bad grant: an error on the same page, nothing granted
    fill(b, "#share-email", "someone@localhost")  # the browser's type=email lets it through
    click_and_wait(b, q(b, "#grant button[type=submit]"))
    assert "is not an email address" in q(b, "[role=alert]").text
    assert len(qa(b, "#shares tbody tr")) == 1

    # the audit trail, newest first, shows the changes
    click_and_wait(b, q(b, "nav.tabs a[href$='/audit']"))
    actions = [r.find_elements(*by("td"))[2].text for r in qa(b, "#audit tbody tr")]
    assert actions[:3] == ["share.granted", "link.revoked", "share.revoked"]
    assert "account.created" in actions
    assert viewer["owner"] in q(b, "#audit").text
    assert f"user:{acc['owner']}" in q(b, "#audit").text


def test_delete_study_then_account(gw, b):
    acc, prv, link, bodies = owner_with_studies(gw)
    other = _second_account_for(gw, acc["owner"])
    study0, _, _ = uids(bodies[0])
    sign_in(b, gw, acc["owner"], acc["password"])
    b.get(f"{gw.url}/accounts/{acc['id']}")
    assert len(qa(b, "#studies tbody tr")) == 2

    # delete a study: confirmation first, then it is gone from the list at once
    click_and_wait(b, q(b, f"tr[data-study='{study0}'] a.button"))
    assert "Delete this study?" in q(b, "h1").text and study0 in b.page_source
    assert len(qa(b, "#studies")) == 0  # nothing deleted yet: we are on the confirmation page
    click_and_wait(b, q(b, "form button.danger"))
    assert q(b, "#erasure-status").text in ("pending", "purged")
    click_and_wait(b, q(b, "#back a"))
    rows = qa(b, "#studies tbody tr")
    assert len(rows) == 1 and study0 not in q(b, "#studies").get_attribute("outerHTML")
    owner_token = user_token(gw, acc["owner"])
    assert study0 not in qido(gw, acc["id"], owner_token).text

    # delete the account: a confirmation explaining the purge window, then a receipt
    click_and_wait(b, q(b, "nav.tabs a[href$='/delete']"))
    assert "immediate" in q(b, "main").text and "5 seconds" in q(b, "main").text
    click_and_wait(b, q(b, "form button.danger"))
    assert q(b, "#erasure-status").text in ("pending", "purged")
    status_url = q(b, "#status-url").get_attribute("href")
    assert "/api/v1/erasures/" in status_url
    r = requests.get(status_url, timeout=30)  # the receipt needs no credentials
    assert r.status_code == 200 and r.json()["status"] in ("pending", "purged")
    click_and_wait(b, q(b, "#receipt-page"))
    assert q(b, "#erasure-status").text in ("pending", "purged")

    # the account is gone at once; the session still works for the user's other account
    b.get(f"{gw.url}/accounts")
    listed = q(b, "main").text
    assert acc["id"] not in listed and other in listed
    b.get(f"{gw.url}/accounts/{acc['id']}")
    assert "Not found" in q(b, "h1").text
    b.get(f"{gw.url}/accounts/{other}")
    assert "There are no studies" in q(b, "main").text
    assert gw.stow(acc["id"], [variant()], token=prv["token"]).status_code == 404


def _second_account_for(gw, email):
    from gateway.identity.accounts import create_account, find_user

    with gw.services.db.session(write=True) as s:
        return create_account(s, find_user(s, email), None, actor="test").id


def test_csrf_roles_and_sign_out(gw):
    acc, prv, link, _ = owner_with_studies(gw, n=1)
    viewer = gw.new_account()
    stranger = gw.new_account()
    shr = share(gw, acc, viewer["owner"])
    base = f"{gw.url}/accounts/{acc['id']}"

    owner = web_session(gw, acc["owner"], acc["password"])
    page = owner.get(f"{base}/access", timeout=30)
    assert page.status_code == 200
    token = csrf_of(page.text)

    def in_force():
        from gateway.identity import consents

        with gw.services.db.session() as s:
            return ({x["id"] for x in consents.list_shares(s, acc["id"], in_force_only=True)},
                    {x["id"] for x in consents.list_links(s, acc["id"], in_force_only=True)})

    before = in_force()
    # a POST without the token, or with a wrong one (e.g. another session's), is 403 and changes nothing
    for data in ({}, {"csrf_token": "0" * 64}, {"csrf_token": token[:-1]}):
        for path in (f"/shares/{shr['id']}/revoke", f"/links/{link['id']}/revoke", "/delete", "/shares"):
            r = owner.post(f"{base}{path}", data={**data, "email": stranger["owner"], "role": "viewer"},
                           allow_redirects=False, timeout=30)
            assert r.status_code == 403, (path, r.status_code)
            assert "nothing was changed" in r.text
    assert in_force() == before
    assert owner.get(base, timeout=30).status_code == 200  # the account was not deleted
    # a sign-in POST from elsewhere (no double-submit cookie) is refused too
    r = requests.post(f"{gw.url}/sign-in", data={"email": acc["owner"], "password": acc["password"]},
                      allow_redirects=False, timeout=30)
    assert r.status_code == 403 and "dg_session" not in r.headers.get("Set-Cookie", "")
    # with the token it works (another account's share id does not)
    other = gw.new_account()
    other_share = share(gw, other, viewer["owner"])
    r = owner.post(f"{base}/shares/{other_share['id']}/revoke", data={"csrf_token": token},
                   allow_redirects=False, timeout=30)
    assert r.status_code == 404
    r = owner.post(f"{base}/shares/{shr['id']}/revoke", data={"csrf_token": token}, allow_redirects=False,
                   timeout=30)
    assert r.status_code == 303
    assert shr["id"] not in in_force()[0]

    # a viewer may see the studies but not the owner's pages; a stranger's account is 404
    shr2 = share(gw, acc, viewer["owner"])
    vs = web_session(gw, viewer["owner"], viewer["password"])
    assert vs.get(base, timeout=30).status_code == 200
    assert "Delete" not in vs.get(base, timeout=30).text  # a viewer cannot delete studies
    for path in ("/access", "/audit", "/delete"):
        r = vs.get(f"{base}{path}", timeout=30)
        assert r.status_code == 403 and "owner" in r.text, path
    r = vs.post(f"{base}/shares/{shr2['id']}/revoke", data={"csrf_token": csrf_of(vs.get(base).text)},
                allow_redirects=False, timeout=30)
    assert r.status_code == 403
    r = vs.get(f"{gw.url}/accounts/{stranger['id']}", timeout=30)
    assert r.status_code == 404 and stranger["owner"] not in r.text
    assert vs.get(f"{gw.url}/accounts/{stranger['id']}/access", timeout=30).status_code == 404
    # user pages answer HTML, with no-store and a strict CSP
    assert r.headers["Content-Type"].startswith("text/html")
    assert r.headers["Cache-Control"] == "no-store" and "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]

    # sign-out revokes the session token: the old cookie no longer works
    old_cookie = owner.cookies.get("dg_session")
    r = owner.post(f"{gw.url}/sign-out", data={"csrf_token": token}, allow_redirects=False, timeout=30)
    assert r.status_code == 303 and r.headers["Location"].endswith("/sign-in")
    r = requests.get(base, cookies={"dg_session": old_cookie}, allow_redirects=False, timeout=30)
    assert r.status_code == 303 and r.headers["Location"].endswith("/sign-in")
    # and as a bearer token too: it was one
    assert qido(gw, acc["id"], old_cookie).status_code == 401


# ---------------------------------------------------------------- operators
def test_operator_pages(gw, b):
    acc = gw.new_account()
    b.get(f"{gw.url}/sign-in")
    fill(b, "#operator_token", "wrong-" + OPERATOR)
    click_and_wait(b, q(b, "form[action='/operator/sign-in'] button"))
    assert "not the operator token" in q(b, "[role=alert]").text
    fill(b, "#operator_token", OPERATOR)
    click_and_wait(b, q(b, "form[action='/operator/sign-in'] button"))
    assert b.current_url.endswith("/operator/providers")
    assert OPERATOR not in b.current_url

    # the operator has no access to account pages
    b.get(f"{gw.url}/accounts/{acc['id']}")
    assert "Not allowed" in q(b, "h1").text

    # add a provider: its token is shown once
    b.get(f"{gw.url}/operator/providers")
    ae = "W" + secrets.token_hex(4).upper()
    fill(b, "#p-name", f"Web PACS <{ae}>")
    fill(b, "#p-ae", ae)
    fill(b, "#p-networks", "127.0.0.0/8, 10.0.0.0/8")
    fill(b, "#p-port", "104")
    click_and_wait(b, q(b, "#add-provider button[type=submit]"))
    assert "both the host and the port" in q(b, "[role=alert]").text  # kept the input, said what is wrong
    assert q(b, "#p-ae").get_attribute("value") == ae
    fill(b, "#p-host", "pacs.example.org")
    click_and_wait(b, q(b, "#add-provider button[type=submit]"))
    new_token = q(b, "#new-token").text
    assert new_token.startswith("dg_")
    row = [r for r in qa(b, "#providers tbody tr") if ae in r.text][0]
    assert f"Web PACS <{ae}>" in row.text  # escaped, shown as text
    provider_id = row.get_attribute("data-provider")
    b.get(f"{gw.url}/operator/providers")
    assert new_token not in b.page_source and not qa(b, "#new-token")

    # create a link for the account, then the provider can push
    b.get(f"{gw.url}/operator/links")
    fill(b, "#l-account", acc["id"])
    from selenium.webdriver.support.ui import Select

    Select(q(b, "#l-provider")).select_by_value(provider_id)
    click_and_wait(b, q(b, "#create-link button[type=submit]"))
    assert "link was created" in q(b, "[role=status]").text
    row = [r for r in qa(b, "#links tbody tr") if acc["id"] in r.text and ae in r.text][0]
    assert "In force" in row.text
    link_id = row.get_attribute("data-link")
    assert gw.stow(acc["id"], [variant()], token=new_token).status_code == 200

    # a bad account id: an error, no link
    fill(b, "#l-account", "acc_doesnotexist")
    click_and_wait(b, q(b, "#create-link button[type=submit]"))
    assert "no account" in q(b, "[role=alert]").text

    # revoke it: the provider's next STOW is refused
    b.get(f"{gw.url}/operator/links")
    click_and_wait(b, q(b, f"tr[data-link='{link_id}'] button"))
    assert "Revoked" in q(b, f"tr[data-link='{link_id}']").text
    assert gw.stow(acc["id"], [variant()], token=new_token).status_code == 404

    # remove the provider: its token stops working
    b.get(f"{gw.url}/operator/providers")
    click_and_wait(b, q(b, f"tr[data-provider='{provider_id}'] button"))
    assert not qa(b, f"tr[data-provider='{provider_id}']")
    assert gw.stow(acc["id"], [variant()], token=new_token).status_code == 401

    # a user cannot open the operator pages
    b.delete_all_cookies()
    sign_in(b, gw, acc["owner"], acc["password"])
    b.get(f"{gw.url}/operator/providers")
    assert "Not allowed" in q(b, "h1").text
