"""Database engine and schema migrations.

SQLite by default, PostgreSQL in production, any SQLAlchemy URL in principle.
SQLite runs in WAL mode with synchronous=FULL so that an acknowledged (committed)
event survives a crash, and with a busy timeout so that the server, the worker
and the CLI can share the file; within one process its writes take turns first come,
first served (shared/storage/write_gate.py). Every PostgreSQL session pins
synchronous_commit=on, whatever the server, database or role default says: Feedback is
acknowledged after its commit, so a commit must be durable when it returns.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import Engine, make_url
from sqlmodel import Session, create_engine

from shared.config import Settings
from shared.storage import write_gate
from shared.wire.errors import DatabaseUnavailable

IN_CHUNK = 500
"""Bound on the bind parameters of one ``IN (...)`` query (SQLite allows 999)."""

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

BUSY_TIMEOUT_S = 30
"""How long a SQLite write waits for the database's write lock before it fails (and how
long it waits for its turn in the process's write gate, shared/storage/write_gate.py)."""


def engine_for(settings: Settings, *, background_checkpoints: bool = False) -> Engine:
    """The engine a recserve process uses: settings' URL, with its connect timeout (and on
    PostgreSQL its statement timeout), so a stalled database fails calls instead of
    hanging them. ``background_checkpoints``: see make_engine."""
    return make_engine(
        settings.db_url,
        connect_timeout_s=settings.db_connect_timeout_s,
        statement_timeout_s=settings.db_statement_timeout_s,
        background_checkpoints=background_checkpoints,
    )


def make_engine(
    url: str,
    *,
    connect_timeout_s: float = 10.0,
    statement_timeout_s: float | None = None,
    background_checkpoints: bool = False,
    **kwargs: Any,
) -> Engine:
    """An engine for ``url``; creates the parent folder of a SQLite file.
    ``background_checkpoints`` (SQLite): its connections never checkpoint the WAL in a
    commit; the caller runs the checkpoints (server/checkpoints.py)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        kwargs.setdefault("connect_args", {"check_same_thread": False, "timeout": BUSY_TIMEOUT_S})
        engine = create_engine(url, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        write_gate.install(engine, BUSY_TIMEOUT_S)
        if background_checkpoints:
            event.listen(engine, "connect", _no_automatic_checkpoints)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    if parsed.get_backend_name() == "postgresql":
        connect_args: dict[str, Any] = {"connect_timeout": max(1, round(connect_timeout_s))}
        options = ["-c synchronous_commit=on"]  # durable commits: see the module docstring
        if statement_timeout_s:
            options.append(f"-c statement_timeout={round(statement_timeout_s * 1000)}")
        connect_args["options"] = " ".join(options)
        kwargs.setdefault("connect_args", connect_args)
        kwargs.setdefault("pool_timeout", connect_timeout_s)
    return create_engine(url, **kwargs)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_S * 1000}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _no_automatic_checkpoints(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.execute("PRAGMA wal_autocheckpoint=0")


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


@contextmanager
def unavailable_on_db_error() -> Iterator[None]:
    """Turns "the database cannot be reached" (connection refused or lost, a timeout,
    a full disk) into DatabaseUnavailable, with a message that carries no SQL."""
    from sqlalchemy import exc as sa_exc

    try:
        yield
    except (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError) as exc:
        raise DatabaseUnavailable("the database is unavailable right now; retry the call") from exc
    except sa_exc.DBAPIError as exc:
        if exc.connection_invalidated:
            raise DatabaseUnavailable("the database connection was lost; retry the call") from exc
        raise


def migrate(url: str) -> None:
    """Bring the database at ``url`` to the newest schema (alembic upgrade head)."""
    from alembic import command
    from alembic.config import Config

    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["database_url"] = url
    command.upgrade(config, "head")


def checkpoint_wal(engine: Engine) -> tuple[int, int, int]:
    """One PASSIVE SQLite WAL checkpoint: (busy, frames in the log, frames checkpointed)."""
    with engine.connect() as connection:
        row = connection.execute(text("PRAGMA wal_checkpoint(PASSIVE)")).one()
    return int(row[0]), int(row[1]), int(row[2])


def _quoted(name: str) -> str:
    if not name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"database name must be letters, digits, '_' or '-', got {name!r}")
    return f'"{name}"'


def ensure_database(url: str) -> None:
    """Creates the PostgreSQL database named in ``url`` if it does not exist (nothing for
    SQLite, whose file is created on first use)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql" or not parsed.database:
        return
    admin = create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            exists = conn.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": parsed.database}
            ).first()
            if not exists:
                conn.execute(text(f"CREATE DATABASE {_quoted(parsed.database)}"))
    finally:
        admin.dispose()


def drop_databases(admin_url: str, names: list[str]) -> None:
    """Drops PostgreSQL databases (closing their connections) through ``admin_url``."""
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            for name in names:
                conn.execute(text(f"DROP DATABASE IF EXISTS {_quoted(name)} WITH (FORCE)"))
    finally:
        admin.dispose()


def server_setting(url: str, name: str) -> str:
    """A PostgreSQL setting as the server reports it (SHOW name)."""
    if not name.replace("_", "").isalnum():
        raise ValueError(f"setting name must be letters, digits or '_', got {name!r}")
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return str(conn.execute(text(f"SHOW {name}")).scalar())
    finally:
        engine.dispose()
