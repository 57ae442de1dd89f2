"""Deletion: invisible at once, purged by the scheduler within ``purge_window``.

``delete_study`` / ``delete_account`` stamp ``deleted_at`` (every read path
filters on it through ``consent.decision.study_filter``, so the data
disappears from QIDO, WADO, DIMSE and pages on the next request) and file an
:class:`Erasure` receipt. Deleting an account also revokes each of its links
and shares through ``consent.links`` / ``consent.shares``, so
``consent_events`` records who ended them and when (until the purge erases
the account's history with it). ``purge`` then removes
the objects, the index rows and every trace that names the erased data:

- objects under the study's / account's key prefix;
- instances, series, studies, patients (and, for an account, its links,
  shares, consent history, usage events and the account row);
- the audit trail: entries that name an erased study keep who/what/when but
  lose the UIDs (for an erased account the whole trail goes with it). This is
  the one place that touches audit rows, and only to erase what the holder
  asked to erase;
- SQLite is run with ``secure_delete`` and checkpointed, PostgreSQL vacuumed,
  so the deleted values do not linger in free pages of the database files.

Each purge step is idempotent: a purge that stops half-way is finished by the
next run, and two runs at once do the work once.
"""

from __future__ import annotations

import json
import logging
import secrets
from datetime import datetime

from sqlalchemy import delete, select, text, update
from sqlalchemy.orm import Session

from consent.decision import Action, Principal, decide, load_account, study_filter
from consent.links import revoke_links_of_account
from consent.models import ConsentEvent, Link, Share
from consent.shares import revoke_shares_of_account
from gateway.db import Database
from gateway.db.base import utcnow
from gateway.db.models import Account, AuditEntry, Erasure, Instance, Patient, Series, Study
from gateway.errors import Forbidden, Invalid, NotFound
from gateway.ops import audit
from gateway.ops.usage import forget_account_usage
from storage import ObjectStore
from storage.keys import account_prefix, study_prefix

log = logging.getLogger(__name__)


class ErasureError(Invalid):
    """A deletion refused (its kind, for the adapters' tables, is its class)."""


class ErasureNotFound(ErasureError, NotFound):
    """No such account or study, or not one the caller may see: 404."""


class ErasureForbidden(ErasureError, Forbidden):
    """The caller sees the account but may not delete this: 403."""


def _receipt_id() -> str:
    return secrets.token_urlsafe(32)


def delete_study(db: Database, principal: Principal, account_id: str, study_uid: str) -> Erasure:
    with db.session(write=True) as s:
        decision = decide(s, principal, Action.DELETE, load_account(s, account_id))
        if not decision.visible:
            raise ErasureNotFound(f"no account {account_id}")
        study = s.scalar(select(Study).where(study_filter(decision), Study.study_uid == study_uid))
        if study is None:
            raise ErasureNotFound(f"no study {study_uid}")  # what may not be seen does not exist
        if not decision.allowed:
            raise ErasureForbidden(f"not allowed: {decision.reason}")
        now = utcnow()
        study.deleted_at = now
        erasure = Erasure(id=_receipt_id(), scope="study", account_id=account_id, study_pk=study.id,
                          requested_at=now, requested_by=principal.label)
        s.add(erasure)
        audit.record(s, account_id=account_id, actor=principal.label, action="study.deleted",
                     study_uid=study_uid, source=principal.source, detail={"receipt": erasure.id})
        return erasure


def delete_account(db: Database, principal: Principal, account_id: str) -> Erasure:
    with db.session(write=True) as s:
        decision = decide(s, principal, Action.MANAGE, load_account(s, account_id))
        if not decision.visible:
            raise ErasureNotFound(f"no account {account_id}")
        if not decision.allowed:  # MANAGE: the owner, or the operator
            raise ErasureForbidden("only the owner can delete the account")
        now = utcnow()
        # every link and share ends through consent/, so consent_events shows who ended it and when
        revoke_links_of_account(s, account_id, actor=principal.label)
        revoke_shares_of_account(s, account_id, actor=principal.label)
        account = s.get(Account, account_id)
        assert account is not None
        account.deleted_at = now
        s.execute(update(Study).where(Study.account_id == account_id, Study.deleted_at.is_(None))
                  .values(deleted_at=now))
        erasure = Erasure(id=_receipt_id(), scope="account", account_id=account_id, requested_at=now,
                          requested_by=principal.label)
        s.add(erasure)
        audit.record(s, account_id=account_id, actor=principal.label, action="account.deleted",
                     source=principal.source, detail={"receipt": erasure.id})
        return erasure


def receipt(db: Database, receipt_id: str) -> dict | None:
    with db.session() as s:
        e = s.get(Erasure, receipt_id)
        if e is None:
            return None
        return {
            "status": "purged" if e.purged_at else "pending",
            "scope": e.scope,
            "requested": e.requested_at.isoformat(),
            "purged_at": e.purged_at.isoformat() if e.purged_at else None,
            "objects_removed": e.objects_removed,
        }


def purge(db: Database, store: ObjectStore, *, now: datetime | None = None) -> dict:
    """Purge every erasure not yet purged. Returns counts for the job log."""
    done = {"studies": 0, "accounts": 0, "objects_removed": 0}
    with db.session() as s:
        pending = [(e.id, e.scope) for e in s.scalars(
            select(Erasure).where(Erasure.purged_at.is_(None)).order_by(Erasure.requested_at))]
    for erasure_id, scope in pending:
        removed = _purge_one(db, store, erasure_id)
        if removed is None:
            continue  # another run took it
        done["studies" if scope == "study" else "accounts"] += 1
        done["objects_removed"] += removed
    if pending:
        _scrub_database(db)
    return done


def _purge_one(db: Database, store: ObjectStore, erasure_id: str) -> int | None:
    with db.session(write=True) as s:
        q = select(Erasure).where(Erasure.id == erasure_id, Erasure.purged_at.is_(None))
        if not db.is_sqlite:
            q = q.with_for_update(skip_locked=True)
        e = s.scalar(q)
        if e is None:
            return None
        if e.scope == "study":
            study = s.get(Study, e.study_pk) if e.study_pk is not None else None
            removed = 0
            if study is not None:
                removed = store.delete_prefix(study_prefix(study.account_id, study.study_uid))
                removed += _delete_keys(store, s, select(Instance.object_key).join(Series, Series.id == Instance.series_pk)
                                        .where(Series.study_pk == study.id))
                _delete_study_rows(s, study)
        else:
            removed = store.delete_prefix(account_prefix(e.account_id)) if e.account_id else 0
            _delete_account_rows(s, e.account_id)
            e.account_id = None
        e.purged_at = utcnow()
        e.objects_removed = removed
        log.info("purged %s erasure %s: %d objects", e.scope, e.id[:8], removed)
        return removed


def _delete_keys(store: ObjectStore, s: Session, key_query) -> int:  # type: ignore[no-untyped-def]
    """Objects outside the usual prefix (none expected): remove them too."""
    n = 0
    for key in s.scalars(key_query):
        if store.delete(key):
            n += 1
    return n


def _delete_study_rows(s: Session, study: Study) -> None:
    series_pks = select(Series.id).where(Series.study_pk == study.id)
    sop_uids = set(s.scalars(select(Instance.sop_uid).where(Instance.series_pk.in_(series_pks))))
    s.execute(delete(Instance).where(Instance.series_pk.in_(series_pks)))
    s.execute(delete(Series).where(Series.study_pk == study.id))
    # audit entries keep who / what / when, but no longer name the erased study
    for entry in s.scalars(select(AuditEntry).where(AuditEntry.account_id == study.account_id,
                                                    AuditEntry.study_uid == study.study_uid)):
        entry.study_uid = None
        entry.detail = json.dumps({"redacted": "erased study"})
    for entry in s.scalars(select(AuditEntry).where(AuditEntry.account_id == study.account_id,
                                                    AuditEntry.detail.contains("sop_instance_uid"))):
        if json.loads(entry.detail or "{}").get("sop_instance_uid") in sop_uids:
            entry.detail = json.dumps({"redacted": "erased study"})
    patient_pk, account_id = study.patient_pk, study.account_id
    s.delete(study)
    s.flush()
    if s.scalar(select(Study.id).where(Study.patient_pk == patient_pk).limit(1)) is None:
        s.execute(delete(Patient).where(Patient.id == patient_pk))
    audit.record(s, account_id=account_id, actor="system:purge", action="study.purged",
                 detail={"instances": len(sop_uids)})


def _delete_account_rows(s: Session, account_id: str | None) -> None:
    if account_id is None:
        return
    study_pks = select(Study.id).where(Study.account_id == account_id)
    series_pks = select(Series.id).where(Series.study_pk.in_(study_pks))
    s.execute(delete(Instance).where(Instance.account_id == account_id))
    s.execute(delete(Series).where(Series.id.in_(series_pks)))
    s.execute(delete(Study).where(Study.account_id == account_id))
    s.execute(delete(Patient).where(Patient.account_id == account_id))
    s.execute(delete(AuditEntry).where(AuditEntry.account_id == account_id))
    forget_account_usage(s, account_id)  # still counted in the daily aggregates, no longer tied to it
    s.execute(delete(Link).where(Link.account_id == account_id))
    s.execute(delete(Share).where(Share.account_id == account_id))
    s.execute(delete(ConsentEvent).where(ConsentEvent.account_id == account_id))
    s.execute(delete(Account).where(Account.id == account_id))


def _scrub_database(db: Database) -> None:
    """Make deleted values unrecoverable from the database files."""
    try:
        if db.is_sqlite:
            with db.engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        else:
            with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                for table in ("instances", "series", "studies", "patients", "audit_log", "accounts", "links",
                              "shares", "consent_events", "usage_events"):
                    conn.execute(text(f"VACUUM {table}"))
    except Exception:  # the purge itself is done; this is hygiene
        log.exception("could not scrub the database after a purge")
