"""Web pages for account holders and operators (SPEC "REST API and pages").

Server-rendered HTML, no JavaScript needed. The pages are a second adapter
over the same services as ``gateway/http/api.py``: one consent decision
(``consent.decision.decide``), the consent / erasure functions (which write
the audit trail), the same 401 / 403 / 404 rule.

Sessions: signing in issues an ordinary user API token (``issue_token`` with
``token_ttl``) and keeps it in an ``HttpOnly``, ``SameSite=Strict`` cookie
(``Secure`` too when the request came over https or ``public_url`` is https);
each request authenticates the cookie exactly like ``Authorization: Bearer``,
so a revoked or expired token fails at once. Signing out revokes the token.
The operator signs in with the operator token, which is checked once and
never kept: the cookie holds a session token of its own (a token row with
neither user nor provider, valid for ``token_ttl``, for the pages only), which
signing out revokes.

CSRF: every POST form carries ``csrf_token(cookie)``, an HMAC keyed with the
SHA-256 of the session token; it is checked for every POST before the view
runs (403, nothing changed). The sign-in forms, which have no session yet,
use a double-submit cookie (random value in a ``SameSite=Strict`` cookie and
in the form), so another site cannot sign a visitor in either.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime
from typing import Any

from flask import (Blueprint, Response, current_app, g, make_response, redirect, render_template, request,
                   url_for)
from sqlalchemy import func, select

from consent.decision import Action, Principal, decide
from consent.providers import ConsentError, list_providers
from gateway.archive.access import NotVisible, require
from gateway.identity.accounts import my_accounts
from gateway.archive.query import visible_studies
from gateway.ops import audit
from gateway.identity import consents
from gateway.identity.accounts import AccountError, account_ref, account_view, get_account
from gateway.identity.credentials import (OPERATOR_SESSION_SECONDS, AuthError, Credentials, authenticate, hash_token,
                          issue_operator_session, issue_token, session_row)
from gateway.db.base import utcnow
from gateway.db.models import Study
from gateway.archive.erasure import ErasureError, delete_account, delete_study, receipt
from gateway.http.auth import HttpError, sign_in
from gateway.numbers import NumberError, parse_int
from gateway.runtime.services import Services
from gateway.http.urls import base_url

bp = Blueprint("web", __name__, template_folder="templates", static_folder="static",
               static_url_path="/ui-static")

COOKIE = "dg_session"
PRE_COOKIE = "dg_signin"  # double-submit value for the sign-in forms
AUDIT_PAGE = 50
_OPEN_POSTS = {"web.sign_in_submit", "web.operator_sign_in"}
_MESSAGES = {  # fixed texts for ?done=..., so no caller-controlled text is echoed
    "share-granted": "The share was granted.",
    "share-revoked": "The share was revoked. It no longer gives access.",
    "link-revoked": "The provider link was revoked. The provider can no longer send or read images.",
    "link-created": "The link was created.",
    "provider-removed": "The provider was removed and its links revoked.",
}


class _SignInNeeded(Exception):
    pass


def _svc() -> Services:
    return current_app.config["services"]


def csrf_token(session_token: str) -> str:
    return hmac.new(key=hash_token(session_token).encode(), msg=b"csrf", digestmod=hashlib.sha256).hexdigest()


# ---------------------------------------------------------------- session plumbing
def _principal() -> Principal:
    """The signed-in caller (cached per request); no or a bad cookie: back to the sign-in page."""
    if "principal" in g:
        return g.principal
    token = request.cookies.get(COOKIE)
    if not token:
        raise _SignInNeeded()
    svc = _svc()
    try:
        with svc.db.session() as s:  # the operator token itself is not a page session
            principal = authenticate(s, Credentials("bearer", token=token), source=request.remote_addr,
                                     operator_token=None, operator_sessions=svc.settings.operator_token)
    except AuthError:
        raise _SignInNeeded() from None
    if principal.kind == "provider":  # a provider token pasted into a cookie is not a web session
        raise _SignInNeeded()
    g.principal, g.session_token = principal, token
    return principal


def _user() -> Principal:
    principal = _principal()
    if principal.kind != "user":
        raise HttpError(403, "These pages are for account holders; the operator uses the operator pages.")
    return principal


def _operator() -> Principal:
    principal = _principal()
    if principal.kind != "operator":
        raise HttpError(403, "These pages are for the operator (sign in with the operator token).")
    return principal


def _account(principal: Principal, account_id: str, action: Action, *, owner_only: bool = False) -> dict:
    """The same gate as the API's: 404 without standing, 403 without the right."""
    svc = _svc()
    with svc.db.session() as s:
        try:
            decision = require(s, principal, action, account_id)
        except NotVisible:
            raise HttpError(404, "There is no such account, or you have no access to it.") from None
        except PermissionError as exc:
            if owner_only:
                raise HttpError(403, "Only the owner of the account can open this page.") from None
            raise HttpError(403, f"You may not do this on this account: {exc}.") from None
        account = get_account(s, account_id)
        if owner_only and principal.id != account.owner_id:
            raise HttpError(403, "Only the owner of the account can open this page.")
        view = account_view(s, account, _base_url())
    view["is_owner"] = principal.kind == "user" and principal.id == account.owner_id
    view["decision"] = decision
    return view


def _base_url() -> str:
    return base_url()


def _secure() -> bool:
    """Cookies only over https: this request came so, or users reach us at an https ``public_url``
    (a TLS proxy in front, speaking plain HTTP to us)."""
    return request.is_secure or (_svc().settings.public_url or "").lower().startswith("https://")


def _set_session_cookie(resp: Response, token: str, max_age: int | None) -> None:
    resp.set_cookie(COOKIE, token, max_age=max_age, path="/", httponly=True, samesite="Strict",
                    secure=_secure())


def _clear_session_cookie(resp: Response) -> None:
    resp.delete_cookie(COOKIE, path="/", httponly=True, samesite="Strict", secure=_secure())


def _clear_pre_cookie(resp: Response) -> None:
    resp.delete_cookie(PRE_COOKIE, path="/", httponly=True, samesite="Strict", secure=_secure())


@bp.before_request
def _check_posts() -> None:
    """Every POST needs a valid session and its CSRF token, before the view runs."""
    if request.method != "POST":
        return
    if request.endpoint in _OPEN_POSTS:
        cookie, field = request.cookies.get(PRE_COOKIE, ""), request.form.get("csrf_token", "")
        if not cookie or not hmac.compare_digest(cookie.encode(), field.encode()):
            raise HttpError(403, "The sign-in form has expired or came from another site; please try again.")
        return
    _principal()
    sent = request.form.get("csrf_token", "")
    if not hmac.compare_digest(sent.encode(), csrf_token(g.session_token).encode()):
        raise HttpError(403, "The form's security token is missing or wrong; nothing was changed. "
                             "Reload the page and try again.")


@bp.after_request
def _headers(resp: Response) -> Response:
    resp.headers.setdefault("Content-Security-Policy",
                            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
                            "frame-ancestors 'none'; base-uri 'none'")
    resp.headers.setdefault("X-Content-Type-Options", "nosniff")
    resp.headers.setdefault("Referrer-Policy", "no-referrer")  # account ids and receipts are in URLs
    if request.endpoint != "web.static":
        resp.headers["Cache-Control"] = "no-store"
    return resp


@bp.context_processor
def _template_globals() -> dict[str, Any]:
    def csrf() -> str:
        token = g.get("session_token")
        return csrf_token(token) if token else ""

    return {"csrf": csrf, "principal": lambda: g.get("principal"), "fmt_time": _fmt_time}


def _fmt_time(value: str | datetime | None) -> str:
    if not value:
        return ""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return value
    return value.strftime("%Y-%m-%d %H:%M UTC")


def _page(template: str, status: int = 200, **ctx: Any) -> Response:
    return make_response(render_template(template, **ctx), status)


@bp.errorhandler(_SignInNeeded)
def _to_sign_in(_exc: _SignInNeeded) -> Response:
    resp = redirect(url_for("web.sign_in_form"), 303)
    if request.cookies.get(COOKIE):
        _clear_session_cookie(resp)
    return resp


@bp.errorhandler(HttpError)
def _error_page(exc: HttpError) -> Response:
    titles = {400: "Bad request", 403: "Not allowed", 404: "Not found", 429: "Too many attempts"}
    resp = _page("error.html", exc.status, title=titles.get(exc.status, "Error"), message=exc.message)
    for k, v in (exc.headers or {}).items():
        if k.lower() != "www-authenticate" and isinstance(v, str):
            resp.headers[k] = v
    return resp


@bp.errorhandler(ErasureError)
def _erasure_error(exc: ErasureError) -> Response:
    return _error_page(HttpError(exc.status, exc.message))


@bp.errorhandler(ConsentError)
@bp.errorhandler(AccountError)
def _consent_error(exc: Exception) -> Response:
    return _error_page(HttpError(404 if str(exc).startswith("no ") else 400, str(exc)))


# ---------------------------------------------------------------- sign in / out
@bp.get("/")
def index() -> Response:
    try:
        principal = _principal()
    except _SignInNeeded:
        return redirect(url_for("web.sign_in_form"), 303)
    return redirect(url_for("web.providers" if principal.kind == "operator" else "web.accounts"), 303)


def _sign_in_page(status: int = 200, **ctx: Any) -> Response:
    pre = request.cookies.get(PRE_COOKIE) or secrets.token_urlsafe(24)
    resp = _page("sign_in.html", status, pre_token=pre,
                 operator_enabled=bool(_svc().settings.operator_token), **ctx)
    resp.set_cookie(PRE_COOKIE, pre, path="/", httponly=True, samesite="Strict", secure=_secure())
    return resp


@bp.get("/sign-in")
def sign_in_form() -> Response:
    return _sign_in_page()


@bp.post("/sign-in")
def sign_in_submit() -> Response:
    svc = _svc()
    email = request.form.get("email", "").strip()
    password = request.form.get("password", "")
    try:
        principal = sign_in(svc, email, password, request.remote_addr)
    except HttpError as exc:
        message = "Wrong email or password." if exc.status == 401 else exc.message
        resp = _sign_in_page(exc.status, error=message, email=email)
        if exc.status == 429 and exc.headers:
            resp.headers["Retry-After"] = str(exc.headers.get("Retry-After", ""))
        return resp
    with svc.db.session(write=True) as s:
        token, _row = issue_token(s, user_id=principal.id, ttl=svc.settings.token_ttl)
    resp = redirect(url_for("web.accounts"), 303)
    _set_session_cookie(resp, token, svc.settings.token_ttl or None)
    _clear_pre_cookie(resp)
    return resp


@bp.post("/operator/sign-in")
def operator_sign_in() -> Response:
    svc = _svc()
    token = request.form.get("operator_token", "")
    key = f"bearer-ip:{request.remote_addr}"  # the same budget as operator tokens sent as Bearer
    wait = svc.throttle.begin(key)
    if wait:
        resp = _sign_in_page(429, operator_error=f"Too many failed sign-ins; try again in {wait} s.")
        resp.headers["Retry-After"] = str(wait)
        return resp
    ok = False
    if svc.settings.operator_token and token:
        ok = hmac.compare_digest(token.encode(), svc.settings.operator_token.encode())
    if not ok:
        svc.throttle.failed(key)  # begin() counted the attempt; a wrong one may lock
        return _sign_in_page(401, operator_error="That is not the operator token.")
    svc.throttle.succeeded("", key)
    with svc.db.session(write=True) as s:  # bound to the operator token: changing it ends the session
        session_token = issue_operator_session(s, svc.settings.operator_token, svc.settings.token_ttl)
    resp = redirect(url_for("web.providers"), 303)
    _set_session_cookie(resp, session_token, min(svc.settings.token_ttl or OPERATOR_SESSION_SECONDS,
                                                 OPERATOR_SESSION_SECONDS))
    _clear_pre_cookie(resp)
    return resp


@bp.post("/sign-out")
def sign_out() -> Response:
    _principal()
    with _svc().db.session(write=True) as s:  # the user's or the operator's session
        row = session_row(s, g.session_token, _svc().settings.operator_token)
        if row is not None and row.provider_id is None and row.revoked_at is None:
            row.revoked_at = utcnow()
    resp = redirect(url_for("web.sign_in_form"), 303)
    _clear_session_cookie(resp)
    return resp


# ---------------------------------------------------------------- account holders
def _dicom_date(value: str | None) -> str:
    if value and len(value) == 8 and value.isdigit():
        return f"{value[:4]}-{value[4:6]}-{value[6:]}"
    return value or ""


def _person_name(value: str | None) -> str:
    return (value or "").replace("^", " ").strip()


@bp.get("/accounts")
def accounts() -> Response:
    principal = _principal()
    if principal.kind == "operator":
        return redirect(url_for("web.providers"), 303)
    with _svc().db.session() as s:
        rows = my_accounts(s, principal, _base_url())
    return _page("accounts.html", accounts=rows)


@bp.get("/accounts/<account_id>")
def account(account_id: str) -> Response:
    principal = _user()
    acc = _account(principal, account_id, Action.READ)
    with _svc().db.session() as s:
        studies = visible_studies(s, principal, account_id)
        may_delete = decide(s, principal, Action.DELETE, account_ref(get_account(s, account_id))).allowed
    for st in studies:
        st["date"], st["patient_name"] = _dicom_date(st["date"]), _person_name(st["patient_name"])
    return _page("account.html", account=acc, studies=studies, may_delete=may_delete,
                 done=_MESSAGES.get(request.args.get("done", "")))


def _study_row(principal: Principal, account_id: str, study_uid: str) -> dict:
    with _svc().db.session() as s:
        for st in visible_studies(s, principal, account_id):
            if st["study"] == study_uid:
                st["date"], st["patient_name"] = _dicom_date(st["date"]), _person_name(st["patient_name"])
                return st
    raise HttpError(404, "There is no such study in this account (it may have been deleted already).")


@bp.get("/accounts/<account_id>/studies/<study>/delete")
def study_delete_confirm(account_id: str, study: str) -> Response:
    principal = _user()
    acc = _account(principal, account_id, Action.DELETE)
    return _page("study_delete.html", account=acc, study=_study_row(principal, account_id, study),
                 purge_window=_svc().settings.purge_window)


@bp.post("/accounts/<account_id>/studies/<study>/delete")
def study_delete(account_id: str, study: str) -> Response:
    principal = _user()
    acc = _account(principal, account_id, Action.DELETE)
    erasure = delete_study(_svc().db, principal, account_id, study)
    return redirect(url_for("web.erasure", receipt_id=erasure.id, account=acc["id"]), 303)


def _access_page(acc: dict, status: int = 200, **ctx: Any) -> Response:
    with _svc().db.session() as s:
        shares = consents.list_shares(s, acc["id"], in_force_only=True)
        links = consents.list_links(s, acc["id"], in_force_only=True)
    return _page("access.html", status, account=acc, shares=shares, links=links,
                 done=_MESSAGES.get(request.args.get("done", "")), **ctx)


@bp.get("/accounts/<account_id>/access")
def access(account_id: str) -> Response:
    acc = _account(_user(), account_id, Action.MANAGE, owner_only=True)
    return _access_page(acc)


@bp.post("/accounts/<account_id>/shares")
def share_grant(account_id: str) -> Response:
    principal = _user()
    acc = _account(principal, account_id, Action.MANAGE, owner_only=True)
    form = {k: request.form.get(k, "").strip() for k in ("email", "role", "expires")}
    form["sensitive"] = request.form.get("sensitive") == "on"
    try:
        if not form["email"]:
            raise AccountError("Give the email address of the person to share with.")
        with _svc().db.session(write=True) as s:
            consents.grant_share(s, account_id=account_id, email=form["email"], role=form["role"],
                                 sensitive=form["sensitive"], expires=form["expires"] or None,
                                 actor=principal.label, source=principal.source)
    except (ConsentError, AccountError) as exc:
        return _access_page(acc, 400, error=str(exc), form=form)
    return redirect(url_for("web.access", account_id=account_id, done="share-granted"), 303)


@bp.post("/accounts/<account_id>/shares/<share_id>/revoke")
def share_revoke(account_id: str, share_id: str) -> Response:
    principal = _user()
    _account(principal, account_id, Action.MANAGE, owner_only=True)
    with _svc().db.session(write=True) as s:
        consents.revoke_share(s, share_id, actor=principal.label, account_id=account_id, source=principal.source)
    return redirect(url_for("web.access", account_id=account_id, done="share-revoked"), 303)


@bp.post("/accounts/<account_id>/links/<link_id>/revoke")
def link_revoke(account_id: str, link_id: str) -> Response:
    principal = _user()
    _account(principal, account_id, Action.MANAGE, owner_only=True)
    with _svc().db.session(write=True) as s:
        consents.revoke_link(s, link_id, actor=principal.label, account_id=account_id, source=principal.source)
    return redirect(url_for("web.access", account_id=account_id, done="link-revoked"), 303)


@bp.get("/accounts/<account_id>/audit")
def audit_trail(account_id: str) -> Response:
    acc = _account(_user(), account_id, Action.MANAGE, owner_only=True)
    try:
        before = parse_int(request.args.get("before"), "before", minimum=1)
    except NumberError as exc:
        raise HttpError(400, f"The address is wrong: {exc}.") from None
    with _svc().db.session() as s:
        entries = audit.entries(s, account_id, limit=AUDIT_PAGE + 1, before_id=before)
    more = len(entries) > AUDIT_PAGE
    entries = entries[:AUDIT_PAGE]
    return _page("audit.html", account=acc, entries=entries, before=before,
                 older=entries[-1]["id"] if more else None)


@bp.get("/accounts/<account_id>/delete")
def account_delete_confirm(account_id: str) -> Response:
    principal = _user()
    acc = _account(principal, account_id, Action.MANAGE, owner_only=True)
    with _svc().db.session() as s:
        n = s.scalar(select(func.count(Study.id)).where(Study.account_id == account_id, Study.deleted_at.is_(None)))
    return _page("account_delete.html", account=acc, studies=n, purge_window=_svc().settings.purge_window)


@bp.post("/accounts/<account_id>/delete")
def account_delete(account_id: str) -> Response:
    principal = _user()
    acc = _account(principal, account_id, Action.MANAGE, owner_only=True)
    erasure = delete_account(_svc().db, principal, account_id)
    return redirect(url_for("web.erasure", receipt_id=erasure.id, account=acc["id"]), 303)


@bp.get("/erasures/<receipt_id>")
def erasure(receipt_id: str) -> Response:
    """The receipt as a page; like /api/v1/erasures/<receipt>, readable by whoever holds the URL."""
    found = receipt(_svc().db, receipt_id)
    if found is None:
        raise HttpError(404, "There is no such erasure receipt.")
    # ?account= only says where "back" leads after a deletion; it reveals and unlocks nothing
    back = request.args.get("account", "")
    back = back if back.startswith("acc_") and back.replace("_", "").isalnum() else None
    return _page("erased.html", back=back, scope=found["scope"], receipt_id=receipt_id, rcpt=found,
                 purge_window=_svc().settings.purge_window)


# ---------------------------------------------------------------- operators
def _parse_networks(text: str) -> list[str]:
    return [n for n in text.replace(",", " ").split() if n]


def _providers_page(status: int = 200, **ctx: Any) -> Response:
    with _svc().db.session() as s:
        rows = [consents.provider_view(p) for p in list_providers(s)]
    return _page("operator_providers.html", status, providers=rows,
                 done=_MESSAGES.get(request.args.get("done", "")), **ctx)


@bp.get("/operator/providers")
def providers() -> Response:
    _operator()
    return _providers_page()


@bp.post("/operator/providers")
def provider_add() -> Response:
    principal = _operator()
    form = {k: request.form.get(k, "").strip() for k in ("name", "ae_title", "networks", "host", "port")}
    try:
        port = None
        if bool(form["host"]) != bool(form["port"]):
            raise ConsentError("Give both the host and the port, or neither.")
        if form["port"]:
            try:
                port = parse_int(form["port"], "The port", minimum=1, maximum=65535)
            except NumberError as exc:
                raise ConsentError(f"{exc}.") from None
        with _svc().db.session(write=True) as s:
            created = consents.add_provider(s, name=form["name"], ae_title=form["ae_title"],
                                            networks=_parse_networks(form["networks"]), host=form["host"] or None,
                                            port=port, actor=principal.label)
    except (ConsentError, AccountError, ValueError) as exc:
        return _providers_page(400, error=str(exc), form=form)
    return _providers_page(created=created)


@bp.post("/operator/providers/<provider_id>/remove")
def provider_remove(provider_id: str) -> Response:
    principal = _operator()
    with _svc().db.session(write=True) as s:
        consents.remove_provider(s, provider_id, actor=principal.label)
    return redirect(url_for("web.providers", done="provider-removed"), 303)


def _links_page(status: int = 200, **ctx: Any) -> Response:
    with _svc().db.session() as s:
        rows = consents.list_links(s)
        provs = [consents.provider_view(p) for p in list_providers(s)]
    rows.sort(key=lambda l: (not l["in_force"], l["created"] or ""), reverse=False)
    return _page("operator_links.html", status, links=rows, providers=provs,
                 done=_MESSAGES.get(request.args.get("done", "")), **ctx)


@bp.get("/operator/links")
def links() -> Response:
    _operator()
    return _links_page()


@bp.post("/operator/links")
def link_create() -> Response:
    principal = _operator()
    form: dict[str, Any] = {k: request.form.get(k, "").strip() for k in ("account", "provider", "expires")}
    for flag in ("push", "pull", "sensitive"):
        form[flag] = request.form.get(flag) == "on"
    try:
        if not (form["push"] or form["pull"]):
            raise ConsentError("A link needs push, pull or both.")
        with _svc().db.session(write=True) as s:
            consents.create_link(s, account_id=form["account"], provider_id=form["provider"], push=form["push"],
                                 pull=form["pull"], sensitive=form["sensitive"], expires=form["expires"] or None,
                                 actor=principal.label, source=principal.source)
    except (ConsentError, AccountError) as exc:
        return _links_page(400, error=str(exc), form=form)
    return redirect(url_for("web.links", done="link-created"), 303)


@bp.post("/operator/links/<link_id>/revoke")
def operator_link_revoke(link_id: str) -> Response:
    principal = _operator()
    with _svc().db.session(write=True) as s:
        consents.revoke_link(s, link_id, actor=principal.label, source=principal.source)
    return redirect(url_for("web.links", done="link-revoked"), 303)

