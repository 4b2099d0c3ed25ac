"""Where the application database is, how to connect to it, and how its schema is brought up to date.

The schema is owned by the Alembic migrations shipped inside this package
(``db/app/migrations``), so an installed DCS can migrate a database with no
``alembic.ini`` and no source tree::

    from db.app.schema import upgrade, default_url
    upgrade(default_url("var"))                       # sqlite file var/dcs.db
    upgrade("postgresql+psycopg://dcs@dbhost/dcs")    # or PostgreSQL by URL

Connections are made by :func:`make_engine`, which every user of the
database (the store, the migrations, tests) goes through, so all of them get
the same sqlite settings: foreign keys on, a busy timeout, and write-locking
transactions (``BEGIN IMMEDIATE``) so that concurrent writers queue instead
of failing with "database is locked".
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
DB_FILE = "dcs.db"
URL_VARIABLE = "DCS_DB_URL"
SQLITE_BUSY_TIMEOUT_S = 30.0


class StoreError(Exception):
    """Base of every application-database error; the message names the thing, the operation and the cause."""


class SchemaError(StoreError):
    """The database cannot be reached, its driver is missing, or its schema is not the one this DCS needs."""


def default_url(state_dir: Path | str = "var") -> str:
    """The embedded default: the sqlite file ``dcs.db`` in the state directory (absolute path)."""
    return f"sqlite:///{Path(state_dir).resolve() / DB_FILE}"


def database_url(state_dir: Path | str = "var", environ: Mapping[str, str] = os.environ) -> str:
    """``DCS_DB_URL`` when set (e.g. ``postgresql+psycopg://dcs@dbhost/dcs``), else :func:`default_url`."""
    return environ.get(URL_VARIABLE) or default_url(state_dir)


def safe_url(url: str | Engine) -> str:
    """The URL with any password hidden, for messages and logs."""
    if isinstance(url, Engine):
        return url.url.render_as_string(hide_password=True)
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparsable URL>"


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An Engine for ``url`` with DCS's settings.

    ``postgresql://`` without a driver means psycopg 3 (``postgresql+psycopg://``).
    For a sqlite file the parent directory is created, foreign keys are
    enforced and every transaction starts with ``BEGIN IMMEDIATE``.
    """
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise SchemaError(f"application database URL {url!r} is not a database URL: {exc}") from exc
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed, **kwargs)
    if parsed.get_backend_name() == "postgresql":
        kwargs.setdefault("pool_pre_ping", True)
    try:
        return create_engine(parsed, **kwargs)
    except ModuleNotFoundError as exc:
        hint = " (pip install 'psycopg[binary]')" if "psycopg" in str(exc) else ""
        raise SchemaError(f"application database {safe_url(url)}: driver not installed: {exc}{hint}") from exc


def _sqlite_engine(parsed: Any, **kwargs: Any) -> Engine:
    database = parsed.database
    if not database or database == ":memory:":
        raise SchemaError("the application database needs a sqlite file, not an in-memory database")
    Path(database).parent.mkdir(parents=True, exist_ok=True)
    connect_args = {"timeout": SQLITE_BUSY_TIMEOUT_S, **kwargs.pop("connect_args", {})}
    engine = create_engine(parsed, connect_args=connect_args, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # Take the write lock up front: two deferred transactions that both
        # read and then write would deadlock, and sqlite fails one at once.
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def alembic_config(url: str | Engine | None = None) -> Config:
    """An Alembic configuration pointing at the migrations inside this package.

    Use it for any Alembic command, e.g. writing the next migration::

        from alembic import command
        command.revision(alembic_config(), "add alarm log")
    """
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if isinstance(url, Engine):
        config.attributes["engine"] = url
    elif url is not None:
        config.attributes["url"] = url
    return config


def head_revision() -> str:
    """The newest migration shipped with this DCS."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, f"no migrations in {MIGRATIONS}"
    return head


def current_revision(url: str | Engine) -> str | None:
    """The migration the database is at (``None`` for an empty database)."""
    engine = url if isinstance(url, Engine) else make_engine(url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    except DBAPIError as exc:
        raise SchemaError(f"application database {safe_url(url)}: cannot read the schema version: {exc.orig}") from exc
    finally:
        if engine is not url:
            engine.dispose()


def upgrade(url: str | Engine, revision: str = "head") -> None:
    """``alembic upgrade head`` on the database at ``url``; a no-op when it is already there.

    Safe to call from several processes at once: on sqlite the migration
    transaction holds the write lock, on PostgreSQL an advisory lock.
    """
    _run(url, "upgrade", lambda config: command.upgrade(config, revision))


def downgrade(url: str | Engine, revision: str = "base") -> None:
    """``alembic downgrade``; ``base`` drops every application table."""
    _run(url, "downgrade", lambda config: command.downgrade(config, revision))


def check_schema(url: str | Engine) -> None:
    """Raise :class:`SchemaError` unless the database is at the newest migration."""
    current, head = current_revision(url), head_revision()
    if current != head:
        raise SchemaError(
            f"application database {safe_url(url)} is at schema revision {current or 'none (empty)'}, "
            f'this DCS needs {head}: migrate it with `python -c "from db.app import upgrade; upgrade(URL)"`'
        )


def _run(url: str | Engine, what: str, action: Any) -> None:
    engine = url if isinstance(url, Engine) else make_engine(url)
    try:
        action(alembic_config(engine))
    except DBAPIError as exc:
        raise SchemaError(f"application database {safe_url(url)}: {what} failed: {exc.orig}") from exc
    finally:
        if engine is not url:
            engine.dispose()
