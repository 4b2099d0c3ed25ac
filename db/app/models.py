"""Tables of the application database for DAQ run control.

The schema itself is created by the migrations in ``db/app/migrations``
(``db.app.schema.upgrade``), never by ``Base.metadata.create_all``; these
classes must match them (a test compares the two).

Rules the database enforces itself, so that no caller can break them:
one active experiment (a partial unique index), one running run per
experiment (another), run numbers unique per experiment, observable names
unique per experiment, one measurement per run and observable holding
exactly one typed value, and the allowed words for run class, run state,
value type, log outcome and router type.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

RUN_CLASSES = ("Testing", "Production", "Beam", "Pulser", "Junk")
RUN_STATES = ("running", "stopped", "aborted")
VALUE_TYPES = ("integer", "float", "string")
OUTCOMES = ("ok", "failed", "refused")
ROUTER_TYPES = ("ICE", "TCP", "FDT", "ZBUF")

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def one_of(column: str, words: tuple[str, ...]) -> str:
    """SQL for ``column IN ('a', 'b', ...)`` (used by the models and the migrations)."""
    return f"{column} IN ({', '.join(repr(w) for w in words)})"


ONE_VALUE = (
    "(CASE WHEN int_value IS NULL THEN 0 ELSE 1 END)"
    " + (CASE WHEN float_value IS NULL THEN 0 ELSE 1 END)"
    " + (CASE WHEN str_value IS NULL THEN 0 ELSE 1 END) = 1"
)


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend (sqlite stores no zone; we put it back)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value.isoformat()} given; DCS stores aware UTC times")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Experiment(Base):
    """An experiment: names the data directory and numbers its runs. One is active at a time."""

    __tablename__ = "experiments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    is_active: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)

    runs: Mapped[list[Run]] = relationship(back_populates="experiment")
    observables: Mapped[list[Observable]] = relationship(back_populates="experiment")

    __table_args__ = (
        Index(
            "uq_experiments_one_active", "is_active", unique=True,
            sqlite_where=text("is_active"), postgresql_where=text("is_active"),
        ),
    )  # fmt: skip


class Run(Base):
    """Run metadata: numbered from 0 per experiment; config_sets maps ECC server to its config set."""

    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.id", ondelete="RESTRICT"))
    number: Mapped[int] = mapped_column(Integer)
    title: Mapped[str] = mapped_column(Text, default="")
    run_class: Mapped[str] = mapped_column(String(20))
    start_time: Mapped[datetime] = mapped_column(UtcDateTime)
    stop_time: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # {"ECC0": {"describe": "cobo0", "prepare": "experiment", "configure": "experiment"}, ...}
    config_sets: Mapped[dict[str, dict[str, str]]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(20))

    experiment: Mapped[Experiment] = relationship(back_populates="runs")
    measurements: Mapped[list[Measurement]] = relationship(back_populates="run", passive_deletes=True)

    __table_args__ = (
        UniqueConstraint("experiment_id", "number"),
        CheckConstraint("number >= 0", name="number_not_negative"),
        CheckConstraint(one_of("run_class", RUN_CLASSES), name="run_class"),
        CheckConstraint(one_of("state", RUN_STATES), name="state"),
        Index(
            "uq_runs_one_running", "experiment_id", unique=True,
            sqlite_where=text("state = 'running'"), postgresql_where=text("state = 'running'"),
        ),
    )  # fmt: skip


class Observable(Base):
    """A run-sheet field of an experiment: a quantity measured once per run."""

    __tablename__ = "observables"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.id", ondelete="RESTRICT"))
    name: Mapped[str] = mapped_column(String(200))
    value_type: Mapped[str] = mapped_column(String(10))
    units: Mapped[str] = mapped_column(String(50), default="")
    comment: Mapped[str] = mapped_column(Text, default="")
    display_order: Mapped[int] = mapped_column(Integer, default=0)

    experiment: Mapped[Experiment] = relationship(back_populates="observables")

    __table_args__ = (
        UniqueConstraint("experiment_id", "name"),
        CheckConstraint(one_of("value_type", VALUE_TYPES), name="value_type"),
    )


class Measurement(Base):
    """The value of one observable in one run, in the column of the observable's type."""

    __tablename__ = "measurements"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    observable_id: Mapped[int] = mapped_column(ForeignKey("observables.id", ondelete="RESTRICT"))
    int_value: Mapped[int | None] = mapped_column(BigInteger)
    float_value: Mapped[float | None] = mapped_column(Float(precision=53))
    str_value: Mapped[str | None] = mapped_column(Text)

    run: Mapped[Run] = relationship(back_populates="measurements")
    observable: Mapped[Observable] = relationship()

    __table_args__ = (
        UniqueConstraint("run_id", "observable_id"),
        CheckConstraint(ONE_VALUE, name="one_value"),
    )


class OperatorLogEntry(Base):
    """Who did what to which thing, and how it went."""

    __tablename__ = "operator_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    time: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    user: Mapped[str] = mapped_column(String(100))
    host: Mapped[str] = mapped_column(String(255))
    action: Mapped[str] = mapped_column(String(100))
    target: Mapped[str] = mapped_column(String(255))
    outcome: Mapped[str] = mapped_column(String(10))
    detail: Mapped[str] = mapped_column(Text, default="")

    __table_args__ = (CheckConstraint(one_of("outcome", OUTCOMES), name="outcome"),)


class EccServer(Base):
    """An ECC server (getEccSoapServer) the DAQ talks to."""

    __tablename__ = "ecc_servers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    host: Mapped[str] = mapped_column(String(255))
    port: Mapped[int] = mapped_column(Integer)

    data_sources: Mapped[list[DataSource]] = relationship(back_populates="ecc_server")

    __table_args__ = (CheckConstraint("port BETWEEN 1 AND 65535", name="port"),)


class DataSource(Base):
    """A CoBo or the MuTAnT: the ECC server that controls it and the data router its data goes to."""

    __tablename__ = "data_sources"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    ecc_server_id: Mapped[int] = mapped_column(ForeignKey("ecc_servers.id", ondelete="RESTRICT"))
    router_name: Mapped[str] = mapped_column(String(100), unique=True)
    router_ip: Mapped[str] = mapped_column(String(255))
    router_port: Mapped[int] = mapped_column(Integer)
    router_type: Mapped[str] = mapped_column(String(10))
    is_mutant: Mapped[bool] = mapped_column(Boolean, default=False)

    ecc_server: Mapped[EccServer] = relationship(back_populates="data_sources")

    __table_args__ = (
        CheckConstraint("router_port BETWEEN 1 AND 65535", name="router_port"),
        CheckConstraint(one_of("router_type", ROUTER_TYPES), name="router_type"),
    )
