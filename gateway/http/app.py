"""The HTTP application: DICOMweb, health; JSON errors everywhere."""

from __future__ import annotations

import logging
import re
import time

from flask import Flask, Response, g, json, request
from werkzeug.exceptions import HTTPException

from dicomweb.qido import bp as qido_bp
from dicomweb.stow import bp as stow_bp
from dicomweb.wado import bp as wado_bp
from gateway.http.api import bp as api_bp
from gateway.http.proxies import TrustedProxies
from gateway.http.errors import REFUSALS, HttpError, http_error
from gateway.http.pages import bp as web_bp
from gateway.ops.health import health
from gateway.ops.metrics import HTTP, HTTP_SECONDS, exposition
from gateway.ops.usage import record_usage
from gateway.runtime.services import Services

log = logging.getLogger(__name__)


def error_response(status: int, message: str, headers: dict[str, str | list[str]] | None = None) -> Response:
    resp = Response(json.dumps({"error": message}), status=status, mimetype="application/json")
    for k, v in (headers or {}).items():
        for value in ([v] if isinstance(v, str) else v):
            resp.headers.add(k, value)
    return resp


def _instrument(app: Flask, services: Services) -> None:
    """Metrics for every request; a usage event for every request that names an account."""
    @app.before_request
    def _start() -> None:
        g.t0 = time.perf_counter()

    @app.after_request
    def _done(resp: Response) -> Response:
        path = request.path
        area = "dicomweb" if "/dicomweb" in path else "api" if path.startswith("/api/") else "other"
        HTTP.labels(area, f"{resp.status_code // 100}xx").inc()
        HTTP_SECONDS.labels(area).observe(time.perf_counter() - getattr(g, "t0", time.perf_counter()))
        account_id = (request.view_args or {}).get("account_id")
        if account_id and resp.status_code < 400 and not request.environ.get("dicomgate.precheck"):
            record_usage(services.db, kind="request", account_id=account_id, detail=f"{request.method} {area}")
        return resp


#: where pages of other origins may call (DICOMweb, REST API); the holder's pages stay same-origin
_CORS_PATH = re.compile(r"^/(accounts/[^/]+/dicomweb|api/v1)(/|$)")


def _cors(app: Flask, origins: list[str]) -> None:
    """CORS for the listed origins: preflights answered, ``Access-Control-Allow-Origin`` and
    ``Vary: Origin`` on every answer there, errors included. Credentials travel in the
    Authorization header (no cookies), so no ``Allow-Credentials``."""
    allowed = set(origins)

    @app.before_request
    def _preflight() -> Response | None:
        if (request.method == "OPTIONS" and request.headers.get("Access-Control-Request-Method")
                and _CORS_PATH.match(request.path)):
            return Response(status=204)
        return None

    @app.after_request
    def _headers(resp: Response) -> Response:
        if not _CORS_PATH.match(request.path):
            return resp
        resp.vary.add("Origin")
        origin = request.headers.get("Origin")
        if origin in allowed:
            resp.headers["Access-Control-Allow-Origin"] = origin
            if request.method == "OPTIONS":
                resp.headers["Access-Control-Allow-Methods"] = "GET, POST, DELETE, OPTIONS"
                resp.headers["Access-Control-Allow-Headers"] = "Authorization, Accept, Content-Type"
                resp.headers["Access-Control-Max-Age"] = "600"
            else:
                resp.headers["Access-Control-Expose-Headers"] = "Content-Type, Content-Length, WWW-Authenticate"
        return resp


def create_app(services: Services) -> Flask:
    app = Flask("dicomgate")
    app.config["services"] = services
    app.config["MAX_CONTENT_LENGTH"] = None  # limits are enforced per route (STOW: max_stow_bytes)
    app.register_blueprint(stow_bp)
    app.register_blueprint(qido_bp)
    app.register_blueprint(wado_bp)
    app.register_blueprint(api_bp)
    app.register_blueprint(web_bp)
    _instrument(app, services)
    if services.settings.cors_origins:
        _cors(app, services.settings.cors_origins)
    if services.settings.trusted_proxies:
        app.wsgi_app = TrustedProxies(app.wsgi_app, services.settings.trusted_proxies)  # type: ignore[method-assign]

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(exposition(), mimetype="text/plain; version=0.0.4")

    @app.get("/healthz")
    def healthz() -> Response:
        checks = health(services.db, services.store)
        ok = all(v == "ok" for v in checks.values())
        return Response(json.dumps({"status": "ok" if ok else "degraded", **checks}),
                        status=200 if ok else 503, mimetype="application/json")

    @app.errorhandler(HttpError)
    def _http_error(exc: HttpError) -> Response:
        return error_response(exc.status, exc.message, exc.headers)

    def _refused(exc: Exception) -> Response:  # the pages answer theirs as pages (their own handler)
        mapped = http_error(exc)
        if mapped is None:
            return _unexpected(exc)
        return error_response(mapped.status, mapped.message, mapped.headers)

    for kind in REFUSALS:  # a service's refusal anywhere (REST, DICOMweb): its status by class
        app.register_error_handler(kind, _refused)

    @app.errorhandler(HTTPException)
    def _werkzeug_error(exc: HTTPException) -> Response:
        return error_response(exc.code or 500, exc.description or exc.name)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception("unhandled error")
        return error_response(500, "internal error; the operator's log has the details")

    return app
