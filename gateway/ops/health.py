"""Is the service able to work? One probe of the index and one of the object store (``/healthz``)."""

from __future__ import annotations

from sqlalchemy import text

from gateway.db import Database
from storage import ObjectStore


def health(db: Database, store: ObjectStore) -> dict[str, str]:
    """``{"database": ..., "object_store": ...}``, each ``"ok"`` or ``"error: ..."`` (never raises)."""
    checks = {}
    try:
        with db.session() as s:
            s.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # pragma: no cover - reported, not raised
        checks["database"] = f"error: {exc}"
    try:
        store.exists("healthz/probe")
        checks["object_store"] = "ok"
    except Exception as exc:  # pragma: no cover
        checks["object_store"] = f"error: {exc}"
    return checks
