"""Scheduled jobs: run by APScheduler inside ``serve``, or once by ``dicomgate jobs run NAME``.

Every job is idempotent and safe to run twice or concurrently (the purge
claims each erasure under a row lock / the SQLite write lock; usage folding
deletes exactly the rows it counted; expiry records an event once; reconcile
only reports unless asked to repair).
"""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Callable

from sqlalchemy import select

from consent.expiry import record_expiries
from gateway.archive.erasure import purge
from gateway.db.base import utcnow
from gateway.db.models import Instance
from gateway.ops.usage import aggregate_usage

if TYPE_CHECKING:  # jobs are handed the composition root; they never build it
    from gateway.runtime.services import Services

log = logging.getLogger(__name__)
JOB_NAMES = ("purge", "aggregate-usage", "expire-consents", "reconcile")


def run_purge(svc: Services, **_: object) -> dict:
    return purge(svc.db, svc.store)


def run_aggregate_usage(svc: Services, **_: object) -> dict:
    return aggregate_usage(svc.db, retention_days=svc.settings.usage_retention_days)


def run_expire_consents(svc: Services, **_: object) -> dict:
    """Record, once, that a link or share reached its expiry (the decision already ignores it)."""
    with svc.db.session(write=True) as s:
        return {"expired": record_expiries(s)}


def run_reconcile(svc: Services, *, repair: bool = False, grace_seconds: int = 3600, **_: object) -> dict:
    """Objects without index rows, and index rows without objects.

    With ``repair``: orphan objects older than the grace period (so an ingest
    in flight is never raced) are deleted; rows whose object is missing are
    reported only — the bytes are gone, a person must decide.
    """
    with svc.db.session() as s:
        indexed = set(s.scalars(select(Instance.object_key)))
    orphans = [k for k in svc.store.iter_keys("") if k.endswith(".dcm") and k not in indexed]
    missing = sorted(k for k in indexed if not svc.store.exists(k))
    removed = 0
    if repair:
        cutoff = utcnow() - timedelta(seconds=grace_seconds)
        for key in orphans:
            with svc.db.session() as s:
                if s.scalar(select(Instance.id).where(Instance.object_key == key)) is not None:
                    continue
            if _older_than(svc, key, cutoff) and svc.store.delete(key):
                removed += 1
    report = {"orphan_objects": len(orphans), "missing_objects": len(missing), "orphans_removed": removed,
              "missing": missing[:100], "orphans": orphans[:100]}
    if orphans or missing:
        log.warning("reconcile: %s", json.dumps({k: v for k, v in report.items() if not isinstance(v, list)}))
    return report


def _older_than(svc: Services, key: str, cutoff) -> bool:  # type: ignore[no-untyped-def]
    stat = getattr(svc.store, "modified", None)
    if stat is None:
        return True
    try:
        return stat(key) < cutoff
    except Exception:
        return False


JOBS: dict[str, Callable[..., dict]] = {
    "purge": run_purge,
    "aggregate-usage": run_aggregate_usage,
    "expire-consents": run_expire_consents,
    "reconcile": run_reconcile,
}


def run_job(svc: Services, name: str, **options: object) -> dict:
    if name not in JOBS:
        raise ValueError(f"unknown job {name!r}; jobs are: {', '.join(JOB_NAMES)}")
    return JOBS[name](svc, **options)


def start_scheduler(svc: Services):  # type: ignore[no-untyped-def]
    """APScheduler in the serve process: purge often enough to finish within ``purge_window``."""
    from apscheduler.schedulers.background import BackgroundScheduler

    scheduler = BackgroundScheduler(timezone="UTC", job_defaults={"coalesce": True, "max_instances": 1})
    purge_every = max(2, min(60, svc.settings.purge_window // 5))

    def safe(name: str) -> Callable[[], None]:
        def job() -> None:
            try:
                result = run_job(svc, name)
                if any(v for v in result.values() if isinstance(v, int)):
                    log.info("job %s: %s", name, json.dumps({k: v for k, v in result.items() if not isinstance(v, list)}))
            except Exception:
                log.exception("job %s failed; it runs again at its next time", name)

        return job

    scheduler.add_job(safe("purge"), "interval", seconds=purge_every, id="purge")
    scheduler.add_job(safe("expire-consents"), "interval", seconds=60, id="expire-consents")
    scheduler.add_job(safe("aggregate-usage"), "interval", hours=1, id="aggregate-usage")
    scheduler.add_job(safe("reconcile"), "interval", hours=24, id="reconcile")
    scheduler.start()
    return scheduler
