"""Append-only consent history."""

from __future__ import annotations

import json

from sqlalchemy.orm import Session

from consent.models import ConsentEvent
from gateway.db.base import utcnow


def record_event(
    session: Session, account_id: str | None, kind: str, subject_id: str, change: str, actor: str, snapshot: dict
) -> None:
    session.add(
        ConsentEvent(
            time=utcnow(), account_id=account_id, subject_kind=kind, subject_id=subject_id,
            change=change, actor=actor, snapshot=json.dumps(snapshot, sort_keys=True, default=str),
        )
    )
