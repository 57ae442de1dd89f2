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

from consent.decision import Action, Principal
from gateway.archive.access import NotPermitted, NotVisible
from gateway.archive.erasure import delete_account, delete_study, receipt
from gateway.archive.query import Query, QueryError
from gateway.errors import TooMany
from gateway.http.errors import REFUSALS, HttpError, http_error
from gateway.http.urls import base_url
from gateway.identity import grants, holder
from gateway.identity import sign_in as identity
from gateway.identity.credentials import AuthError, hash_token
from gateway.numbers import NumberError, parse_int
from gateway.runtime.services import Services

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
    try:  # neither the operator token itself nor a provider token is a page session
        principal = identity.session_principal(_svc(), token, request.remote_addr)
    except AuthError:
        raise _SignInNeeded() from None
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


def _account(principal: Principal, account_id: str, action: Action) -> dict:
    """The same gate as the API's: 404 without standing, 403 without the right (MANAGE: the owner's)."""
    try:
        account = holder.open_account(_svc().db, principal, action, account_id, _base_url())
    except NotVisible:
        raise HttpError(404, "There is no such account, or you have no access to it.") from None
    except NotPermitted as exc:
        if action is Action.MANAGE:
            raise HttpError(403, "Only the owner of the account can open this page.") from None
        raise HttpError(403, f"You may not do this on this account: {exc}.") from None
    return {**account.view, "is_owner": account.owned_by(principal), "decision": account.decision}


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
    titles = {400: "Bad request", 403: "Not allowed", 404: "Not found", 409: "Already done", 429: "Too many attempts"}
    resp = _page("error.html", exc.status, title=titles.get(exc.status, "Error"), message=exc.message)
    for k, v in (exc.headers or {}).items():
        if k.lower() != "www-authenticate" and isinstance(v, str):
            resp.headers[k] = v
    return resp


def _refused(exc: Exception) -> Response:
    """A service's refusal as an error page, its status by class (gateway.http.errors.STATUS)."""
    mapped = http_error(exc)
    if mapped is None:
        raise exc
    return _error_page(mapped)


for _kind in REFUSALS:
    bp.register_error_handler(_kind, _refused)


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
        principal = identity.sign_in(svc, email, password, request.remote_addr)
    except AuthError:
        return _sign_in_page(401, error="Wrong email or password.", email=email)
    except TooMany as exc:
        resp = _sign_in_page(429, error=str(exc), email=email)
        resp.headers["Retry-After"] = str(exc.retry_after)
        return resp
    token, _expires = identity.issue_user_token(svc.db, principal.id, svc.settings.token_ttl)
    resp = redirect(url_for("web.accounts"), 303)
    _set_session_cookie(resp, token, svc.settings.token_ttl or None)
    _clear_pre_cookie(resp)
    return resp


@bp.post("/operator/sign-in")
def operator_sign_in() -> Response:
    svc = _svc()
    try:
        session_token, max_age = identity.operator_sign_in(svc, request.form.get("operator_token", ""),
                                                           request.remote_addr)
    except AuthError:
        return _sign_in_page(401, operator_error="That is not the operator token.")
    except TooMany as exc:
        resp = _sign_in_page(429, operator_error=f"Too many failed sign-ins; try again in {exc.retry_after} s.")
        resp.headers["Retry-After"] = str(exc.retry_after)
        return resp
    resp = redirect(url_for("web.providers"), 303)
    _set_session_cookie(resp, session_token, max_age)
    _clear_pre_cookie(resp)
    return resp


@bp.post("/sign-out")
def sign_out() -> Response:
    _principal()
    identity.sign_out(_svc(), g.session_token)  # the user's or the operator's session
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
    return _page("accounts.html", accounts=holder.my_accounts(_svc().db, principal, _base_url()))


@bp.get("/accounts/<account_id>")
def account(account_id: str) -> Response:
    principal = _user()
    acc = _account(principal, account_id, Action.READ)
    studies, may_delete = holder.account_studies(_svc().db, principal, account_id)
    for st in studies:
        st["date"], st["patient_name"] = _dicom_date(st["date"]), _person_name(st["patient_name"])
    return _page("account.html", account=acc, studies=studies, may_delete=may_delete,
                 done=_MESSAGES.get(request.args.get("done", "")))


def _study_row(principal: Principal, account_id: str, study_uid: str) -> dict:
    """The one study, as the query service finds it for the caller (sensitivity filter included)."""
    q = Query(level="study", study_uid=study_uid, include={"StudyDescription"}, limit=1)
    try:
        found = _svc().query.search(principal, account_id, q)
    except (NotVisible, NotPermitted, QueryError):  # not one the caller may see, or not a UID
        found = []
    if not found:
        raise HttpError(404, "There is no such study in this account (it may have been deleted already).")
    st = found[0]
    return {"study": st["StudyInstanceUID"], "date": _dicom_date(st["StudyDate"]),
            "description": st["StudyDescription"], "patient_name": _person_name(st["PatientName"]),
            "instances": st["NumberOfStudyRelatedInstances"]}


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
    shares, links = holder.access_lists(_svc().db, acc["id"])
    return _page("access.html", status, account=acc, shares=shares, links=links,
                 done=_MESSAGES.get(request.args.get("done", "")), **ctx)


@bp.get("/accounts/<account_id>/access")
def access(account_id: str) -> Response:
    acc = _account(_user(), account_id, Action.MANAGE)
    return _access_page(acc)


@bp.post("/accounts/<account_id>/shares")
def share_grant(account_id: str) -> Response:
    principal = _user()
    acc = _account(principal, account_id, Action.MANAGE)
    form = {k: request.form.get(k, "").strip() for k in ("email", "role", "expires")}
    form["sensitive"] = request.form.get("sensitive") == "on"
    if not form["email"]:
        return _access_page(acc, 400, error="Give the email address of the person to share with.", form=form)
    try:
        grants.grant_share(_svc().db, account_id=account_id, email=form["email"], role=form["role"],
                           sensitive=form["sensitive"], expires=form["expires"] or None,
                           actor=principal.label, source=principal.source)
    except REFUSALS as exc:
        return _access_page(acc, 400, error=str(exc), form=form)
    return redirect(url_for("web.access", account_id=account_id, done="share-granted"), 303)


@bp.post("/accounts/<account_id>/shares/<share_id>/revoke")
def share_revoke(account_id: str, share_id: str) -> Response:
    principal = _user()
    _account(principal, account_id, Action.MANAGE)
    grants.revoke_share(_svc().db, share_id, actor=principal.label, account_id=account_id, source=principal.source)
    return redirect(url_for("web.access", account_id=account_id, done="share-revoked"), 303)


@bp.post("/accounts/<account_id>/links/<link_id>/revoke")
def link_revoke(account_id: str, link_id: str) -> Response:
    principal = _user()
    _account(principal, account_id, Action.MANAGE)
    grants.revoke_link(_svc().db, link_id, actor=principal.label, account_id=account_id, source=principal.source)
    return redirect(url_for("web.access", account_id=account_id, done="link-revoked"), 303)


@bp.get("/accounts/<account_id>/audit")
def audit_trail(account_id: str) -> Response:
    acc = _account(_user(), account_id, Action.MANAGE)
    try:
        before = parse_int(request.args.get("before"), "before", minimum=1)
    except NumberError as exc:
        raise HttpError(400, f"The address is wrong: {exc}.") from None
    entries = holder.audit_entries(_svc().db, account_id, limit=AUDIT_PAGE + 1, before_id=before)
    more = len(entries) > AUDIT_PAGE
    entries = entries[:AUDIT_PAGE]
    return _page("audit.html", account=acc, entries=entries, before=before,
                 older=entries[-1]["id"] if more else None)


@bp.get("/accounts/<account_id>/delete")
def account_delete_confirm(account_id: str) -> Response:
    principal = _user()
    acc = _account(principal, account_id, Action.MANAGE)
    n = holder.live_study_count(_svc().db, account_id)
    return _page("account_delete.html", account=acc, studies=n, purge_window=_svc().settings.purge_window)


@bp.post("/accounts/<account_id>/delete")
def account_delete(account_id: str) -> Response:
    principal = _user()
    acc = _account(principal, account_id, Action.MANAGE)
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
    return _page("operator_providers.html", status, providers=grants.list_providers(_svc().db),
                 done=_MESSAGES.get(request.args.get("done", "")), **ctx)


@bp.get("/operator/providers")
def providers() -> Response:
    _operator()
    return _providers_page()


@bp.post("/operator/providers")
def provider_add() -> Response:
    principal = _operator()
    form = {k: request.form.get(k, "").strip() for k in ("name", "ae_title", "networks", "host", "port")}
    try:  # a whole number; the consent rules check the rest (host and port together, the port's range, AE, networks)
        port = parse_int(form["port"], "the port") if form["port"] else None
    except NumberError as exc:
        return _providers_page(400, error=f"{exc}.", form=form)
    try:
        created = grants.add_provider(_svc().db, name=form["name"], ae_title=form["ae_title"],
                                      networks=_parse_networks(form["networks"]), host=form["host"] or None,
                                      port=port, actor=principal.label)
    except REFUSALS as exc:
        return _providers_page(400, error=str(exc), form=form)
    return _providers_page(created=created)


@bp.post("/operator/providers/<provider_id>/remove")
def provider_remove(provider_id: str) -> Response:
    principal = _operator()
    grants.remove_provider(_svc().db, provider_id, actor=principal.label)
    return redirect(url_for("web.providers", done="provider-removed"), 303)


def _links_page(status: int = 200, **ctx: Any) -> Response:
    db = _svc().db
    rows, provs = grants.list_links(db), grants.list_providers(db)
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
    try:  # the consent rules check the scopes, the provider and the account
        grants.create_link(_svc().db, account_id=form["account"], provider_id=form["provider"], push=form["push"],
                           pull=form["pull"], sensitive=form["sensitive"], expires=form["expires"] or None,
                           actor=principal.label, source=principal.source)
    except REFUSALS as exc:
        return _links_page(400, error=str(exc), form=form)
    return redirect(url_for("web.links", done="link-created"), 303)


@bp.post("/operator/links/<link_id>/revoke")
def operator_link_revoke(link_id: str) -> Response:
    principal = _operator()
    grants.revoke_link(_svc().db, link_id, actor=principal.label, source=principal.source)
    return redirect(url_for("web.links", done="link-revoked"), 303)

