"""The DCS application database: experiments, runs, run sheets, operator log and DAQ setup.

SQLAlchemy models (:mod:`db.app.models`), Alembic migrations shipped in the
package (:mod:`db.app.schema`), and the service API device servers and the
CLI use (:class:`db.app.store.RunStore`). sqlite file ``var/dcs.db`` by
default; PostgreSQL by URL (``postgresql+psycopg://user@host/db``, or
``DCS_DB_URL``). See docs/app-database.md.
"""

from db.app.schema import (
    SchemaError,
    StoreError,
    check_schema,
    current_revision,
    database_url,
    default_url,
    downgrade,
    head_revision,
    make_engine,
    upgrade,
)
from db.app.store import (
    ConflictError,
    DaqSetup,
    DataSource,
    EccServer,
    Experiment,
    InvalidValueError,
    LogEntry,
    Measurement,
    NoActiveExperimentError,
    NotFoundError,
    Observable,
    RefusedError,
    Run,
    RunStore,
    SetupReplacement,
    WrongTypeError,
    coerce_value,
    plan_easy_setup,
)

__all__ = [
    "ConflictError", "DaqSetup", "DataSource", "EccServer", "Experiment", "InvalidValueError", "LogEntry",
    "Measurement", "NoActiveExperimentError", "NotFoundError", "Observable", "RefusedError", "Run", "RunStore",
    "SchemaError", "SetupReplacement", "StoreError", "WrongTypeError", "check_schema", "coerce_value",
    "current_revision", "database_url", "default_url", "downgrade", "head_revision", "make_engine",
    "plan_easy_setup", "upgrade",
]  # fmt: skip
