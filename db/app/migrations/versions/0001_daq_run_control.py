"""DAQ run control: experiments, runs, observables, measurements, operator log, DAQ setup.

Revision ID: 0001
Revises:
Create Date: 2025-01-01

Written by hand to match db/app/models.py (tests/db/test_app_store.py
checks that Alembic finds no difference between the two).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies: a migration must not change when the models do later.
RUN_CLASSES = ("Testing", "Production", "Beam", "Pulser", "Junk")
RUN_STATES = ("running", "stopped", "aborted")
VALUE_TYPES = ("integer", "float", "string")
OUTCOMES = ("ok", "failed", "refused")
ROUTER_TYPES = ("ICE", "TCP", "FDT", "ZBUF")
ONE_VALUE = (
    "(CASE WHEN int_value IS NULL THEN 0 ELSE 1 END)"
    " + (CASE WHEN float_value IS NULL THEN 0 ELSE 1 END)"
    " + (CASE WHEN str_value IS NULL THEN 0 ELSE 1 END) = 1"
)


def one_of(column: str, words: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(w) for w in words)})"


def utc() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "experiments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("created_at", utc(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_experiments"),
        sa.UniqueConstraint("name", name="uq_experiments_name"),
    )
    op.create_index(
        "uq_experiments_one_active", "experiments", ["is_active"], unique=True,
        sqlite_where=sa.text("is_active"), postgresql_where=sa.text("is_active"),
    )  # fmt: skip

    op.create_table(
        "runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("experiment_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("run_class", sa.String(20), nullable=False),
        sa.Column("start_time", utc(), nullable=False),
        sa.Column("stop_time", utc(), nullable=True),
        sa.Column("config_sets", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_runs"),
        sa.ForeignKeyConstraint(
            ["experiment_id"], ["experiments.id"], name="fk_runs_experiment_id_experiments", ondelete="RESTRICT"
        ),
        sa.UniqueConstraint("experiment_id", "number", name="uq_runs_experiment_id_number"),
        sa.CheckConstraint("number >= 0", name="ck_runs_number_not_negative"),
        sa.CheckConstraint(one_of("run_class", RUN_CLASSES), name="ck_runs_run_class"),
        sa.CheckConstraint(one_of("state", RUN_STATES), name="ck_runs_state"),
    )
    op.create_index(
        "uq_runs_one_running", "runs", ["experiment_id"], unique=True,
        sqlite_where=sa.text("state = 'running'"), postgresql_where=sa.text("state = 'running'"),
    )  # fmt: skip

    op.create_table(
        "observables",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("experiment_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("value_type", sa.String(10), nullable=False),
        sa.Column("units", sa.String(50), nullable=False),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("display_order", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_observables"),
        sa.ForeignKeyConstraint(
            ["experiment_id"], ["experiments.id"], name="fk_observables_experiment_id_experiments", ondelete="RESTRICT"
        ),
        sa.UniqueConstraint("experiment_id", "name", name="uq_observables_experiment_id_name"),
        sa.CheckConstraint(one_of("value_type", VALUE_TYPES), name="ck_observables_value_type"),
    )

    op.create_table(
        "measurements",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("observable_id", sa.Integer(), nullable=False),
        sa.Column("int_value", sa.BigInteger(), nullable=True),
        sa.Column("float_value", sa.Float(precision=53), nullable=True),
        sa.Column("str_value", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_measurements"),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name="fk_measurements_run_id_runs", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(
            ["observable_id"], ["observables.id"], name="fk_measurements_observable_id_observables", ondelete="RESTRICT"
        ),
        sa.UniqueConstraint("run_id", "observable_id", name="uq_measurements_run_id_observable_id"),
        sa.CheckConstraint(ONE_VALUE, name="ck_measurements_one_value"),
    )

    op.create_table(
        "operator_log",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("time", utc(), nullable=False),
        sa.Column("user", sa.String(100), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("action", sa.String(100), nullable=False),
        sa.Column("target", sa.String(255), nullable=False),
        sa.Column("outcome", sa.String(10), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_operator_log"),
        sa.CheckConstraint(one_of("outcome", OUTCOMES), name="ck_operator_log_outcome"),
    )
    op.create_index("ix_operator_log_time", "operator_log", ["time"])

    op.create_table(
        "ecc_servers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_ecc_servers"),
        sa.UniqueConstraint("name", name="uq_ecc_servers_name"),
        sa.CheckConstraint("port BETWEEN 1 AND 65535", name="ck_ecc_servers_port"),
    )

    op.create_table(
        "data_sources",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("ecc_server_id", sa.Integer(), nullable=False),
        sa.Column("router_name", sa.String(100), nullable=False),
        sa.Column("router_ip", sa.String(255), nullable=False),
        sa.Column("router_port", sa.Integer(), nullable=False),
        sa.Column("router_type", sa.String(10), nullable=False),
        sa.Column("is_mutant", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_data_sources"),
        sa.ForeignKeyConstraint(
            ["ecc_server_id"], ["ecc_servers.id"], name="fk_data_sources_ecc_server_id_ecc_servers", ondelete="RESTRICT"
        ),
        sa.UniqueConstraint("name", name="uq_data_sources_name"),
        sa.UniqueConstraint("router_name", name="uq_data_sources_router_name"),
        sa.CheckConstraint("router_port BETWEEN 1 AND 65535", name="ck_data_sources_router_port"),
        sa.CheckConstraint(one_of("router_type", ROUTER_TYPES), name="ck_data_sources_router_type"),
    )


def downgrade() -> None:
    op.drop_table("data_sources")
    op.drop_table("ecc_servers")
    op.drop_index("ix_operator_log_time", table_name="operator_log")
    op.drop_table("operator_log")
    op.drop_table("measurements")
    op.drop_table("observables")
    op.drop_index("uq_runs_one_running", table_name="runs")
    op.drop_table("runs")
    op.drop_index("uq_experiments_one_active", table_name="experiments")
    op.drop_table("experiments")
