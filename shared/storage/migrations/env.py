"""Alembic environment: migrations run against the URL that
shared.storage.engine.migrate passes in."""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

import shared.storage.tables  # noqa: F401  (registers the tables on the metadata)
from shared.storage.engine import make_engine

config = context.config
target_metadata = SQLModel.metadata


def run_migrations_online() -> None:
    url = config.attributes.get("database_url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no database URL: call shared.storage.engine.migrate(url)")
    engine = make_engine(url)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run_migrations_online()
