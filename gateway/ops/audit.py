"""The audit trail: who did what to which account, when, and from where.

Append-only by construction: this module only inserts, nothing in the code
base updates or deletes ``audit_log`` rows (except the account purge, which
removes an erased account's trail together with its data — see jobs).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from gateway.db.base import utcnow
from gateway.db.models import AuditEntry


def entry(
    *,
    account_id: str | None,
    actor: str,
    action: str,
    study_uid: str | None = None,
    source: str | None = None,
    detail: dict[str, Any] | None = None,
    time: datetime | None = None,
) -> dict[str, Any]:
    """One audit row as column values (the one place that decides its shape)."""
    return dict(
        time=time or utcnow(), account_id=account_id, actor=actor, action=action, study_uid=study_uid,
        source=source, detail=json.dumps(detail or {}, sort_keys=True, default=str),
    )


def record(session: Session, **fields: Any) -> None:
    """Append one entry (see :func:`entry` for the fields) to the session's transaction."""
    session.add(AuditEntry(**entry(**fields)))


_INSERT = insert(AuditEntry)


def record_many(session: Session, rows: list[dict[str, Any]]) -> None:
    """Append many entries made by :func:`entry` with one INSERT (ingest batches)."""
    if rows:
        session.connection().execute(_INSERT, rows)


def entries(session: Session, account_id: str, *, limit: int = 200, before_id: int | None = None) -> list[dict]:
    q = select(AuditEntry).where(AuditEntry.account_id == account_id)
    if before_id is not None:
        q = q.where(AuditEntry.id < before_id)
    rows = session.scalars(q.order_by(AuditEntry.id.desc()).limit(limit))
    return [
        {
            "id": r.id, "time": r.time.isoformat(), "actor": r.actor, "action": r.action,
            "study": r.study_uid, "source": r.source, "detail": json.loads(r.detail or "{}"),
        }
        for r in rows
    ]
