"""Alembic environment: runs on the connection gateway.db.migrate hands over."""

from alembic import context

import consent.models  # noqa: F401  (registers the consent tables)
import gateway.db.models  # noqa: F401
from gateway.db.base import Base

target_metadata = Base.metadata
connection = context.config.attributes.get("connection")

if connection is None:  # `alembic` command line: use sqlalchemy.url from the ini
    from sqlalchemy import create_engine

    engine = create_engine(context.config.get_main_option("sqlalchemy.url"))
    connection = engine.connect()

context.configure(
    connection=connection,
    target_metadata=target_metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
