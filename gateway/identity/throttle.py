"""Slowing down password guessing: per email and per source address.

Driven from one place, ``gateway.identity.sign_in`` (which turns a wait into
``gateway.errors.TooMany``); adapters never call it.

The ``free``-th failure within ``window`` seconds locks a key for 30 s, so
the next attempt is refused (429) whatever its password; each further failure
after a lock doubles it, up to 15 minutes. A success clears the email's count.

An attempt is counted when it begins (``begin``), before its password is
checked, and only a wrong one locks (``failed``): so concurrent attempts are
bounded too (at most ``2 x free`` in flight and failed per window: a burst of
parallel guesses gets that many, then the lock), while parallel requests with
the *right* password (a viewer's six fetches with HTTP Basic) never lock each
other out.
A source address (``ip:``) gets four times the budget, so colleagues behind
one NAT do not lock each other out as easily as one account's guesser is
stopped.

The counts live in the index (``sign_in_failures``), not in memory: HTTP
runs in several worker processes, and a guesser must not get a fresh budget
from each of them. Each attempt is one write transaction (SQLite: the
writers' queue; PostgreSQL: the rows locked ``FOR UPDATE``, always in key
order), so concurrent attempts cannot slip past the limit either; expired
rows are deleted in a transaction of their own that skips locked rows. Keys are stored only as an HMAC
under a secret kept in ``installation``; a row is deleted once its window
and lock have passed.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from typing import Callable

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from gateway.db import Database
from gateway.db.models import Installation, SignInFailure

_SECRET_KEY = "sign-in-throttle-secret"


class SignInThrottle:
    def __init__(self, db: Database, free: int = 5, window: float = 900.0, base_lock: float = 30.0,
                 max_lock: float = 900.0, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.free, self.window, self.base_lock, self.max_lock = free, window, base_lock, max_lock
        self._clock = clock  # wall clock: the rows are shared by processes (and survive a restart)
        self._secret: bytes | None = None

    def _free(self, key: str) -> int:
        return self.free * 4 if key.startswith("ip:") else self.free

    # -- the operations ---------------------------------------------
    def retry_after(self, *keys: str) -> int:
        """Seconds the caller must wait (0: may try)."""
        self._key()
        with self.db.session() as s:
            return self._wait(self._rows(s, keys, lock=False).values(), self._clock())

    def begin(self, *keys: str) -> int:
        """Start an attempt: 0 to go ahead (counted until ``succeeded``; ``failed`` makes it lock), else
        seconds to wait: the lock's, or 1 while ``2 x free`` attempts of a key are in flight or failed.
        """
        self._key()
        with self.db.session(write=True) as s:
            now = self._clock()
            rows = self._rows(s, keys, lock=True, create=True)
            wait = self._wait(rows.values(), now)
            if not wait and any(len(_pending(self._recent(row, now))) >= 2 * self._free(key)
                                for key, row in rows.items()):
                wait = 1  # too many at once: no lock, just not now
            if not wait:
                for row in rows.values():
                    self._count(row, now)
        self._forget_expired(now)
        return wait

    def failed(self, *keys: str) -> None:
        """The attempt ``begin`` counted was wrong: the ``free``-th failure in the window locks."""
        self._key()
        with self.db.session(write=True) as s:
            now = self._clock()
            for key, row in self._rows(s, keys, lock=True).items():
                times = self._recent(row, now)
                pending = _pending(times)
                if pending:  # this attempt, counted by begin(), is now a failure
                    times[times.index(min(pending))] = -min(pending)
                else:
                    times.append(now)
                row.failures = _text(times)
                extra = len(times) - len(_pending(times)) - self._free(key)  # 0: used the last free one
                if extra >= 0:
                    row.locked_until = max(row.locked_until or 0.0, now + min(self.max_lock, self.base_lock * 2 ** extra))
                    row.expires_at = max(row.expires_at or 0.0, row.locked_until)

    def succeeded(self, clear: str, *uncount: str) -> None:
        """The attempt was right: forget ``clear`` (the email) and take it back from ``uncount`` (the address)."""
        self._key()
        with self.db.session(write=True) as s:
            rows = self._rows(s, (clear, *uncount) if clear else uncount, lock=True)  # one sorted lock order
            if clear and clear in rows:
                s.delete(rows.pop(clear))
            for key, row in rows.items():
                times = _times(row)
                pending = _pending(times)
                if pending:  # the attempt begin() counted was right: it no longer counts
                    times.remove(min(pending))
                    row.failures = _text(times)
                if len(times) - len(_pending(times)) < self._free(key):
                    row.locked_until = 0.0

    def state_of(self, key: str) -> int:
        """Attempts counted for ``key`` in the window, failed or in flight (for tests and operators)."""
        self._key()
        now = self._clock()
        with self.db.session() as s:
            row = self._rows(s, (key,), lock=False).get(key)
            return len(self._recent(row, now)) if row else 0

    # -- rows ------------------------------------------------------------
    def _rows(self, s: Session, keys: tuple[str, ...], *, lock: bool,
              create: bool = False) -> dict[str, SignInFailure]:
        hashes = {self._hash(k): k for k in dict.fromkeys(keys)}
        if not hashes:
            return {}
        q = select(SignInFailure).where(SignInFailure.key_hash.in_(hashes)).order_by(SignInFailure.key_hash)
        if lock:
            q = q.with_for_update()  # PostgreSQL, in key order; SQLite's write transaction is exclusive anyway
        rows: dict[str, SignInFailure] = {}
        for _ in range(3):  # a row may be forgotten (expired) between our insert and our select
            missing = [h for h in hashes if hashes[h] not in rows]
            if create and missing:  # concurrent first attempts of one key: one row, no unique-key error
                ins = pg_insert if s.get_bind().dialect.name == "postgresql" else sqlite_insert
                s.execute(ins(SignInFailure).values(
                    [{"key_hash": h, "failures": "", "locked_until": 0.0,
                      "expires_at": self._clock() + self.window} for h in sorted(missing)]
                ).on_conflict_do_nothing(index_elements=["key_hash"]))
            rows = {hashes[r.key_hash]: r for r in s.scalars(q)}
            if not create or len(rows) == len(hashes):
                break
        return rows

    def _forget_expired(self, now: float) -> None:
        """Delete rows whose window and lock are over, in a transaction of its own, skipping
        rows another attempt holds (PostgreSQL): no lock is waited for while holding one."""
        with self.db.session(write=True) as s:
            if s.get_bind().dialect.name == "postgresql":
                expired = (select(SignInFailure.key_hash).where(SignInFailure.expires_at < now)
                           .with_for_update(skip_locked=True))
                s.execute(delete(SignInFailure).where(SignInFailure.key_hash.in_(expired)))
            else:
                s.execute(delete(SignInFailure).where(SignInFailure.expires_at < now))

    def _recent(self, row: SignInFailure, now: float) -> list[float]:
        return [t for t in _times(row) if now - abs(t) < self.window]

    def _count(self, row: SignInFailure, now: float) -> None:
        row.failures = _text(self._recent(row, now) + [-now])  # negative: begun, not yet known wrong
        row.expires_at = max(now + self.window, row.locked_until or 0.0)

    @staticmethod
    def _wait(rows, now: float) -> int:  # type: ignore[no-untyped-def]
        wait = max((r.locked_until - now for r in rows), default=0.0)
        return int(wait + 0.999) if wait > 0 else 0

    def _hash(self, key: str) -> str:
        return hmac.new(self._key(), key.encode(), hashlib.sha256).hexdigest()

    def _key(self) -> bytes:
        """The installation's HMAC secret: made once (by whichever process is first), then kept in memory.

        Called before an operation opens its own transaction: a nested write
        transaction on SQLite would wait for the outer one.
        """
        if self._secret is None:
            with self.db.session(write=True) as s:
                ins = pg_insert if s.get_bind().dialect.name == "postgresql" else sqlite_insert
                s.execute(ins(Installation).values(key=_SECRET_KEY, value=secrets.token_hex(32))
                          .on_conflict_do_nothing(index_elements=["key"]))
                row = s.get(Installation, _SECRET_KEY)
                assert row is not None
                self._secret = bytes.fromhex(row.value)
        return self._secret


def _times(row: SignInFailure | None) -> list[float]:
    return [float(t) for t in row.failures.split()] if row is not None and row.failures else []


def _pending(times: list[float]) -> list[float]:
    """Attempts begun and not yet known right or wrong (stored negated); the rest are failures."""
    return [t for t in times if t < 0]


def _text(times: list[float]) -> str:
    return " ".join(f"{t:.3f}" for t in times)
