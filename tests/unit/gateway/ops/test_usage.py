"""Usage events: kept per account for the retention period, then folded into
daily aggregates without account or user, exactly once even when the job runs
twice or concurrently (SQLite and PostgreSQL)."""

from __future__ import annotations

import os
import secrets
import threading
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import func, insert, select

from gateway.db.models import UsageDaily, UsageEvent
from gateway.runtime.services import Services
from gateway.runtime.settings import load_settings
from gateway.ops.usage import aggregate_usage, daily_usage, forget_account_usage, record_usage

PG_ADMIN_URL = os.environ.get("DICOMGATE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)
KINDS = ("sign-in", "sign-in-failed", "request", "association")


@pytest.fixture
def pg_services(tmp_path):
    """Services on a throwaway PostgreSQL database, dropped afterwards."""
    psycopg = pytest.importorskip("psycopg")
    name = f"dicomgate_usage_{os.getpid()}_{secrets.token_hex(4)}"
    try:
        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN_URL}: {exc}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    svc = Services.from_settings(
        load_settings(env={}, overrides={"data_dir": str(tmp_path), "database_url": url}), need_store=False
    )
    try:
        yield svc
    finally:
        svc.close()
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def seed(db, *, days_back: list[float], kinds=KINDS, per=1, account="acc_1", user="usr_1") -> dict:
    """Insert events at NOW - days_back for every kind, ``per`` of each; return expected daily counts."""
    rows, expected = [], {}
    for d in days_back:
        t = NOW - timedelta(days=d)
        for kind in kinds:
            for _ in range(per):
                rows.append({"time": t, "account_id": account, "user_id": user, "kind": kind, "detail": "GET /x"})
            key = (t.strftime("%Y-%m-%d"), kind)
            expected[key] = expected.get(key, 0) + per
    with db.session(write=True) as s:
        for start in range(0, len(rows), 2000):
            s.execute(insert(UsageEvent.__table__), rows[start:start + 2000])
    return expected


def daily(db) -> dict:
    return {(r["day"], r["kind"]): r["count"] for r in daily_usage(db)}


def events(db) -> list[UsageEvent]:
    with db.session() as s:
        return list(s.scalars(select(UsageEvent).order_by(UsageEvent.id)))


# -- record_usage -----------------------------------------------------------------------


def test_record_usage_inserts_one_event(services):
    record_usage(services.db, kind="sign-in", account_id="acc_1", user_id="usr_1", detail="basic")
    record_usage(services.db, kind="association", account_id="acc_1", detail="x" * 500)
    evs = events(services.db)
    assert [(e.kind, e.account_id, e.user_id) for e in evs] == [("sign-in", "acc_1", "usr_1"),
                                                                ("association", "acc_1", None)]
    assert evs[0].detail == "basic" and len(evs[1].detail) == 200
    assert abs((evs[0].time - datetime.now(timezone.utc)).total_seconds()) < 60


def test_record_usage_never_raises(services, caplog):
    services.db.dispose()
    broken = type(services.db)("sqlite:////nonexistent-dir/never/there.db")
    record_usage(broken, kind="request", account_id="acc_1")  # no exception
    assert "could not record usage" in caplog.text


def test_record_usage_refuses_a_kind_that_could_carry_an_identifier(services):
    record_usage(services.db, kind="sign-in acc_123", account_id="acc_1")
    record_usage(services.db, kind="1.2.840.113619", account_id="acc_1")
    assert events(services.db) == []


# -- aggregate_usage --------------------------------------------------------------------


def test_old_events_are_folded_and_deleted_new_ones_kept(services):
    db = services.db
    expected = seed(db, days_back=[30, 20, 20.5, 15], per=2)
    seed(db, days_back=[13.9, 1, 0])
    result = aggregate_usage(db, retention_days=14, now=NOW)
    assert result == {"folded": 4 * 4 * 2, "days": len({d for d, _ in expected})}
    assert daily(db) == expected
    left = events(db)
    assert len(left) == 3 * 4
    assert all(e.time >= NOW - timedelta(days=14) for e in left)


def test_aggregate_is_idempotent_and_adds_to_existing_days(services):
    db = services.db
    first = seed(db, days_back=[20, 16])
    aggregate_usage(db, retention_days=14, now=NOW)
    assert aggregate_usage(db, retention_days=14, now=NOW) == {"folded": 0, "days": 0}
    assert daily(db) == first
    # later events of an already aggregated day are added to its row
    seed(db, days_back=[20])
    assert aggregate_usage(db, retention_days=14, now=NOW)["folded"] == 4
    assert daily(db) == {k: v * (2 if k[0] == (NOW - timedelta(days=20)).strftime("%Y-%m-%d") else 1)
                         for k, v in first.items()}


def test_days_are_utc_days(services):
    db = services.db
    t = datetime(2026, 11, 1, 23, 59, 59, tzinfo=timezone(timedelta(hours=-5)))  # 2026-11-02 04:59:59 UTC
    with db.session(write=True) as s:
        s.add(UsageEvent(time=t, account_id="a", user_id=None, kind="request", detail=""))
    aggregate_usage(db, retention_days=14, now=NOW)
    assert daily_usage(db) == [{"day": "2026-11-02", "kind": "request", "count": 1}]
    assert daily_usage(db, since_day="2026-11-03") == []
    with pytest.raises(ValueError):
        daily_usage(db, since_day="02/11/2026")


def test_batches(services):
    db = services.db
    expected = seed(db, days_back=[20, 19, 18], per=7)
    assert aggregate_usage(db, retention_days=14, now=NOW, batch_size=5)["folded"] == 3 * 4 * 7
    assert daily(db) == expected and events(db) == []


def test_aggregates_have_no_account_or_user_reference(services):
    db = services.db
    seed(db, days_back=[20], account="acc_secret", user="usr_secret")
    aggregate_usage(db, retention_days=14, now=NOW)
    columns = set(UsageDaily.__table__.c.keys())
    assert columns == {"id", "day", "kind", "count"}
    with db.session() as s:
        dump = repr(s.execute(select(UsageDaily.__table__)).all())
    assert "acc_secret" not in dump and "usr_secret" not in dump and "GET /x" not in dump


def test_forget_account_usage_keeps_the_count(services):
    db = services.db
    expected = seed(db, days_back=[3], account="acc_gone")
    with db.session(write=True) as s:
        assert forget_account_usage(s, "acc_gone") == 4
    assert all(e.account_id is None for e in events(db))
    aggregate_usage(db, retention_days=2, now=NOW)
    assert daily(db) == expected


def run_concurrently(db, n_threads=2, **kwargs) -> list[dict]:
    barrier = threading.Barrier(n_threads)
    results: list[dict] = []
    errors: list[BaseException] = []

    def worker():
        try:
            barrier.wait()
            results.append(aggregate_usage(db, retention_days=14, now=NOW, **kwargs))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert len(results) == n_threads
    return results


def check_concurrent(db):
    expected = seed(db, days_back=[40, 30, 25, 20, 15.5], per=150)  # 3000 old events
    seed(db, days_back=[1])
    results = run_concurrently(db, batch_size=100)
    assert sum(r["folded"] for r in results) == 5 * 4 * 150
    assert daily(db) == expected
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(UsageEvent)) == 4
    # and once more: nothing left to fold, nothing changes
    assert sum(r["folded"] for r in run_concurrently(db)) == 0
    assert daily(db) == expected


def test_concurrent_runs_count_exactly_once_sqlite(services):
    check_concurrent(services.db)


@pytest.mark.postgres
def test_concurrent_runs_count_exactly_once_postgres(pg_services):
    check_concurrent(pg_services.db)


@pytest.mark.postgres
def test_concurrent_first_insert_of_a_day_postgres(pg_services):
    """Many runs racing to create the same daily rows: inserts that lose are retried as updates."""
    db = pg_services.db
    expected = seed(db, days_back=[20], per=40)
    results = run_concurrently(db, n_threads=6, batch_size=3)
    assert sum(r["folded"] for r in results) == 160
    assert daily(db) == expected


def _lost_insert_race(db, monkeypatch):
    """The update finds no row, the insert then collides with a row that a
    concurrent run created: the savepoint is rolled back and the update retried."""
    import gateway.ops.usage as usage

    with db.session(write=True) as s:
        s.add(UsageDaily(day="2026-11-01", kind="request", count=5))
    real_update, calls = usage.update, []

    def first_misses(table):
        calls.append(1)
        stmt = real_update(table)
        return stmt.where(table.c.day == "never") if len(calls) == 1 else stmt

    monkeypatch.setattr(usage, "update", first_misses)
    with db.session(write=True) as s:
        usage._add_daily(s, "2026-11-01", "request", 3)
        usage._add_daily(s, "2026-11-02", "request", 1)
    assert len(calls) == 3
    assert daily(db) == {("2026-11-01", "request"): 8, ("2026-11-02", "request"): 1}


def test_lost_insert_race_is_retried_as_update_sqlite(services, monkeypatch):
    _lost_insert_race(services.db, monkeypatch)


@pytest.mark.postgres
def test_lost_insert_race_is_retried_as_update_postgres(pg_services, monkeypatch):
    _lost_insert_race(pg_services.db, monkeypatch)
