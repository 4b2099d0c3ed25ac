"""Alembic environment of the application database.

Run through :mod:`db.app.schema` (``upgrade``, ``downgrade``,
``alembic_config``), which passes the Engine or URL in
``config.attributes``; there is no ``alembic.ini``.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, Engine, text

from db.app.models import Base
from db.app.schema import make_engine

# Any constant: held for the length of a migration so that two processes
# upgrading the same PostgreSQL database at once run one after the other.
POSTGRES_LOCK_KEY = 0x44435301  # "DCS" 1


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        # sqlite has transactional DDL; Alembic assumes not unless told.
        transactional_ddl=True,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )


def run_online() -> None:
    attributes = context.config.attributes
    engine: Engine = attributes.get("engine") or make_engine(attributes["url"])
    try:
        with engine.connect() as connection:
            _configure(connection)
            with context.begin_transaction():
                if connection.dialect.name == "postgresql":
                    connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": POSTGRES_LOCK_KEY})
                context.run_migrations()
    finally:
        if "engine" not in attributes:
            engine.dispose()


def run_offline() -> None:
    """``alembic upgrade --sql``: print the SQL (for a DBA to review or apply)."""
    attributes = context.config.attributes
    url = attributes.get("url") or attributes["engine"].url
    context.configure(url=url, target_metadata=Base.metadata, literal_binds=True, transactional_ddl=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
