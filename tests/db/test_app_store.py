"""The application database for DAQ run control, on sqlite and on PostgreSQL.

Every test runs twice: on a fresh sqlite file, and on a database created for
this test run on the PostgreSQL server at DCS_TEST_POSTGRES_URL (default
``postgresql+psycopg://postgres@127.0.0.1:5432/postgres``, the maintenance
database; ``dcs_test_<random>`` is created from it and dropped at the end).
The PostgreSQL half is skipped, with the reason, when the server or psycopg
is missing.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from db.app import (
    DaqSetup,
    DataSource,
    EccServer,
    InvalidValueError,
    NoActiveExperimentError,
    NotFoundError,
    RefusedError,
    RunStore,
    SchemaError,
    WrongTypeError,
    current_revision,
    default_url,
    downgrade,
    head_revision,
    make_engine,
    plan_easy_setup,
    upgrade,
)
from db.app import store as store_module
from db.app.models import Base

POSTGRES_ADMIN_URL = os.environ.get("DCS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
TABLES = {"experiments", "runs", "observables", "measurements", "operator_log", "ecc_servers", "data_sources"}
THREADS = 8


# --- databases ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """URL of a database created for this test run (dropped afterwards), or skip."""
    admin = make_url(POSTGRES_ADMIN_URL)
    where = f"{admin.host}:{admin.port or 5432}"
    try:
        import psycopg  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"psycopg not installed ({exc}); pip install 'psycopg[binary]' to test on PostgreSQL")
    engine = create_engine(admin, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
    try:
        connection = engine.connect()
    except OperationalError as exc:
        engine.dispose()
        pytest.skip(f"PostgreSQL not reachable at {where}: {str(exc.orig).strip().splitlines()[0]}")
    name = f"dcs_test_{secrets.token_hex(6)}"
    connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield admin.set(database=name).render_as_string(hide_password=False)
    finally:
        connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        connection.close()
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path) -> str:
    """An empty database."""
    if request.param == "sqlite":
        return default_url(tmp_path)
    url: str = request.getfixturevalue("postgres_database")
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.exec_driver_sql("DROP SCHEMA public CASCADE")
        connection.exec_driver_sql("CREATE SCHEMA public")
    engine.dispose()
    return url


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = datetime(2024, 5, 1, 20, 0, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(db_url: str, clock: Clock) -> Iterator[RunStore]:
    with RunStore.open(db_url, clock=clock) as opened:
        yield opened


@pytest.fixture
def experiment(store: RunStore) -> str:
    store.create_experiment("e20009")
    store.activate_experiment("e20009")
    return "e20009"


def run_threads(target: Callable[[int], object], count: int = THREADS, timeout: float = 30.0) -> list[object]:
    """Run ``target(i)`` in ``count`` threads at once; return each result or exception, in thread order."""
    results: list[object] = [None] * count
    barrier = threading.Barrier(count)

    def body(i: int) -> None:
        barrier.wait(timeout)
        try:
            results[i] = target(i)
        except Exception as exc:  # collected and checked by the test
            results[i] = exc

    threads = [threading.Thread(target=body, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
        assert not thread.is_alive(), f"a thread did not finish within {timeout} s"
    return results


# --- schema -------------------------------------------------------------------------------------------------


def test_migrations_create_the_schema_from_empty_and_upgrade_twice_is_a_no_op(db_url: str) -> None:
    assert current_revision(db_url) is None
    upgrade(db_url)
    assert current_revision(db_url) == head_revision() == "0001"
    engine = make_engine(db_url)
    try:
        assert TABLES <= set(inspect(engine).get_table_names())
        with RunStore(engine) as store:
            store.create_experiment("kept")
        upgrade(db_url)
        assert current_revision(db_url) == "0001"
        assert [e.name for e in RunStore(engine).experiments()] == ["kept"]
        with engine.connect() as connection:  # the hand-written migration matches the models
            assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    finally:
        engine.dispose()
    downgrade(db_url)
    engine = make_engine(db_url)
    assert not TABLES & set(inspect(engine).get_table_names())
    engine.dispose()


def test_open_without_migrating_refuses_an_empty_database(db_url: str) -> None:
    with pytest.raises(SchemaError, match=r"schema revision none \(empty\), this DCS needs 0001"):
        RunStore.open(db_url, migrate=False)
    upgrade(db_url)
    RunStore.open(db_url, migrate=False).close()


def test_default_url_is_a_sqlite_file_in_the_state_directory(tmp_path) -> None:
    assert default_url(tmp_path / "var") == f"sqlite:///{tmp_path / 'var' / 'dcs.db'}"


# --- experiments --------------------------------------------------------------------------------------------


def test_one_active_experiment(store: RunStore, db_url: str) -> None:
    assert store.active_experiment() is None
    store.create_experiment("alpha")
    store.create_experiment("beta run 2")
    assert store.active_experiment() is None
    store.activate_experiment("alpha")
    store.activate_experiment("beta run 2")
    assert store.active_experiment().name == "beta run 2"
    assert [(e.name, e.is_active) for e in store.experiments()] == [("alpha", False), ("beta run 2", True)]
    # The database itself refuses a second active experiment.
    with pytest.raises(IntegrityError), store.engine.begin() as connection:
        connection.execute(text("UPDATE experiments SET is_active = :yes"), {"yes": True})
    assert sum(e.is_active for e in store.experiments()) == 1


def test_experiment_names_are_unique_and_usable_as_directories(store: RunStore) -> None:
    store.create_experiment("alpha")
    with pytest.raises(RefusedError, match="experiment 'alpha' already exists"):
        store.create_experiment("alpha")
    for bad in ("", "  ", "a/b", "..", "tab\there"):
        with pytest.raises(InvalidValueError, match="cannot be used"):
            store.create_experiment(bad)
    with pytest.raises(NotFoundError, match=r"no experiment 'gamma' \(known: 'alpha'\)"):
        store.activate_experiment("gamma")


def test_experiment_change_is_refused_with_the_busy_reason(store: RunStore) -> None:
    store.create_experiment("alpha")
    store.create_experiment("beta")
    store.activate_experiment("alpha")
    with pytest.raises(RefusedError) as refused:
        store.activate_experiment("beta", busy_reason="ECC0 is Prepared, ECC1 is Ready")
    assert str(refused.value) == (
        "cannot change the active experiment from 'alpha' to 'beta': ECC0 is Prepared, ECC1 is Ready; "
        "bring every ECC server back to Idle first"
    )
    assert store.active_experiment().name == "alpha"
    store.activate_experiment("alpha", busy_reason="ECC0 is Running")  # no change: nothing to refuse
    store.start_run()
    with pytest.raises(RefusedError, match="run 0 is still running; stop it first"):
        store.activate_experiment("beta")
    store.stop_run()
    assert store.activate_experiment("beta").is_active


# --- runs ---------------------------------------------------------------------------------------------------


def test_runs_are_numbered_from_zero_per_experiment(store: RunStore, clock: Clock) -> None:
    with pytest.raises(NoActiveExperimentError, match="no active experiment"):
        store.start_run()
    store.create_experiment("alpha")
    store.create_experiment("beta")
    store.activate_experiment("alpha")
    for expected in range(3):
        assert store.next_run_number() == expected
        assert store.start_run(f"run {expected}").number == expected
        clock.advance(minutes=1)
        store.stop_run(expected)
    store.activate_experiment("beta")
    assert store.next_run_number() == 0
    assert store.start_run().number == 0
    store.stop_run()
    store.activate_experiment("alpha")
    assert store.next_run_number() == 3
    assert [r.number for r in store.runs(limit=2)] == [2, 1]
    assert [r.number for r in store.runs(experiment="beta")] == [0]


def test_run_metadata_start_and_stop(store: RunStore, experiment: str, clock: Clock) -> None:
    configs = {
        "ECC0": "cobo0/experiment/experiment",
        "ECC_mutant": {"describe": "mutant", "prepare": "p", "configure": "c"},
    }
    run = store.start_run("pulser check", "pulser", configs)
    assert (run.experiment, run.number, run.title, run.run_class, run.state) == (
        experiment, 0, "pulser check", "Pulser", "running")  # fmt: skip
    assert run.start_time == clock.now and run.stop_time is None
    assert run.config_sets["ECC0"] == {"describe": "cobo0", "prepare": "experiment", "configure": "experiment"}
    assert run.config_set_names == {"ECC0": "cobo0/experiment/experiment", "ECC_mutant": "mutant/p/c"}
    assert store.current_run() == run
    with pytest.raises(RefusedError, match=r"cannot start a run: run 0 is still running \(started 2024-05-01 20:00"):
        store.start_run()
    clock.advance(hours=25, minutes=2, seconds=3)
    stopped = store.stop_run(0)
    assert (stopped.state, stopped.stop_time, stopped.duration_string) == ("stopped", clock.now, "25:02:03")
    assert store.current_run() is None and store.latest_run() == stopped
    with pytest.raises(RefusedError, match="run 0 is not running"):
        store.stop_run(0)
    with pytest.raises(RefusedError, match="no run is running"):
        store.stop_run()
    assert store.start_run().number == 1
    assert store.stop_run(state="aborted").state == "aborted"
    store.update_run(1, title="noise", run_class="Junk")
    assert (store.run(1).title, store.run(1).run_class) == ("noise", "Junk")
    with pytest.raises(InvalidValueError, match="run class 'Calibration' is not one of Testing, Production"):
        store.start_run(run_class="Calibration")
    with pytest.raises(InvalidValueError, match="config set of ECC server 'ECC0'"):
        store.start_run(config_sets={"ECC0": "cobo0/experiment"})
    with pytest.raises(NotFoundError, match=r"has no run 7 \(runs are 0-1\)"):
        store.run(7)


def test_concurrent_starts_get_distinct_consecutive_numbers(store: RunStore, experiment: str) -> None:
    """8 threads each start (and then stop) one run: numbers 0-7, no collision, no gap."""

    def start_and_stop(i: int) -> int:
        deadline = time.monotonic() + 20
        while True:
            try:
                run = store.start_run(f"thread {i}")
            except RefusedError:  # another thread's run is running
                assert time.monotonic() < deadline, f"thread {i} never got to start a run"
                time.sleep(0.001)
                continue
            store.stop_run(run.number)
            return run.number

    numbers = run_threads(start_and_stop)
    assert sorted(numbers) == list(range(THREADS)), numbers
    runs = store.runs(limit=100)
    assert sorted(r.number for r in runs) == list(range(THREADS))
    assert sorted(r.title for r in runs) == sorted(f"thread {i}" for i in range(THREADS))
    assert all(r.state == "stopped" for r in runs)


def test_a_start_that_loses_the_number_race_retries(
    store: RunStore, experiment: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The unique (experiment, number) constraint stops a stale number; the retry takes the next one."""
    store.start_run()
    store.stop_run()
    real = store_module._next_number
    stale = [0]  # what a transaction that read before run 0 was committed would compute

    def next_number(session: Session, owner: Any) -> int:
        return stale.pop() if stale else real(session, owner)

    monkeypatch.setattr(store_module, "_next_number", next_number)
    assert store.start_run("second").number == 1
    with pytest.raises(IntegrityError), store.engine.begin() as connection:
        connection.execute(
            text("INSERT INTO runs (experiment_id, number, title, run_class, start_time, config_sets, state) "
                 "SELECT experiment_id, 1, '', 'Junk', start_time, config_sets, 'stopped' FROM runs WHERE number = 0")
        )  # fmt: skip


def test_simultaneous_starts_create_exactly_one_run(store: RunStore, experiment: str) -> None:
    results = run_threads(lambda i: store.start_run(f"thread {i}"))
    started = [r for r in results if not isinstance(r, Exception)]
    refused = [r for r in results if isinstance(r, RefusedError)]
    assert len(started) == 1 and len(refused) == THREADS - 1, results
    assert started[0].number == 0
    assert [r.number for r in store.runs()] == [0]


# --- run sheets ---------------------------------------------------------------------------------------------


def test_observables_keep_their_display_order(store: RunStore, experiment: str) -> None:
    store.add_observable("anode_voltage", "integer", "V", "read on the HV crate")
    store.add_observable("gas_pressure", "float", "torr")
    store.add_observable("beam", "string")
    store.add_observable("cathode_voltage", "Integer", "kV", display_order=1)
    assert [(o.name, o.display_order) for o in store.observables()] == [
        ("anode_voltage", 0), ("cathode_voltage", 1), ("gas_pressure", 1), ("beam", 2)]  # fmt: skip
    assert store.observables()[0].comment == "read on the HV crate"
    reordered = store.reorder_observables(["beam", "gas_pressure"])
    assert [o.name for o in reordered] == [o.name for o in store.observables()] == [
        "beam", "gas_pressure", "anode_voltage", "cathode_voltage"]  # fmt: skip
    with pytest.raises(RefusedError, match="already has an observable 'beam'"):
        store.add_observable("beam", "string")
    with pytest.raises(InvalidValueError, match="value type 'bool' is not one of integer, float, string"):
        store.add_observable("flag", "bool")
    with pytest.raises(NotFoundError, match="has no observable 'nope'"):
        store.reorder_observables(["nope"])


def test_measurements_are_typed_and_wrong_types_are_refused(store: RunStore, experiment: str) -> None:
    store.add_observable("anode_voltage", "integer", "V")
    store.add_observable("gas_pressure", "float", "torr")
    store.add_observable("beam", "string")
    run = store.start_run()
    assert store.set_measurement(run.number, "anode_voltage", " 1200 ").value == 1200  # text is parsed
    assert store.set_measurement(run.number, "gas_pressure", 150).value == 150.0  # an int is a float
    assert store.set_measurement(run.number, "beam", "12").value == "12"
    refusals = [
        ("anode_voltage", 12.0, "expects an integer value, got 12.0 (float)"),
        ("anode_voltage", "12.5", "expects an integer value, got '12.5' (str)"),
        ("anode_voltage", True, "expects an integer value, got True (bool)"),
        ("gas_pressure", "high", "expects a float value, got 'high' (str)"),
        ("gas_pressure", float("nan"), "expects a float value, got nan (float), not a finite number"),
        ("beam", 12, "expects a string value, got 12 (int)"),
    ]
    for name, value, message in refusals:
        with pytest.raises(WrongTypeError) as refused:
            store.set_measurement(run.number, name, value)
        assert f"observable {name!r} {message}" in str(refused.value)
        assert str(refused.value).endswith("nothing was stored")
    # All or nothing: one bad value stores none of the others.
    with pytest.raises(WrongTypeError, match="'anode_voltage' expects an integer"):
        store.set_measurements(run.number, {"beam": "14N", "anode_voltage": "lots"})
    values = {m.observable: (m.value, type(m.value)) for m in store.measurements(run.number)}
    assert values == {"anode_voltage": (1200, int), "gas_pressure": (150.0, float), "beam": ("12", str)}
    store.set_measurement(run.number, "beam", None)  # clears
    assert [m.observable for m in store.measurements(run.number)] == ["anode_voltage", "gas_pressure"]
    with pytest.raises(NotFoundError, match=r"no observable 'pressure' \(known: 'anode_voltage'"):
        store.set_measurement(run.number, "pressure", 1.0)
    with pytest.raises(RefusedError, match="has values in 1 run"):
        store.remove_observable("anode_voltage")
    store.remove_observable("anode_voltage", with_measurements=True)
    assert [o.name for o in store.observables()] == ["gas_pressure", "beam"]


def test_same_as_previous_fills_only_empty_fields(store: RunStore, experiment: str) -> None:
    for name, kind in (("anode_voltage", "integer"), ("gas_pressure", "float"), ("beam", "string")):
        store.add_observable(name, kind)
    assert store.same_as_previous(store.start_run().number) == []  # run 0 has no previous run
    store.set_measurements(0, {"anode_voltage": 1200, "gas_pressure": 150.5, "beam": "14N"})
    store.stop_run()
    store.start_run()
    store.set_measurement(1, "gas_pressure", 149.0)
    filled = store.same_as_previous(1)
    assert [(m.run_number, m.observable, m.value) for m in filled] == [(1, "anode_voltage", 1200), (1, "beam", "14N")]
    assert {m.observable: m.value for m in store.measurements(1)} == {
        "anode_voltage": 1200, "gas_pressure": 149.0, "beam": "14N"}  # fmt: skip
    assert store.same_as_previous(1) == []


# --- operator log -------------------------------------------------------------------------------------------


def test_operator_log_newest_first(store: RunStore, clock: Clock) -> None:
    store.log("alice", "daq01", "Start", "daq/run/1", "ok", "run 4")
    clock.advance(seconds=1)
    store.log("bob", "daq02", "Configure", "daq/ecc/0", "failed", "ECC0: timed out after 10 s")
    clock.advance(seconds=1)
    store.log("bob", "daq02", "ChangeExperiment", "e20009", "refused", "ECC0 is Ready")
    entries = store.operator_log()
    assert [(e.user, e.action, e.outcome) for e in entries] == [
        ("bob", "ChangeExperiment", "refused"), ("bob", "Configure", "failed"), ("alice", "Start", "ok")]  # fmt: skip
    assert entries[1].detail == "ECC0: timed out after 10 s" and entries[1].time == clock.now - timedelta(seconds=1)
    assert len(store.operator_log(limit=2)) == 2
    with pytest.raises(InvalidValueError, match="log outcome 'maybe' is not one of ok, failed, refused"):
        store.log("alice", "daq01", "Stop", "daq/run/1", "maybe")


# --- DAQ setup ----------------------------------------------------------------------------------------------


def test_easy_setup_four_cobos_one_ecc_and_a_mutant(store: RunStore) -> None:
    setup = store.easy_setup(4, "192.168.1.10", mutant=True)
    assert setup.ecc_servers == (EccServer("ECC", "192.168.1.10", 8083),)
    assert setup.data_sources == (
        DataSource("CoBo[0]", "ECC", "DataRouter0", "192.168.1.10", 46005, "TCP", False),
        DataSource("CoBo[1]", "ECC", "DataRouter1", "192.168.1.11", 46005, "TCP", False),
        DataSource("CoBo[2]", "ECC", "DataRouter2", "192.168.1.12", 46005, "TCP", False),
        DataSource("CoBo[3]", "ECC", "DataRouter3", "192.168.1.13", 46005, "TCP", False),
        DataSource("Mutant[master]", "ECC", "DataRouter_mutant", "192.168.1.14", 46005, "FDT", True),
    )
    assert store.daq_setup() == setup
    assert len(setup.sources_of("ECC")) == 5


def test_easy_setup_three_cobos_one_ecc_each(store: RunStore) -> None:
    setup = store.easy_setup(3, "10.0.0.20", ecc_port=8090, multiple_ecc=True, router_port=46010,
                             first_router_ip="10.0.1.20")  # fmt: skip
    assert setup.ecc_servers == (
        EccServer("ECC0", "10.0.0.20", 8090),
        EccServer("ECC1", "10.0.0.21", 8090),
        EccServer("ECC2", "10.0.0.22", 8090),
    )
    assert [(s.name, s.ecc_server, s.router_name, s.router_ip, s.router_port, s.router_type)
            for s in setup.data_sources] == [
        ("CoBo[0]", "ECC0", "DataRouter0", "10.0.1.20", 46010, "TCP"),
        ("CoBo[1]", "ECC1", "DataRouter1", "10.0.1.21", 46010, "TCP"),
        ("CoBo[2]", "ECC2", "DataRouter2", "10.0.1.22", 46010, "TCP"),
    ]  # fmt: skip
    assert store.daq_setup() == setup
    with_mutant = plan_easy_setup(3, "10.0.0.20", multiple_ecc=True, mutant=True, mutant_ecc_ip="10.0.0.99")
    assert with_mutant.ecc_servers[-1] == EccServer("ECC_mutant", "10.0.0.99", 8083)
    assert with_mutant.data_sources[-1] == DataSource(
        "Mutant[master]", "ECC_mutant", "DataRouter_mutant", "10.0.0.23", 46005, "FDT", True)  # fmt: skip


def test_easy_setup_refuses_what_it_cannot_build(store: RunStore) -> None:
    with pytest.raises(InvalidValueError, match=r"10.0.0.250 \+ 6 runs past .255"):
        store.easy_setup(8, "10.0.0.250", multiple_ecc=True)
    with pytest.raises(InvalidValueError, match="'daq-host' is not an IPv4 address"):
        store.easy_setup(2, "daq-host")
    with pytest.raises(InvalidValueError, match="nothing to set up"):
        store.easy_setup(0, "10.0.0.1")
    with pytest.raises(InvalidValueError, match="no ECC server 'ECC9' in this setup"):
        store.replace_setup(DaqSetup((EccServer("ECC", "h"),), (DataSource("CoBo[0]", "ECC9", "DR0", "h"),)))
    assert store.daq_setup() == DaqSetup((), ())


def test_setup_replacement_is_atomic_with_the_callers_block(store: RunStore) -> None:
    first = store.easy_setup(2, "192.168.1.10")
    second = plan_easy_setup(3, "192.168.2.10", multiple_ecc=True, mutant=True)

    class TangoWriteFailed(Exception):
        pass

    with pytest.raises(TangoWriteFailed), store.replacing_setup(second) as change:
        assert change.previous == first and change.new == second
        raise TangoWriteFailed("daq/ecc/2: cannot write DataLinks")
    assert store.daq_setup() == first

    with store.replacing_setup(second) as change:
        pass
    assert store.daq_setup() == DaqSetup(
        tuple(sorted(second.ecc_servers, key=lambda e: e.name)),
        tuple(sorted(second.data_sources, key=lambda s: s.name)),
    )
