"""Usage logging: raw events tied to an account for a while, then daily aggregates.

Privacy policy, "How Cimar UK uses your information" 2: usage (sign-ins,
requests, associations) is "temporarily stored in association with your
Account for two weeks, at which point it is aggregated with other data and is
no longer associated with your account". So:

- :func:`record_usage` inserts one :class:`UsageEvent` (account id, user id,
  kind, short detail) in its own short write transaction. It never raises:
  a failure to log usage must not break a request or an association.
- :func:`aggregate_usage` (the ``aggregate-usage`` job) folds every event
  older than ``usage_retention_days`` into :class:`UsageDaily` — one count per
  UTC day and kind, nothing else: no account, no user, no detail — and deletes
  the raw rows in the same transaction.
- :func:`daily_usage` lists the aggregates for operators.
- :func:`forget_account_usage` drops the account reference of an erased
  account's raw events (they are still counted when they are folded).

Concurrency of :func:`aggregate_usage`: each batch is one transaction that
selects the events it will fold (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so
two runs take disjoint batches; on SQLite the write transaction starts with
``BEGIN IMMEDIATE``, so runs are serialised and a second run never sees rows
the first has deleted), adds the counts to the daily rows (update, else
insert; an insert that loses a race to a concurrent insert is retried as an
update inside a savepoint) and deletes exactly the ids it counted. A batch
either commits all of that or nothing, so running the job twice, or twice at
once, never counts an event twice or loses one.
"""

from __future__ import annotations

import logging
import re
import time as _time
from collections import Counter
from datetime import datetime, timedelta, timezone

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from gateway.db import Database
from gateway.db.base import utcnow
from gateway.db.models import UsageDaily, UsageEvent

log = logging.getLogger(__name__)

#: The kinds the service records. Others are accepted if they look like a kind
#: (lower-case word with hyphens) so that a new adapter needs no change here;
#: anything else is refused so that no identifier can end up in the
#: aggregates through the ``kind`` column.
KINDS = ("sign-in", "sign-in-failed", "request", "association")
_KIND_RE = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
_DAY_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")

BATCH_SIZE = 5000
_MAX_ATTEMPTS = 5

_EVENTS = UsageEvent.__table__
_DAILY = UsageDaily.__table__


def record_usage(
    db: Database,
    *,
    kind: str,
    account_id: str | None,
    user_id: str | None = None,
    detail: str = "",
) -> None:
    """Record one usage event; log and swallow every error.

    Call it *after* the caller's own write transaction has ended (on SQLite a
    second write transaction in the same thread would wait for the first).
    ``detail`` is short free text (at most 200 characters are kept), e.g. the
    HTTP method and route template or the calling AE title; it must not carry
    PHI (no UIDs, no patient names), even though it is deleted after the
    retention period.
    """
    try:
        if not isinstance(kind, str) or not _KIND_RE.match(kind):
            log.warning("usage event with an invalid kind %r not recorded", kind)
            return
        text = (detail or "")[:200]
        with db.session(write=True) as s:
            s.execute(
                insert(_EVENTS).values(
                    time=utcnow(),
                    account_id=(account_id or None),
                    user_id=(user_id or None),
                    kind=kind,
                    detail=text,
                )
            )
    except Exception:  # noqa: BLE001 - usage logging must never break the caller
        log.warning("could not record usage event %r", kind, exc_info=True)


def aggregate_usage(
    db: Database,
    *,
    retention_days: int,
    now: datetime | None = None,
    batch_size: int = BATCH_SIZE,
) -> dict:
    """Fold every usage event older than ``retention_days`` into daily counts.

    Returns ``{"folded": <events folded by this run>, "days": <distinct UTC
    days this run added to>}``. Idempotent and safe to run concurrently (see
    the module docstring).
    """
    if retention_days < 0:
        raise ValueError("retention_days must be zero or more")
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    now = utcnow() if now is None else now
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware (UTC)")
    cutoff = now - timedelta(days=retention_days)

    folded = 0
    days: set[str] = set()
    while True:
        n, batch_days = _fold_batch_with_retry(db, cutoff, batch_size)
        if n == 0:
            break
        folded += n
        days |= batch_days
    if folded:
        log.info("aggregate-usage: folded %d events into %d days", folded, len(days))
    return {"folded": folded, "days": len(days)}


def _fold_batch_with_retry(db: Database, cutoff: datetime, batch_size: int) -> tuple[int, set[str]]:
    for attempt in range(1, _MAX_ATTEMPTS + 1):
        try:
            return _fold_batch(db, cutoff, batch_size)
        except OperationalError:
            # deadlock / serialisation failure / busy database: the batch was
            # rolled back as a whole, so trying again cannot double-count.
            if attempt == _MAX_ATTEMPTS:
                raise
            log.info("aggregate-usage: batch rolled back (attempt %d), retrying", attempt, exc_info=True)
            _time.sleep(0.05 * attempt)
    raise AssertionError("unreachable")  # pragma: no cover


def _fold_batch(db: Database, cutoff: datetime, batch_size: int) -> tuple[int, set[str]]:
    with db.session(write=True) as s:
        q = (
            select(_EVENTS.c.id, _EVENTS.c.time, _EVENTS.c.kind)
            .where(_EVENTS.c.time < cutoff)
            .order_by(_EVENTS.c.id)
            .limit(batch_size)
        )
        if not db.is_sqlite:
            # Two concurrent runs take disjoint batches; SQLite serialises
            # write transactions with BEGIN IMMEDIATE instead.
            q = q.with_for_update(skip_locked=True)
        rows = s.execute(q).all()
        if not rows:
            return 0, set()
        counts: Counter[tuple[str, str]] = Counter()
        for _id, when, kind in rows:
            counts[(_utc_day(when), kind)] += 1
        # A fixed order of the daily rows keeps concurrent batches from
        # deadlocking on each other.
        for (day, kind) in sorted(counts):
            _add_daily(s, day, kind, counts[(day, kind)])
        ids = [r[0] for r in rows]
        deleted = 0
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            deleted += s.execute(delete(_EVENTS).where(_EVENTS.c.id.in_(chunk))).rowcount
        if deleted != len(ids):
            # Someone else removed rows we counted: undo this batch entirely.
            raise OperationalError("aggregate-usage batch", None, RuntimeError(
                f"deleted {deleted} of {len(ids)} usage events counted; batch rolled back"))
        return len(ids), {day for day, _kind in counts}


def _add_daily(s: Session, day: str, kind: str, n: int) -> None:
    for _ in range(_MAX_ATTEMPTS):
        res = s.execute(
            update(_DAILY)
            .where(_DAILY.c.day == day, _DAILY.c.kind == kind)
            .values(count=_DAILY.c.count + n)
        )
        if res.rowcount:
            return
        try:
            with s.begin_nested():
                s.execute(insert(_DAILY).values(day=day, kind=kind, count=n))
            return
        except IntegrityError:
            continue  # a concurrent run inserted the row first: add to it
    raise OperationalError("aggregate-usage upsert", None, RuntimeError(f"could not add to usage_daily {day} {kind}"))


def _utc_day(when: datetime) -> str:
    if when.tzinfo is None:  # UTCDateTime never returns naive values; be safe anyway
        when = when.replace(tzinfo=timezone.utc)
    return when.astimezone(timezone.utc).strftime("%Y-%m-%d")


def daily_usage(db: Database, since_day: str | None = None) -> list[dict]:
    """The daily aggregates, oldest first: ``[{"day", "kind", "count"}, ...]``.

    ``since_day`` (``YYYY-MM-DD``, inclusive) limits the list.
    """
    q = select(_DAILY.c.day, _DAILY.c.kind, _DAILY.c.count)
    if since_day is not None:
        if not isinstance(since_day, str) or not _DAY_RE.match(since_day):
            raise ValueError(f"{since_day!r} is not a day (YYYY-MM-DD)")
        datetime.strptime(since_day, "%Y-%m-%d")  # a real date, or ValueError
        q = q.where(_DAILY.c.day >= since_day)
    with db.session() as s:
        rows = s.execute(q.order_by(_DAILY.c.day, _DAILY.c.kind)).all()
    return [{"day": d, "kind": k, "count": int(c)} for d, k, c in rows]


def forget_account_usage(session: Session, account_id: str) -> int:
    """Drop the account reference from the raw usage events of an erased account.

    Meant for the purge of an account, inside its transaction; the events are
    still folded into the daily counts later. Returns the number of events.
    """
    res = session.execute(
        update(_EVENTS).where(_EVENTS.c.account_id == account_id).values(account_id=None)
    )
    return int(res.rowcount or 0)
