"""Engine and session handling for SQLite (embedded) and PostgreSQL (production).

SQLite runs in WAL mode with ``synchronous=FULL`` so a committed row survives
power loss, and write transactions start with ``BEGIN IMMEDIATE`` so that
concurrent writers never fail with "database is locked" when a read lock
would have to be upgraded. Writers also queue on :class:`_WriterLock`
(threads and processes) rather than in SQLite's sleeping busy handler.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
from typing import Iterator

from sqlalchemy import create_engine, event, make_url
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker


class Database:
    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            _private_sqlite_files(make_url(url).database)
            self.engine: Engine = create_engine(
                url,
                echo=echo,
                connect_args={"check_same_thread": False, "timeout": 60},
                pool_size=16,
                max_overflow=16,
            )
            _configure_sqlite(self.engine)
        else:
            self.engine = create_engine(
                url, echo=echo, pool_size=10, max_overflow=20, pool_pre_ping=True
            )
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._writer = _WriterLock(self.engine.url.database) if self.is_sqlite else None

    @contextlib.contextmanager
    def session(self, *, write: bool = False) -> Iterator[Session]:
        """One transaction: committed when the block ends, rolled back on error."""
        if write and self._writer is not None:
            with self._writer:
                yield from self._transaction(write=True)
        else:
            yield from self._transaction(write=write)

    def _transaction(self, *, write: bool) -> Iterator[Session]:
        session = self._sessions()
        if write and self.is_sqlite:
            session.connection(execution_options={"sqlite_write": True})
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def dispose(self) -> None:
        self.engine.dispose()
        if self._writer is not None:
            self._writer.close()


#: as long as SQLite's own busy timeout: a writer that cannot get its turn fails cleanly
WRITER_WAIT_SECONDS = 60.0


class WriterBusy(RuntimeError):
    """Another writer held the index for longer than :data:`WRITER_WAIT_SECONDS`."""


def _flock_with_deadline(fd: int, seconds: float) -> None:
    """``flock(LOCK_EX)`` that gives up after ``seconds``. Another process's turn
    rarely lasts more than a commit, so the waits start at 0.2 ms."""
    deadline = time.monotonic() + seconds
    pause = 0.0002
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise WriterBusy(f"no turn to write within {seconds:.0f} s (another process holds the index)") from None
            time.sleep(pause)
            pause = min(pause * 2, 0.001)


class _WriterLock:
    """Queues SQLite writers of this process (a lock) and of other processes
    sharing the file (``flock`` on a lock file beside it).

    SQLite lets one writer in at a time; the others wait in its busy handler,
    which sleeps 1, 2, 5, 10 ... ms between tries. Under concurrent ingest
    those sleeps, not the work, set the pace. Waiting on a lock instead hands
    the turn over as soon as the writer commits.
    """

    def __init__(self, database: str | None) -> None:
        self._thread_lock = threading.RLock()
        self._depth = 0
        self._fd: int | None = None
        self._path = (f"{database}.writer-lock"
                      if database and database != ":memory:" and not database.startswith("file:") else None)

    def _lock_file(self) -> int | None:
        if self._fd is None and self._path is not None:
            try:
                self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError:
                return None  # the database cannot be written there either: let SQLite say so
        return self._fd

    def close(self) -> None:
        with self._thread_lock:
            if self._fd is not None and self._depth == 0:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> None:
        if not self._thread_lock.acquire(timeout=WRITER_WAIT_SECONDS):
            raise WriterBusy(f"no turn to write within {WRITER_WAIT_SECONDS:.0f} s (another writer holds the index)")
        self._depth += 1
        if self._depth == 1 and (fd := self._lock_file()) is not None:
            try:
                _flock_with_deadline(fd, WRITER_WAIT_SECONDS)
            except BaseException:
                self._depth -= 1
                self._thread_lock.release()
                raise

    def __exit__(self, *exc: object) -> None:
        self._depth -= 1
        if self._depth == 0 and self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._thread_lock.release()


def _private_sqlite_files(database: str | None) -> None:
    """The index file (patient data, password hashes, the throttle's secret) is 0600 before SQLite
    opens it: SQLite gives its -wal, -shm and -journal files the database file's mode. An existing
    index (and its side files) that others can read is made private too."""
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    try:
        os.close(os.open(database, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
    except OSError:
        return  # cannot be created or written here: let SQLite say so
    for path in (database, f"{database}-wal", f"{database}-shm", f"{database}-journal", f"{database}.writer-lock"):
        try:
            if os.stat(path).st_mode & 0o077:
                os.chmod(path, 0o600)
        except OSError:
            pass  # absent, or not ours to change


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):  # pragma: no cover - trivial
        # Let SQLAlchemy, not the driver, emit BEGIN (see "begin" below).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=60000")
        cur.execute("PRAGMA secure_delete=ON")  # erased values do not linger in free pages
        cur.execute("PRAGMA case_sensitive_like=ON")  # LIKE as on PostgreSQL (QIDO wildcards)
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):  # pragma: no cover - trivial
        if conn.get_execution_options().get("sqlite_write"):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")
