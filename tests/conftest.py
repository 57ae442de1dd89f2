"""Shared fixtures: the two backend combinations and running gateways.

- ``sqlite``: SQLite index + filesystem objects (the embedded default);
- ``postgres``: the PostgreSQL server at 127.0.0.1:5432 (a fresh database per
  run, dropped afterwards) + an S3 endpoint (moto's standalone server, or
  ``DICOMGATE_TEST_S3_ENDPOINT``).
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path
from typing import Callable, Iterator

import pytest

from tests.support.gateway import Backend, Gateway
from tests.support.s3 import moto_s3_server

PG_ADMIN_URL = os.environ.get("DICOMGATE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def pytest_configure(config: pytest.Config) -> None:
    missing = [tool for tool in ("storescu", "echoscu") if shutil.which(tool) is None]
    if missing:
        config.issue_config_time_warning(
            pytest.PytestConfigWarning(f"DCMTK tools missing ({', '.join(missing)}): apt-get install dcmtk"), 2
        )


@pytest.fixture(scope="session")
def s3_server() -> Iterator[dict]:
    with moto_s3_server() as info:
        yield info


@pytest.fixture(scope="session")
def pg_database() -> Iterator[Callable[[], str]]:
    """A factory of fresh PostgreSQL databases (one per gateway), all dropped at the end."""
    import psycopg

    try:
        psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5).close()
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN_URL}: {exc}. Start it (see .ci/run).")
    made: list[str] = []
    base = PG_ADMIN_URL.rsplit("/", 1)[0]

    def new() -> str:
        name = f"dicomgate_test_{os.getpid()}_{secrets.token_hex(3)}"
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        made.append(name)
        return f"{base}/{name}"

    yield new
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        for name in made:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def make_backend(kind: str, root: Path, request: pytest.FixtureRequest) -> Backend:
    if kind == "sqlite":
        return Backend("sqlite", root)
    s3 = request.getfixturevalue("s3_server")
    db = request.getfixturevalue("pg_database")()
    bucket = "dg-" + secrets.token_hex(6)
    env = {
        "DICOMGATE_S3_ENDPOINT": s3["endpoint"],
        "DICOMGATE_S3_ACCESS_KEY": s3["access_key"],
        "DICOMGATE_S3_SECRET_KEY": s3["secret_key"],
        "DICOMGATE_S3_REGION": s3["region"],
        # in the env too, so CLI commands act on the same store as serve
        "DICOMGATE_OBJECT_STORE": f"s3://{bucket}/objects",
    }
    return Backend("postgres", root, database_url=db, object_store=f"s3://{bucket}/objects", env=env)


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def gateway(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A gateway shared by the tests of a session, once per backend combination."""
    root = tmp_path_factory.mktemp(f"gw-{request.param}")
    gw = Gateway(make_backend(request.param, root, request)).start()
    yield gw
    gw.close()
    rc = gw.stop()
    assert rc == 0, f"serve did not exit cleanly on SIGTERM (rc={rc}):\n{gw.log()[-3000:]}"


@pytest.fixture(scope="session")
def embedded_gateway(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Gateway]:
    """One gateway on the embedded default, for tests whose subject is not the backend."""
    gw = Gateway(make_backend("sqlite", tmp_path_factory.mktemp("gw-embedded"), request)).start()
    yield gw
    gw.close()
    gw.stop()
