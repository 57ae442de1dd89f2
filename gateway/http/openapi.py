"""OpenAPI 3 generated from the routes themselves.

``api_route`` registers a Flask view and records its summary, who may call
it, its JSON body schema and its answers; ``document`` turns the Flask URL map
plus that registry into the OpenAPI document, so the two cannot drift apart.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable

from flask import Blueprint, Flask


@dataclass
class RouteDoc:
    summary: str
    who: str
    body: dict[str, Any] | None = None
    responses: dict[int, str] = field(default_factory=dict)
    public: bool = False


REGISTRY: dict[str, RouteDoc] = {}  # endpoint name -> doc


def api_route(bp: Blueprint, rule: str, method: str, *, summary: str, who: str,
              body: dict[str, Any] | None = None, responses: dict[int, str] | None = None,
              public: bool = False) -> Callable:
    def decorator(fn: Callable) -> Callable:
        REGISTRY[f"{bp.name}.{fn.__name__}"] = RouteDoc(summary, who, body, responses or {}, public)
        bp.add_url_rule(rule, view_func=fn, methods=[method])
        return fn

    return decorator


_ERROR = {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}


def document(app: Flask, prefix: str = "/api/v1") -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith(prefix) or rule.endpoint not in REGISTRY:
            continue
        doc = REGISTRY[rule.endpoint]
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            op: dict[str, Any] = {
                "summary": doc.summary,
                "description": f"Who may call it: {doc.who}.",
                "operationId": rule.endpoint.replace(".", "_"),
                "parameters": [
                    {"name": arg, "in": "path", "required": True, "schema": {"type": "string"}}
                    for arg in sorted(rule.arguments)
                ],
                "responses": {
                    str(code): {
                        "description": text,
                        "content": {"application/json": {"schema": _ERROR if code >= 400 else {"type": "object"}}},
                    } if code != 204 else {"description": text}
                    for code, text in sorted(doc.responses.items())
                },
            }
            if doc.body is not None:
                op["requestBody"] = {"required": True, "content": {"application/json": {"schema": doc.body}}}
            if doc.public:
                op["security"] = []
            paths.setdefault(path, {})[method.lower()] = op
    return {
        "openapi": "3.0.3",
        "info": {"title": "dicomgate REST API", "version": "1",
                 "description": "Account holders' and operators' API. Errors are JSON {\"error\": \"...\"}."},
        "servers": [{"url": "/"}],
        "components": {"securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer"},
            "basic": {"type": "http", "scheme": "basic"},
        }},
        "security": [{"bearer": []}, {"basic": []}],
        "paths": dict(sorted(paths.items())),
    }
