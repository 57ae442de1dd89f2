"""Sign-in throttling holds for concurrent attempts, not only sequential ones, and
across processes (each HTTP worker has its own throttle object on one index)."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import select

from gateway.db import Database
from gateway.db.migrate import upgrade
from gateway.db.models import SignInFailure
from gateway.identity.throttle import SignInThrottle


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'index.sqlite3'}"
    else:
        url = request.getfixturevalue("pg_database")().replace("postgresql://", "postgresql+psycopg://", 1)
    db = Database(url)
    upgrade(db)
    db.dispose()
    return url


@pytest.fixture
def databases(db_url):
    made: list[Database] = []

    def new() -> Database:
        made.append(Database(db_url))
        return made[-1]

    yield new
    for db in made:
        db.dispose()


def fail(t: SignInThrottle, *keys: str) -> int:
    """One wrong attempt: what ``begin`` answered (0 = it went ahead, and then failed)."""
    wait = t.begin(*keys)
    if wait == 0:
        t.failed(*keys)
    return wait


def test_sequential_failures_lock_after_the_free_ones(databases):
    t = SignInThrottle(databases(), free=5)
    assert [fail(t, "email:e", "ip:1") for _ in range(5)] == [0] * 5
    assert t.begin("email:e", "ip:1") == 30  # the 6th attempt, after 5 failures
    assert t.begin("email:other", "ip:1") == 0  # the address has a larger budget
    t.succeeded("email:other", "ip:1")
    assert [fail(t, f"email:{i}", "ip:2") for i in range(20)] == [0] * 20
    assert t.begin("email:new", "ip:2") > 0


def test_concurrent_wrong_attempts_are_bounded_and_then_lock(databases):
    t = SignInThrottle(databases(), free=5)
    allowed = []
    barrier = threading.Barrier(20)

    def attempt():
        barrier.wait()
        if t.begin("email:x", "ip:1") == 0:
            allowed.append(1)

    threads = [threading.Thread(target=attempt) for _ in range(20)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(allowed) == 10  # at most 2 x free in flight
    for _ in allowed:
        t.failed("email:x", "ip:1")
    assert t.begin("email:x", "ip:9") >= 30  # and once they have failed, the email is locked


def test_parallel_right_passwords_never_lock_each_other_out(databases):
    """A viewer's parallel fetches with HTTP Basic: every one is let through and none locks."""
    t = SignInThrottle(databases(), free=5)
    for _ in range(3):
        assert [t.begin("email:v", "ip:1") for _ in range(8)] == [0] * 8  # 8 in flight at once
        for _ in range(8):
            t.succeeded("email:v", "ip:1")
    assert t.retry_after("email:v", "ip:1") == 0 and t.state_of("ip:1") == 0


def test_the_budget_is_shared_by_processes_on_one_index(databases):
    """Two throttles on two engines (as two HTTP worker processes have): a guesser
    gets one budget, not one per worker, and a success in one clears it in the other."""
    a, b = SignInThrottle(databases(), free=3), SignInThrottle(databases(), free=3)
    assert [fail(a, "email:e") for _ in range(2)] + [fail(b, "email:e")] == [0] * 3
    assert a.begin("email:e") > 0 and b.begin("email:e") > 0
    assert b.retry_after("email:e") > 0
    b.begin("email:f")
    a.succeeded("email:f")
    assert b.state_of("email:f") == 0


def test_success_clears_the_email_and_gives_the_address_its_attempt_back(databases):
    t = SignInThrottle(databases(), free=2)
    assert t.begin("email:a", "ip:1") == 0
    t.succeeded("email:a", "ip:1")
    assert t.state_of("ip:1") == 0
    assert fail(t, "email:a", "ip:1") == 0
    assert fail(t, "email:a", "ip:1") == 0  # second failure: locks the email from now on
    assert t.begin("email:a", "ip:1") > 0


def test_a_success_on_the_last_free_attempt_does_not_lock(databases):
    t = SignInThrottle(databases(), free=3)
    assert [fail(t, "email:a", "ip:1") for _ in range(2)] == [0] * 2
    assert t.begin("email:a", "ip:1") == 0  # the 3rd, which would lock if it failed ...
    t.succeeded("email:a", "ip:1")  # ... was right
    assert t.begin("email:a", "ip:1") == 0 and t.retry_after("ip:1") == 0


def test_the_lock_doubles_after_each_further_failure(databases):
    now = [1_000_000.0]
    t = SignInThrottle(databases(), free=2, window=3600, clock=lambda: now[0])
    assert [fail(t, "email:a") for _ in range(2)] == [0, 0]
    waits = []
    for _ in range(3):
        waits.append(t.begin("email:a"))
        now[0] += waits[-1]
        assert fail(t, "email:a") == 0  # the lock is over: one more try, which fails
    assert waits == [30, 60, 120]


def test_keys_are_not_stored_and_old_rows_go(databases):
    now = [1_000_000.0]
    db = databases()
    t = SignInThrottle(db, free=1, window=60, base_lock=30, max_lock=30, clock=lambda: now[0])
    fail(t, "email:alice@example.org", "ip:10.1.2.3")  # locks the email until +30 s
    with db.session() as s:
        rows = s.scalars(select(SignInFailure)).all()
    assert len(rows) == 2
    stored = " ".join(f"{r.key_hash} {r.failures}" for r in rows)
    assert "alice" not in stored and "10.1.2.3" not in stored
    assert t.retry_after("email:alice@example.org") == 30
    now[0] += 61  # window and lock both over: the next attempt removes the old rows
    assert t.begin("email:bob@example.org") == 0
    with db.session() as s:
        assert len(s.scalars(select(SignInFailure)).all()) == 1
    assert t.state_of("email:alice@example.org") == 0
