"""REST API under /api/v1 (SPEC "REST API and pages"), described by /api/v1/openapi.json.

Views are thin: authenticate, ask the one consent decision, call a service,
shape JSON. Owner-only routes need MANAGE from a user who owns the account;
"owner or operator" routes also let the operator token in.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, json, request, url_for

from consent.decision import Action, Principal
from gateway.archive.erasure import delete_account, delete_study, receipt
from gateway.http.auth import principal_from_request, service_errors, sign_in
from gateway.http.errors import HttpError
from gateway.http.openapi import api_route, document
from gateway.http.urls import base_url
from gateway.identity import grants, holder
from gateway.identity.holder import OpenedAccount
from gateway.identity.sign_in import issue_user_token
from gateway.numbers import NumberError, parse_int
from gateway.ops.stats import trend_statistics
from gateway.runtime.services import Services

bp = Blueprint("api", __name__, url_prefix="/api/v1")
MAX_JSON = 64 << 10
AUDIT_MAX = 1000  # entries per page of the audit trail

_EMAIL_PW = {"type": "object", "required": ["email", "password"],
             "properties": {"email": {"type": "string"}, "password": {"type": "string"}}}
_SHARE = {"type": "object", "required": ["email", "role"], "properties": {
    "email": {"type": "string"}, "role": {"type": "string", "enum": ["viewer", "editor"]},
    "sensitive": {"type": "boolean"}, "expires": {"type": "string", "format": "date-time"}}}
_LINK = {"type": "object", "required": ["provider"], "properties": {
    "provider": {"type": "string"}, "push": {"type": "boolean"}, "pull": {"type": "boolean"},
    "sensitive": {"type": "boolean"}, "expires": {"type": "string", "format": "date-time"}}}
_PROVIDER = {"type": "object", "required": ["name", "ae_title"], "properties": {
    "name": {"type": "string"}, "ae_title": {"type": "string"},
    "networks": {"type": "array", "items": {"type": "string"}},
    "host": {"type": "string"}, "port": {"type": "integer"}}}


def _svc() -> Services:
    return current_app.config["services"]


def _json(resp: Any, status: int = 200) -> Response:
    return Response(json.dumps(resp), status=status, mimetype="application/json")


def _body(schema: dict) -> dict:
    if request.content_length is not None and request.content_length > MAX_JSON:
        raise HttpError(413, f"the JSON body is larger than {MAX_JSON} bytes")
    raw = request.get_data(cache=False)
    if len(raw) > MAX_JSON:
        raise HttpError(413, f"the JSON body is larger than {MAX_JSON} bytes")
    try:
        data = json.loads(raw or b"null")
    except ValueError:
        raise HttpError(400, "the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise HttpError(400, "the body must be a JSON object")
    for key in schema.get("required", []):
        if key not in data:
            raise HttpError(400, f"the body lacks {key!r}")
    for key, value in data.items():
        spec = schema["properties"].get(key)
        if spec is None:
            raise HttpError(400, f"unknown field {key!r}")
        want = {"string": str, "boolean": bool, "integer": int, "array": list}[spec["type"]]
        if not isinstance(value, want) or (want is int and isinstance(value, bool)):
            raise HttpError(400, f"{key!r} must be a {spec['type']}")
        if "enum" in spec and value not in spec["enum"]:
            raise HttpError(400, f"{key!r} must be one of {', '.join(spec['enum'])}")
    return data


def _principal() -> Principal:
    return principal_from_request(_svc(), request)


def _require(principal: Principal, account_id: str, action: Action, *, operator_ok: bool = False) -> OpenedAccount:
    """The consent decision for ``action`` (MANAGE: the owner, or the operator, and nobody else), and
    the operator kept out of the holder's own routes unless ``operator_ok``."""
    with service_errors(account_id):
        account = holder.open_account(_svc().db, principal, action, account_id, base_url())
    if principal.kind == "operator" and not operator_ok:
        raise HttpError(403, "not allowed: this is for the account holder")
    return account


def _require_operator(principal: Principal) -> None:
    if principal.kind != "operator":
        raise HttpError(403, "not allowed: operators only (operator token)")


def _require_user(principal: Principal) -> None:
    if principal.kind not in ("user", "operator"):
        raise HttpError(403, "not allowed: sign in as a user")


# ---------------------------------------------------------------- auth
@api_route(bp, "/auth/token", "POST", summary="Sign in: exchange email and password for a bearer token",
           who="anyone", body=_EMAIL_PW, public=True,
           responses={200: "{token, expires}", 401: "wrong email or password", 429: "too many failures"})
def token() -> Response:
    svc = _svc()
    data = _body(_EMAIL_PW)
    principal = sign_in(svc, data["email"], data["password"], request.remote_addr)
    tok, expires = issue_user_token(svc.db, principal.id, svc.settings.token_ttl)
    return _json({"token": tok, "expires": expires.isoformat() if expires else None})


# ---------------------------------------------------------------- accounts
@api_route(bp, "/accounts", "GET", summary="Accounts the caller owns or holds a share on", who="a user",
           responses={200: "list of accounts", 401: "no credentials"})
def accounts() -> Response:
    principal = _principal()
    if principal.kind != "user":
        raise HttpError(403, "not allowed: sign in as a user")
    return _json(holder.my_accounts(_svc().db, principal, base_url()))


@api_route(bp, "/accounts/<account_id>/access", "GET", summary="Everyone who can reach the account",
           who="owner", responses={200: "{owner, shares, links}", 403: "not the owner", 404: "no such account"})
def access(account_id: str) -> Response:
    principal = _principal()
    account = _require(principal, account_id, Action.MANAGE)
    in_force_shares, in_force_links = holder.access_lists(_svc().db, account_id)
    shares = [{k: v[k] for k in ("id", "email", "role", "sensitive", "expires")} for v in in_force_shares]
    links = [{k: v[k] for k in ("id", "provider", "provider_id", "push", "pull", "sensitive", "expires")}
             for v in in_force_links]
    return _json({"owner": {"email": account.view["owner"], "role": "owner"}, "shares": shares, "links": links})


@api_route(bp, "/accounts/<account_id>/shares", "POST", summary="Share the account with another user",
           who="owner", body=_SHARE, responses={201: "the share", 400: "bad input", 403: "not the owner"})
def share_grant(account_id: str) -> Response:
    principal = _principal()
    _require(principal, account_id, Action.MANAGE)
    data = _body(_SHARE)
    view = grants.grant_share(_svc().db, account_id=account_id, email=data["email"], role=data["role"],
                              sensitive=bool(data.get("sensitive")), expires=data.get("expires"),
                              actor=principal.label, source=principal.source)
    return _json(view, 201)


@api_route(bp, "/accounts/<account_id>/shares/<share_id>", "DELETE", summary="Revoke a share",
           who="owner", responses={204: "revoked", 403: "not the owner", 404: "no such share"})
def share_revoke(account_id: str, share_id: str) -> Response:
    principal = _principal()
    _require(principal, account_id, Action.MANAGE)
    grants.revoke_share(_svc().db, share_id, actor=principal.label, account_id=account_id, source=principal.source)
    return Response(status=204)


@api_route(bp, "/accounts/<account_id>/links", "POST", summary="Link a provider to the account",
           who="owner or operator", body=_LINK, responses={201: "the link", 400: "bad input", 403: "not allowed"})
def link_create(account_id: str) -> Response:
    principal = _principal()
    _require(principal, account_id, Action.MANAGE, operator_ok=True)
    data = _body(_LINK)
    view = grants.create_link(_svc().db, account_id=account_id, provider_id=data["provider"],
                              push=bool(data.get("push")), pull=bool(data.get("pull")),
                              sensitive=bool(data.get("sensitive")), expires=data.get("expires"),
                              actor=principal.label, source=principal.source)
    return _json(view, 201)


@api_route(bp, "/accounts/<account_id>/links/<link_id>", "DELETE", summary="Revoke a provider link",
           who="owner or operator", responses={204: "revoked", 403: "not allowed", 404: "no such link"})
def link_revoke(account_id: str, link_id: str) -> Response:
    principal = _principal()
    _require(principal, account_id, Action.MANAGE, operator_ok=True)
    grants.revoke_link(_svc().db, link_id, actor=principal.label, account_id=account_id, source=principal.source)
    return Response(status=204)


@api_route(bp, "/accounts/<account_id>/audit", "GET", summary="The account's audit trail, newest first",
           who="owner", responses={200: "entries", 403: "not the owner"})
def audit_trail(account_id: str) -> Response:
    principal = _principal()
    _require(principal, account_id, Action.MANAGE)
    try:
        limit = parse_int(request.args.get("limit"), "limit", minimum=1, maximum=AUDIT_MAX, default=200)
        before = parse_int(request.args.get("before"), "before", minimum=1)
    except NumberError as exc:
        raise HttpError(400, str(exc)) from None
    return _json(holder.audit_entries(_svc().db, account_id, limit=limit or 200, before_id=before))


@api_route(bp, "/accounts/<account_id>/studies", "GET", summary="Studies of the account the caller may see",
           who="owner, share holder", responses={200: "studies", 404: "no such account"})
def studies(account_id: str) -> Response:
    principal = _principal()
    _require(principal, account_id, Action.READ)
    if principal.kind != "user":
        raise HttpError(403, "not allowed: the studies list is for the owner and share holders (use QIDO-RS)")
    return _json(holder.visible_studies(_svc().db, principal, account_id))


@api_route(bp, "/accounts/<account_id>/studies/<study>", "DELETE",
           summary="Delete a study: invisible at once, purged within the purge window",
           who="owner, editor", responses={202: "{status_url}", 403: "not allowed", 404: "no such study"})
def study_delete(account_id: str, study: str) -> Response:
    principal = _principal()
    if principal.kind != "user":
        raise HttpError(403, "not allowed: only the owner or an editor can delete studies")
    erasure = delete_study(_svc().db, principal, account_id, study)
    return _json({"status": "pending", "status_url": url_for("api.erasure_status", receipt_id=erasure.id,
                                                             _external=True)}, 202)


@api_route(bp, "/accounts/<account_id>", "DELETE",
           summary="Delete the account and everything in it", who="owner",
           responses={202: "{status_url}: an unguessable erasure receipt", 403: "not the owner"})
def account_delete(account_id: str) -> Response:
    principal = _principal()
    if principal.kind != "user":
        raise HttpError(403, "not allowed: only the owner can delete the account")
    erasure = delete_account(_svc().db, principal, account_id)
    return _json({"status": "pending", "status_url": url_for("api.erasure_status", receipt_id=erasure.id,
                                                             _external=True)}, 202)


@api_route(bp, "/erasures/<receipt_id>", "GET", summary="Erasure receipt: pending or purged",
           who="anyone holding the receipt URL", public=True,
           responses={200: "{status, requested, purged_at, objects_removed}", 404: "no such receipt"})
def erasure_status(receipt_id: str) -> Response:
    found = receipt(_svc().db, receipt_id)
    if found is None:
        raise HttpError(404, "no such erasure receipt")
    return _json(found)


# ---------------------------------------------------------------- statistics
@api_route(bp, "/stats/trends", "GET", summary="Aggregate trend statistics (no identifiers, k-suppressed)",
           who="anyone signed in", responses={200: "{k, cells, suppressed_cells}"})
def trends() -> Response:
    principal = _principal()
    _require_user(principal)
    svc = _svc()
    return _json(trend_statistics(svc.db, k=svc.settings.stats_k))


# ---------------------------------------------------------------- operators
@api_route(bp, "/providers", "GET", summary="Registered providers", who="operator",
           responses={200: "providers", 403: "not the operator"})
def providers() -> Response:
    _require_operator(_principal())
    return _json(grants.list_providers(_svc().db))


@api_route(bp, "/providers", "POST", summary="Register a provider (its token is shown once)", who="operator",
           body=_PROVIDER, responses={201: "the provider with its token", 400: "bad input"})
def provider_add() -> Response:
    principal = _principal()
    _require_operator(principal)
    data = _body(_PROVIDER)
    view = grants.add_provider(_svc().db, name=data["name"], ae_title=data["ae_title"],
                               networks=list(data.get("networks") or []), host=data.get("host"),
                               port=data.get("port"), actor=principal.label)
    return _json(view, 201)


@api_route(bp, "/providers/<provider_id>", "DELETE", summary="Remove a provider and revoke its links",
           who="operator", responses={204: "removed", 404: "no such provider"})
def provider_remove(provider_id: str) -> Response:
    principal = _principal()
    _require_operator(principal)
    grants.remove_provider(_svc().db, provider_id, actor=principal.label)
    return Response(status=204)


@api_route(bp, "/links", "GET", summary="All links, or one account's", who="operator",
           responses={200: "links"})
def links() -> Response:
    _require_operator(_principal())
    return _json(grants.list_links(_svc().db, request.args.get("account")))


@bp.get("/openapi.json")
def openapi() -> Response:
    return _json(document(current_app))
