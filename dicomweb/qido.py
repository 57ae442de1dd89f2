"""QIDO-RS (PS3.18 10.6): search studies, series and instances of an account."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, json, request

from dicomweb.dicomjson import result_json
from dicomweb.media import MediaTypeError, parse_accept
from gateway.dicom.uri import URI
from gateway.http.auth import HttpError, principal_from_request, service_errors
from gateway.archive.query import Query, QueryError
from gateway.runtime.services import Services
from gateway.http.urls import dicomweb_root

bp = Blueprint("qido", __name__)
BASE = "/accounts/<account_id>/dicomweb"


def _services() -> Services:
    return current_app.config["services"]


def _check_accept() -> None:
    try:
        ranges = parse_accept(request.headers.get("Accept"))
    except MediaTypeError as exc:
        raise HttpError(400, f"bad Accept header: {exc}") from None
    for mtype, _ in ranges:
        if mtype in ("application/dicom+json", "application/json", "*/*", "application/*"):
            return
    raise HttpError(406, "QIDO-RS answers application/dicom+json only")


def parse_query(level: str, study: str | None = None, series: str | None = None) -> Query:
    try:
        return Query.from_qido(level, request.args.items(multi=True), study, series)
    except QueryError as exc:
        raise HttpError(400, str(exc)) from None


def _search(account_id: str, q: Query) -> Response:
    svc = _services()
    _check_accept()
    principal = principal_from_request(svc, request)
    with service_errors(account_id):
        results = svc.query.search(principal, account_id, q)
    base = dicomweb_root(account_id)
    body = []
    for r in results:
        series = r["_series_uid"] if q.level in ("series", "instance") else None
        sop = r["_sop_uid"] if q.level == "instance" else None
        body.append(result_json(r, str(URI(base, r["_study_uid"], series, sop))))
    return Response(json.dumps(body), status=200, mimetype="application/dicom+json")


@bp.get(f"{BASE}/studies")
def studies(account_id: str) -> Response:
    return _search(account_id, parse_query("study"))


@bp.get(f"{BASE}/series")
def all_series(account_id: str) -> Response:
    return _search(account_id, parse_query("series"))


@bp.get(f"{BASE}/studies/<study>/series")
def study_series(account_id: str, study: str) -> Response:
    return _search(account_id, parse_query("series", study))


@bp.get(f"{BASE}/instances")
def all_instances(account_id: str) -> Response:
    return _search(account_id, parse_query("instance"))


@bp.get(f"{BASE}/studies/<study>/instances")
def study_instances(account_id: str, study: str) -> Response:
    return _search(account_id, parse_query("instance", study))


@bp.get(f"{BASE}/studies/<study>/series/<series>/instances")
def series_instances(account_id: str, study: str, series: str) -> Response:
    return _search(account_id, parse_query("instance", study, series))
