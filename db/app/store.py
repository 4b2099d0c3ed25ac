"""The application database as device servers and the CLI use it: experiments, runs, run sheets, log, DAQ setup.

Every method is one short transaction and returns plain frozen dataclasses
(never live ORM objects), so results can cross threads and be kept::

    store = RunStore.open(database_url())          # migrates to the newest schema
    store.create_experiment("e20009")
    store.activate_experiment("e20009", busy_reason=None)
    run = store.start_run("beam on target", "Beam", {"ECC": "cobo/beam/beam"})
    store.set_measurement(run.number, "anode_voltage", "1200")   # text is parsed
    store.stop_run(run.number)

Rules (the database enforces the structural ones too, see ``models``):
run numbers start at 0 per experiment and never collide, even for
concurrent callers (a unique constraint; the losing transaction retries);
at most one run is running per experiment; one experiment is active, and it
does not change while a caller says the DAQ is busy or a run is running.

Errors: :class:`StoreError` and its subclasses, with messages naming the
thing, the operation, the cause and what to do.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import numbers
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import Engine, delete, func, select, text, update
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from db.app import models as m
from db.app.schema import SchemaError, StoreError, check_schema, make_engine, safe_url, upgrade

__all__ = [
    "ConflictError", "DaqSetup", "DataSource", "EccServer", "Experiment", "InvalidValueError", "LogEntry",
    "Measurement", "NoActiveExperimentError", "NotFoundError", "Observable", "RefusedError", "Run", "RunStore",
    "SchemaError", "SetupReplacement", "StoreError", "WrongTypeError", "coerce_value", "plan_easy_setup",
]  # fmt: skip

log = logging.getLogger(__name__)

Value = int | float | str
T = TypeVar("T")

DEFAULT_ECC_PORT = 8083
DEFAULT_ROUTER_PORT = 46005
CONFIG_STEPS = ("describe", "prepare", "configure")


# --- errors -------------------------------------------------------------------------------------------------


class NotFoundError(StoreError, LookupError):
    """No experiment, run or observable by that name or number."""


class RefusedError(StoreError):
    """The request breaks a run-control rule (a run is running, the DAQ is busy, the name is taken, ...)."""


class NoActiveExperimentError(RefusedError):
    """The operation needs an active experiment and there is none."""


class InvalidValueError(RefusedError, ValueError):
    """An argument is malformed: an unknown run class, a bad config set name, an address that cannot be used."""


class WrongTypeError(InvalidValueError):
    """A measurement value does not fit its observable's type; nothing was stored."""


class ConflictError(StoreError):
    """Concurrent writers kept winning; gave up after many attempts (should not happen in practice)."""


# --- what the store returns ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Experiment:
    name: str
    is_active: bool
    created_at: datetime


@dataclass(frozen=True)
class Run:
    """Run metadata. ``config_sets`` maps each ECC server to its describe/prepare/configure names."""

    experiment: str
    number: int
    title: str
    run_class: str
    start_time: datetime
    stop_time: datetime | None
    config_sets: dict[str, dict[str, str]]
    state: str

    @property
    def running(self) -> bool:
        return self.state == "running"

    def duration(self, now: datetime | None = None) -> timedelta:
        """Stop minus start; up to ``now`` (default: the current time) while running."""
        end = self.stop_time or now or datetime.now(UTC)
        return end - self.start_time

    @property
    def duration_string(self) -> str:
        """``HH:MM:SS`` (hours go past 24)."""
        seconds = max(0, int(self.duration().total_seconds()))
        return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"

    @property
    def config_set_names(self) -> dict[str, str]:
        """``{"ECC0": "cobo0/experiment/experiment"}``: config sets as users see them."""
        return {ecc: "/".join(steps[s] for s in CONFIG_STEPS) for ecc, steps in self.config_sets.items()}


@dataclass(frozen=True)
class Observable:
    """A run-sheet field."""

    name: str
    value_type: str
    units: str
    comment: str
    display_order: int


@dataclass(frozen=True)
class Measurement:
    run_number: int
    observable: str
    value_type: str
    units: str
    value: Value


@dataclass(frozen=True)
class LogEntry:
    time: datetime
    user: str
    host: str
    action: str
    target: str
    outcome: str
    detail: str


@dataclass(frozen=True)
class EccServer:
    name: str
    host: str
    port: int = DEFAULT_ECC_PORT


@dataclass(frozen=True)
class DataSource:
    """A CoBo or the MuTAnT, the ECC server that controls it and its data router."""

    name: str
    ecc_server: str
    router_name: str
    router_ip: str
    router_port: int = DEFAULT_ROUTER_PORT
    router_type: str = "TCP"
    is_mutant: bool = False


@dataclass(frozen=True)
class DaqSetup:
    """The DAQ topology: ECC servers and the data sources each controls."""

    ecc_servers: tuple[EccServer, ...]
    data_sources: tuple[DataSource, ...]

    def sources_of(self, ecc_server: str) -> tuple[DataSource, ...]:
        """The data sources (hence data links) of one ECC server."""
        return tuple(s for s in self.data_sources if s.ecc_server == ecc_server)

    def problems(self) -> list[str]:
        """Everything wrong with this setup (empty when it can be stored)."""
        found: list[str] = []
        ecc_names = [e.name for e in self.ecc_servers]
        for kind, names in (
            ("ECC server", ecc_names),
            ("data source", [s.name for s in self.data_sources]),
            ("data router", [s.router_name for s in self.data_sources]),
        ):
            found += [f"{kind} {n!r} appears more than once" for n in sorted({n for n in names if names.count(n) > 1})]
            found += [f"a {kind} has an empty name" for n in names if not n.strip()][:1]
        for ecc in self.ecc_servers:
            if not ecc.host.strip():
                found.append(f"ECC server {ecc.name!r} has no host")
            if not 1 <= ecc.port <= 65535:
                found.append(f"ECC server {ecc.name!r}: port {ecc.port} is not 1-65535")
        for source in self.data_sources:
            if source.ecc_server not in ecc_names:
                found.append(f"data source {source.name!r}: no ECC server {source.ecc_server!r} in this setup")
            if source.router_type not in m.ROUTER_TYPES:
                choices = ", ".join(m.ROUTER_TYPES)
                found.append(f"data source {source.name!r}: router type {source.router_type!r} is not one of {choices}")
            if not source.router_ip.strip():
                found.append(f"data source {source.name!r} has no router address")
            if not 1 <= source.router_port <= 65535:
                found.append(f"data source {source.name!r}: router port {source.router_port} is not 1-65535")
        return found


@dataclass(frozen=True)
class SetupReplacement:
    """Handed to the block of :meth:`RunStore.replacing_setup`: the setup being replaced and its replacement."""

    previous: DaqSetup
    new: DaqSetup


# --- easy setup (pure) --------------------------------------------------------------------------------------


def plan_easy_setup(
    n_cobos: int,
    first_ip: str,
    ecc_port: int = DEFAULT_ECC_PORT,
    multiple_ecc: bool = False,
    mutant: bool = False,
    router_port: int = DEFAULT_ROUTER_PORT,
    *,
    first_router_ip: str | None = None,
    mutant_ecc_ip: str | None = None,
    mutant_router_ip: str | None = None,
) -> DaqSetup:
    """The rows easy setup creates (no database involved).

    - one ECC server ``ECC`` at ``first_ip``, or with ``multiple_ecc`` one
      ``ECC<i>`` per CoBo at ``first_ip`` + i;
    - per CoBo a data source ``CoBo[i]`` whose router ``DataRouter<i>`` (TCP)
      is at ``first_router_ip`` (default ``first_ip``) + i;
    - with ``mutant``: ``Mutant[master]`` and its router ``DataRouter_mutant``
      (FDT) at ``mutant_router_ip`` (default: the address after the last
      CoBo router), on ``ECC`` when there is one ECC server (as the web DAQ
      did), else on its own ``ECC_mutant`` at ``mutant_ecc_ip`` (default:
      the address after the last CoBo ECC server).

    "+ i" adds to the last part of the IPv4 address (192.168.1.10 + 2 is
    192.168.1.12); an address past .255 is refused.
    """
    if isinstance(n_cobos, bool) or not isinstance(n_cobos, int) or n_cobos < 0:
        raise InvalidValueError(f"easy setup: number of CoBos must be a whole number >= 0, got {n_cobos!r}")
    if n_cobos == 0 and not mutant:
        raise InvalidValueError("easy setup: nothing to set up (0 CoBos and no MuTAnT)")
    router_base = first_router_ip or first_ip
    ecc_servers: list[EccServer] = []
    sources: list[DataSource] = []
    if not multiple_ecc:
        ecc_servers.append(EccServer("ECC", _offset_ip(first_ip, 0, "ECC server"), ecc_port))
    for i in range(n_cobos):
        ecc = "ECC"
        if multiple_ecc:
            ecc = f"ECC{i}"
            ecc_servers.append(EccServer(ecc, _offset_ip(first_ip, i, "ECC server"), ecc_port))
        sources.append(
            DataSource(
                f"CoBo[{i}]", ecc, f"DataRouter{i}", _offset_ip(router_base, i, "data router"), router_port, "TCP"
            )
        )
    if mutant:
        ecc = "ECC"
        if multiple_ecc:
            ecc = "ECC_mutant"
            host = mutant_ecc_ip or _offset_ip(first_ip, n_cobos, "MuTAnT ECC server")
            ecc_servers.append(EccServer(ecc, host, ecc_port))
        router_ip = mutant_router_ip or _offset_ip(router_base, n_cobos, "MuTAnT data router")
        sources.append(DataSource("Mutant[master]", ecc, "DataRouter_mutant", router_ip, router_port, "FDT", True))
    setup = DaqSetup(tuple(ecc_servers), tuple(sources))
    _check_setup(setup)
    return setup


def _offset_ip(base: str, offset: int, what: str) -> str:
    try:
        address = ipaddress.IPv4Address(base.strip())
    except ValueError as exc:
        raise InvalidValueError(f"easy setup: {what} address {base!r} is not an IPv4 address ({exc})") from exc
    last = int(address) & 0xFF
    if last + offset > 255:
        raise InvalidValueError(
            f"easy setup: {what} address {base} + {offset} runs past .255; choose a lower first address"
        )
    return str(address + offset)


def _check_setup(setup: DaqSetup) -> None:
    problems = setup.problems()
    if problems:
        raise InvalidValueError("DAQ setup refused: " + "; ".join(problems))


# --- values -------------------------------------------------------------------------------------------------

INT_RANGE = (-(2**63), 2**63 - 1)


def coerce_value(observable: str, value_type: str, value: object) -> Value:
    """``value`` as the observable's type, or :class:`WrongTypeError`.

    Text (from a CLI or a form) is parsed: ``"12"`` is a valid integer and
    ``"1.5e3"`` a valid float. A Python value of another type is refused:
    ``12.0`` for an integer, ``12`` for a string. An int is a valid float.
    Booleans, NaN and infinities are refused everywhere.
    """

    def refuse(why: str = "") -> WrongTypeError:
        article = "an" if value_type == "integer" else "a"
        return WrongTypeError(
            f"observable {observable!r} expects {article} {value_type} value, got {value!r} "
            f"({type(value).__name__}){why}; nothing was stored"
        )

    if value_type == "string":
        if isinstance(value, str):
            return value
        raise refuse()
    if isinstance(value, bool):
        raise refuse()
    if isinstance(value, str):
        try:
            parsed: Value = int(value.strip()) if value_type == "integer" else float(value.strip())
        except ValueError:
            raise refuse() from None
        value_in = parsed
    elif value_type == "integer" and isinstance(value, numbers.Integral):
        value_in = int(value)
    elif value_type == "float" and isinstance(value, numbers.Real):
        value_in = float(value)
    else:
        raise refuse()
    if value_type == "integer":
        if not INT_RANGE[0] <= int(value_in) <= INT_RANGE[1]:
            raise refuse(", outside the 64-bit range")
        return int(value_in)
    if not math.isfinite(value_in):
        raise refuse(", not a finite number")
    return float(value_in)


def _choice(what: str, value: str, choices: Sequence[str]) -> str:
    """``value`` matched case-insensitively against ``choices`` (returned in canonical spelling)."""
    for choice in choices:
        if isinstance(value, str) and value.strip().lower() == choice.lower():
            return choice
    raise InvalidValueError(f"{what} {value!r} is not one of {', '.join(choices)}")


def _config_sets(config_sets: Mapping[str, Any] | None) -> dict[str, dict[str, str]]:
    """Normalize ``{ecc: "d/p/c" | {"describe": ..} | object with .describe/.prepare/.configure}``."""
    result: dict[str, dict[str, str]] = {}
    for ecc, config in (config_sets or {}).items():
        if isinstance(config, str):
            parts = config.split("/")
        elif isinstance(config, Mapping):
            parts = [config.get(step, "") for step in CONFIG_STEPS]
        else:
            parts = [getattr(config, step, "") for step in CONFIG_STEPS]
        if len(parts) != 3 or not all(isinstance(p, str) and p.strip() for p in parts):
            raise InvalidValueError(
                f"config set of ECC server {ecc!r}: {config!r} is not describe/prepare/configure "
                "(e.g. cobo0/experiment/experiment)"
            )
        result[str(ecc)] = dict(zip(CONFIG_STEPS, (p.strip() for p in parts), strict=True))
    return result


def _experiment_name(name: str) -> str:
    cleaned = name.strip() if isinstance(name, str) else ""
    if not cleaned or cleaned in (".", "..") or any(c in cleaned for c in "/\\") or not cleaned.isprintable():
        raise InvalidValueError(
            f"experiment name {name!r} cannot be used: it names the data directory on every router, "
            "so it must be non-empty, printable and without / or \\ (spaces are fine)"
        )
    if len(cleaned) > 200:
        raise InvalidValueError(f"experiment name {name[:40]!r}... is longer than 200 characters")
    return cleaned


def _utcnow() -> datetime:
    return datetime.now(UTC)


# --- the store ----------------------------------------------------------------------------------------------


class RunStore:
    """Run control's view of the application database (thread-safe; one instance per process is enough).

    Build it from an Engine made by :func:`db.app.schema.make_engine`, or
    with :meth:`open` from a URL. ``clock`` returns the current aware UTC
    time (tests replace it).
    """

    def __init__(self, engine: Engine, *, clock: Callable[[], datetime] = _utcnow, max_attempts: int = 50) -> None:
        self.engine = engine
        self.clock = clock
        self.max_attempts = max_attempts
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @classmethod
    def open(cls, url: str, *, migrate: bool = True, **kwargs: Any) -> RunStore:
        """A store on ``url``; migrates the schema to the newest revision, or with ``migrate=False`` checks it is there."""
        engine = make_engine(url)
        try:
            (upgrade if migrate else check_schema)(engine)
        except BaseException:
            engine.dispose()
            raise
        return cls(engine, **kwargs)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @property
    def url(self) -> str:
        """The database URL with the password hidden."""
        return safe_url(self.engine)

    # --- experiments ---

    def create_experiment(self, name: str) -> Experiment:
        """A new, inactive experiment; refused if the name is taken."""
        name = _experiment_name(name)

        def work(s: Session) -> Experiment:
            existing = s.scalar(select(m.Experiment).where(m.Experiment.name == name))
            if existing is not None:
                raise RefusedError(f"experiment {name!r} already exists (created {_when(existing.created_at)})")
            row = m.Experiment(name=name, is_active=False, created_at=self.clock())
            s.add(row)
            s.flush()
            return _experiment(row)

        return self._transact(f"create experiment {name!r}", work)

    def activate_experiment(self, name: str, busy_reason: str | None = None) -> Experiment:
        """Make ``name`` the one active experiment.

        ``busy_reason`` is the caller's verdict on the DAQ: ``None`` when
        every ECC server is Idle, else why not (e.g. "ECC0 is Prepared");
        the change is then refused with that reason. It is also refused
        while a run of the current experiment is running. Activating the
        experiment that is already active does nothing.
        """

        def work(s: Session) -> Experiment:
            target = s.scalar(select(m.Experiment).where(m.Experiment.name == name))
            if target is None:
                known = s.scalars(select(m.Experiment.name).order_by(m.Experiment.name)).all()
                raise NotFoundError(f"no experiment {name!r} (known: {', '.join(map(repr, known)) or 'none'})")
            if target.is_active:
                return _experiment(target)
            current = s.scalar(select(m.Experiment).where(m.Experiment.is_active))
            change = f"cannot change the active experiment from {current.name if current else 'none'!r} to {name!r}"
            if busy_reason is not None:
                raise RefusedError(f"{change}: {busy_reason}; bring every ECC server back to Idle first")
            if current is not None:
                running = _running_run(s, current)
                if running is not None:
                    raise RefusedError(f"{change}: run {running.number} is still running; stop it first")
            s.execute(update(m.Experiment).where(m.Experiment.is_active).values(is_active=False))
            s.execute(update(m.Experiment).where(m.Experiment.id == target.id).values(is_active=True))
            s.refresh(target)
            return _experiment(target)

        return self._transact(f"activate experiment {name!r}", work)

    def active_experiment(self) -> Experiment | None:
        def work(s: Session) -> Experiment | None:
            row = s.scalar(select(m.Experiment).where(m.Experiment.is_active))
            return None if row is None else _experiment(row)

        return self._transact("read the active experiment", work)

    def experiments(self) -> list[Experiment]:
        """All experiments, oldest first."""
        return self._transact(
            "list experiments",
            lambda s: [_experiment(r) for r in s.scalars(select(m.Experiment).order_by(m.Experiment.created_at))],
        )

    # --- runs ---

    def next_run_number(self) -> int:
        """The number the next run of the active experiment will get (0 for the first)."""
        return self._transact("read the next run number", lambda s: _next_number(s, _active(s)))

    def start_run(
        self, title: str = "", run_class: str = "Testing", config_sets: Mapping[str, Any] | None = None
    ) -> Run:
        """Create the next run of the active experiment, running from now.

        ``config_sets``: per ECC server, ``"describe/prepare/configure"`` or
        a mapping (or object) with those three names. Refused while another
        run is running. Concurrent callers never get the same number: a
        unique constraint stops the second insert and it retries (and is then
        refused, since the first caller's run is running).
        """
        run_class = _choice("run class", run_class, m.RUN_CLASSES)
        configs = _config_sets(config_sets)

        def work(s: Session) -> Run:
            experiment = _active(s)
            running = _running_run(s, experiment)
            if running is not None:
                raise RefusedError(
                    f"experiment {experiment.name!r}: cannot start a run: run {running.number} is still running "
                    f"(started {_when(running.start_time)}); stop it first"
                )
            row = m.Run(
                experiment=experiment, number=_next_number(s, experiment), title=title, run_class=run_class,
                start_time=self.clock(), stop_time=None, config_sets=configs, state="running",
            )  # fmt: skip
            s.add(row)
            s.flush()
            return _run(row)

        run = self._transact("start a run", work)
        log.info("experiment %s: run %d started (%s)", run.experiment, run.number, run.run_class)
        return run

    def stop_run(self, number: int | None = None, state: str = "stopped") -> Run:
        """End run ``number`` (default: the running one) as ``stopped`` or ``aborted``; refused if not running."""
        state = _choice("final run state", state, ("stopped", "aborted"))

        def work(s: Session) -> Run:
            experiment = _active(s)
            row = _running_run(s, experiment) if number is None else _find_run(s, experiment, number)
            if row is None:
                raise RefusedError(f"experiment {experiment.name!r}: no run is running")
            # Conditional update: of two concurrent stops exactly one changes the row.
            done = s.execute(
                update(m.Run)
                .where(m.Run.id == row.id, m.Run.state == "running")
                .values(state=state, stop_time=self.clock())
            )
            s.refresh(row)
            if done.rowcount != 1:  # type: ignore[attr-defined]
                raise RefusedError(
                    f"experiment {experiment.name!r}: run {row.number} is not running "
                    f"(it was {row.state} at {_when(row.stop_time)})"
                )
            return _run(row)

        run = self._transact(f"stop run {number if number is not None else '(current)'}", work)
        log.info("experiment %s: run %d %s after %s", run.experiment, run.number, run.state, run.duration_string)
        return run

    def current_run(self) -> Run | None:
        """The running run of the active experiment (``None`` when none runs or no experiment is active)."""

        def work(s: Session) -> Run | None:
            experiment = s.scalar(select(m.Experiment).where(m.Experiment.is_active))
            row = None if experiment is None else _running_run(s, experiment)
            return None if row is None else _run(row)

        return self._transact("read the current run", work)

    def latest_run(self) -> Run | None:
        """The running run, or else the last one (``None`` before the first run)."""
        runs = self.runs(limit=1)
        return runs[0] if runs else None

    def run(self, number: int) -> Run:
        return self._transact(f"read run {number}", lambda s: _run(_find_run(s, _active(s), number)))

    def runs(self, limit: int = 50, experiment: str | None = None) -> list[Run]:
        """Runs of the active (or the named) experiment, newest first."""

        def work(s: Session) -> list[Run]:
            owner = _active(s) if experiment is None else _find_experiment(s, experiment)
            query = select(m.Run).where(m.Run.experiment_id == owner.id).order_by(m.Run.number.desc()).limit(limit)
            return [_run(r) for r in s.scalars(query)]

        return self._transact("list runs", work)

    def update_run(self, number: int, *, title: str | None = None, run_class: str | None = None) -> Run:
        """Change the title or class of a run (the run sheet's "Update values")."""
        run_class = None if run_class is None else _choice("run class", run_class, m.RUN_CLASSES)

        def work(s: Session) -> Run:
            row = _find_run(s, _active(s), number)
            if title is not None:
                row.title = title
            if run_class is not None:
                row.run_class = run_class
            s.flush()
            return _run(row)

        return self._transact(f"update run {number}", work)

    # --- observables and measurements ---

    def add_observable(
        self, name: str, value_type: str, units: str = "", comment: str = "", display_order: int | None = None
    ) -> Observable:
        """A new run-sheet field of the active experiment (appended at the end unless ``display_order`` is given)."""
        value_type = _choice(f"observable {name!r}: value type", value_type, m.VALUE_TYPES)
        if not isinstance(name, str) or not name.strip():
            raise InvalidValueError(f"observable name {name!r} is empty")
        name = name.strip()

        def work(s: Session) -> Observable:
            experiment = _active(s)
            if s.scalar(_observable_query(experiment, name)) is not None:
                raise RefusedError(f"experiment {experiment.name!r} already has an observable {name!r}")
            order = display_order
            if order is None:
                last = s.scalar(
                    select(func.max(m.Observable.display_order)).where(m.Observable.experiment_id == experiment.id)
                )
                order = 0 if last is None else last + 1
            row = m.Observable(
                experiment=experiment, name=name, value_type=value_type, units=units, comment=comment,
                display_order=order,
            )  # fmt: skip
            s.add(row)
            s.flush()
            return _observable(row)

        return self._transact(f"add observable {name!r}", work)

    def observables(self) -> list[Observable]:
        """The run-sheet fields of the active experiment, in display order."""

        def work(s: Session) -> list[Observable]:
            return [_observable(r) for r in _observables(s, _active(s))]

        return self._transact("list observables", work)

    def reorder_observables(self, names: Sequence[str]) -> list[Observable]:
        """Put ``names`` first, in that order; the others keep their order after them."""

        def work(s: Session) -> list[Observable]:
            experiment = _active(s)
            rows = _observables(s, experiment)
            by_name = {r.name: r for r in rows}
            unknown = [n for n in names if n not in by_name]
            if unknown:
                raise NotFoundError(f"experiment {experiment.name!r} has no observable {', '.join(map(repr, unknown))}")
            ordered = [by_name[n] for n in dict.fromkeys(names)] + [r for r in rows if r.name not in names]
            for position, row in enumerate(ordered):
                row.display_order = position
            s.flush()
            return [_observable(r) for r in ordered]

        return self._transact("reorder observables", work)

    def remove_observable(self, name: str, *, with_measurements: bool = False) -> None:
        """Remove a run-sheet field; refused if runs have values for it unless ``with_measurements``."""

        def work(s: Session) -> None:
            experiment = _active(s)
            row = _find_observable(s, experiment, name)
            count = s.scalar(
                select(func.count()).select_from(m.Measurement).where(m.Measurement.observable_id == row.id)
            )
            if count and not with_measurements:
                raise RefusedError(
                    f"observable {name!r} has values in {count} run(s); remove them too with with_measurements=True"
                )
            s.execute(delete(m.Measurement).where(m.Measurement.observable_id == row.id))
            s.delete(row)

        self._transact(f"remove observable {name!r}", work)

    def set_measurement(self, run_number: int, observable: str, value: object) -> Measurement | None:
        """Store one value of a run sheet (``None`` clears it); see :func:`coerce_value` for what is accepted."""
        stored = self.set_measurements(run_number, {observable: value})
        return stored[0] if stored else None

    def set_measurements(self, run_number: int, values: Mapping[str, object]) -> list[Measurement]:
        """Store several values at once: all or nothing; every wrong value is named in one refusal."""

        def work(s: Session) -> list[Measurement]:
            experiment = _active(s)
            run = _find_run(s, experiment, run_number)
            typed: list[tuple[m.Observable, Value | None]] = []
            problems: list[str] = []
            for name, value in values.items():
                obs = _find_observable(s, experiment, name)
                try:
                    typed.append((obs, None if value is None else coerce_value(obs.name, obs.value_type, value)))
                except WrongTypeError as exc:
                    problems.append(str(exc).removesuffix("; nothing was stored"))
            if problems:
                listed = "; ".join(problems)
                raise WrongTypeError(f"run {run_number} of {experiment.name!r}: {listed}; nothing was stored")
            stored = []
            for obs, value in typed:
                row = s.scalar(
                    select(m.Measurement).where(m.Measurement.run_id == run.id, m.Measurement.observable_id == obs.id)
                )
                if value is None:
                    if row is not None:
                        s.delete(row)
                    continue
                if row is None:
                    row = m.Measurement(run=run, observable=obs)
                    s.add(row)
                _put_value(row, obs.value_type, value)
                stored.append(row)
            s.flush()
            return [_measurement(run, r) for r in stored]

        return self._transact(f"set measurements of run {run_number}", work)

    def measurements(self, run_number: int) -> list[Measurement]:
        """The values of a run sheet, in observable display order (fields with no value are absent)."""

        def work(s: Session) -> list[Measurement]:
            run = _find_run(s, _active(s), run_number)
            return [_measurement(run, r) for r in _measurement_rows(s, run)]

        return self._transact(f"read measurements of run {run_number}", work)

    def same_as_previous(self, run_number: int) -> list[Measurement]:
        """Copy the previous run's values into run ``run_number`` where it has none; return what was filled.

        The previous run is the one with the highest number below
        ``run_number``; before the first run there is nothing to copy.
        """

        def work(s: Session) -> list[Measurement]:
            experiment = _active(s)
            run = _find_run(s, experiment, run_number)
            previous = s.scalar(
                select(m.Run)
                .where(m.Run.experiment_id == experiment.id, m.Run.number < run_number)
                .order_by(m.Run.number.desc())
                .limit(1)
            )
            if previous is None:
                return []
            have = set(s.scalars(select(m.Measurement.observable_id).where(m.Measurement.run_id == run.id)))
            filled = []
            for source in _measurement_rows(s, previous):
                if source.observable_id in have:
                    continue
                row = m.Measurement(
                    run=run, observable=source.observable, int_value=source.int_value,
                    float_value=source.float_value, str_value=source.str_value,
                )  # fmt: skip
                s.add(row)
                filled.append(row)
            s.flush()
            return [_measurement(run, r) for r in filled]

        return self._transact(f"copy measurements into run {run_number}", work)

    # --- operator log ---

    def log(self, user: str, host: str, action: str, target: str, outcome: str, detail: str = "") -> LogEntry:
        """Record who did what to which thing and how it went (``ok``, ``failed`` or ``refused``)."""
        outcome = _choice("log outcome", outcome, m.OUTCOMES)
        row = m.OperatorLogEntry(
            time=self.clock(), user=_clip(user, 100), host=_clip(host, 255), action=_clip(action, 100),
            target=_clip(target, 255), outcome=outcome, detail=detail,
        )  # fmt: skip

        def work(s: Session) -> LogEntry:
            s.add(row)
            s.flush()
            return _log_entry(row)

        return self._transact(f"log {action!r} on {target!r}", work)

    def operator_log(self, limit: int = 100) -> list[LogEntry]:
        """The newest entries first."""
        query = select(m.OperatorLogEntry).order_by(m.OperatorLogEntry.time.desc(), m.OperatorLogEntry.id.desc())
        return self._transact("read the operator log", lambda s: [_log_entry(r) for r in s.scalars(query.limit(limit))])

    # --- DAQ setup ---

    def daq_setup(self) -> DaqSetup:
        """The stored ECC servers and data sources (sorted by name)."""
        return self._transact("read the DAQ setup", _read_setup)

    def easy_setup(
        self,
        n_cobos: int,
        first_ip: str,
        ecc_port: int = DEFAULT_ECC_PORT,
        multiple_ecc: bool = False,
        mutant: bool = False,
        router_port: int = DEFAULT_ROUTER_PORT,
        *,
        first_router_ip: str | None = None,
        mutant_ecc_ip: str | None = None,
        mutant_router_ip: str | None = None,
    ) -> DaqSetup:
        """:func:`plan_easy_setup` then :meth:`replace_setup` (the previous setup is gone); returns the new setup."""
        setup = plan_easy_setup(
            n_cobos, first_ip, ecc_port, multiple_ecc, mutant, router_port,
            first_router_ip=first_router_ip, mutant_ecc_ip=mutant_ecc_ip, mutant_router_ip=mutant_router_ip,
        )  # fmt: skip
        return self.replace_setup(setup)

    def replace_setup(self, setup: DaqSetup) -> DaqSetup:
        """Replace the whole DAQ setup in one transaction."""
        with self.replacing_setup(setup):
            pass
        return setup

    @contextmanager
    def replacing_setup(self, setup: DaqSetup) -> Iterator[SetupReplacement]:
        """Replace the DAQ setup, committing only if the caller's block succeeds.

        Makes the Tango database write and this one a single unit::

            with store.replacing_setup(setup) as change:
                write_tango_devices(change.new)        # raises -> nothing stored here

        The new rows are written and checked by the database before the block
        runs, so a rejected setup never reaches the block. If the block
        raises, this transaction is rolled back and the exception propagates;
        undoing what the block already did elsewhere is the block's job
        (``change.previous`` is what to restore). Keep the block short: on
        sqlite it holds the database's write lock.
        """
        _check_setup(setup)
        what = "replace the DAQ setup"
        session = self._sessions()
        try:
            with self._translated(what):
                session.begin()
                if session.get_bind().dialect.name == "postgresql":
                    session.execute(text("LOCK TABLE ecc_servers, data_sources IN EXCLUSIVE MODE"))
                previous = _read_setup(session)
                session.execute(delete(m.DataSource))
                session.execute(delete(m.EccServer))
                eccs = {e.name: m.EccServer(name=e.name, host=e.host, port=e.port) for e in setup.ecc_servers}
                session.add_all(eccs.values())
                session.add_all(
                    m.DataSource(
                        name=d.name, ecc_server=eccs[d.ecc_server], router_name=d.router_name,
                        router_ip=d.router_ip, router_port=d.router_port, router_type=d.router_type,
                        is_mutant=d.is_mutant,
                    )
                    for d in setup.data_sources
                )  # fmt: skip
                session.flush()
            yield SetupReplacement(previous=previous, new=setup)
            with self._translated(what):
                session.commit()
            log.info(
                "DAQ setup replaced: %d ECC servers, %d data sources", len(setup.ecc_servers), len(setup.data_sources)
            )
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    # --- transactions ---

    def _transact(self, what: str, work: Callable[[Session], T]) -> T:
        """Run ``work`` in one transaction; retry when a concurrent writer got there first.

        ``work`` checks every rule before writing and raises a
        :class:`RefusedError`, so a constraint violation can only come from a
        concurrent transaction; on retry ``work`` sees its result.
        """
        for attempt in range(1, self.max_attempts + 1):
            try:
                with self._sessions.begin() as session:
                    return work(session)
            except (IntegrityError, OperationalError) as exc:
                if isinstance(exc, OperationalError) and not _transient(exc):
                    raise self._error(what, exc) from exc
                if attempt == self.max_attempts:
                    raise ConflictError(
                        f"application database {self.url}: {what}: gave up after {attempt} attempts "
                        f"against concurrent writers; last error: {_cause(exc)}"
                    ) from exc
                log.debug("%s: attempt %d lost to a concurrent writer (%s); retrying", what, attempt, _cause(exc))
                time.sleep(random.uniform(0, min(0.05, 0.001 * 2**attempt)))
            except DBAPIError as exc:
                raise self._error(what, exc) from exc
        raise AssertionError("unreachable")

    @contextmanager
    def _translated(self, what: str) -> Iterator[None]:
        try:
            yield
        except DBAPIError as exc:
            raise self._error(what, exc) from exc

    def _error(self, what: str, exc: DBAPIError) -> StoreError:
        hint = ""
        if "no such table" in str(exc) or "does not exist" in str(exc):
            hint = " (is the schema there? run db.app.upgrade(URL))"
        elif "database is locked" in str(exc):
            hint = " (another process held the write lock too long; is one stuck?)"
        return StoreError(f"application database {self.url}: {what} failed: {_cause(exc)}{hint}")


# --- helpers over a session ---------------------------------------------------------------------------------


def _active(s: Session) -> m.Experiment:
    experiment = s.scalar(select(m.Experiment).where(m.Experiment.is_active))
    if experiment is None:
        raise NoActiveExperimentError(
            "no active experiment: create one with create_experiment(NAME), then activate_experiment(NAME)"
        )
    return experiment


def _find_experiment(s: Session, name: str) -> m.Experiment:
    row = s.scalar(select(m.Experiment).where(m.Experiment.name == name))
    if row is None:
        raise NotFoundError(f"no experiment {name!r}")
    return row


def _running_run(s: Session, experiment: m.Experiment) -> m.Run | None:
    return s.scalar(select(m.Run).where(m.Run.experiment_id == experiment.id, m.Run.state == "running"))


def _next_number(s: Session, experiment: m.Experiment) -> int:
    last = s.scalar(select(func.max(m.Run.number)).where(m.Run.experiment_id == experiment.id))
    return 0 if last is None else last + 1


def _find_run(s: Session, experiment: m.Experiment, number: int) -> m.Run:
    row = s.scalar(select(m.Run).where(m.Run.experiment_id == experiment.id, m.Run.number == number))
    if row is None:
        last = _next_number(s, experiment) - 1
        known = f"runs are 0-{last}" if last >= 0 else "it has no runs yet"
        raise NotFoundError(f"experiment {experiment.name!r} has no run {number} ({known})")
    return row


def _observable_query(experiment: m.Experiment, name: str) -> Any:
    return select(m.Observable).where(m.Observable.experiment_id == experiment.id, m.Observable.name == name)


def _observables(s: Session, experiment: m.Experiment) -> list[m.Observable]:
    query = (
        select(m.Observable)
        .where(m.Observable.experiment_id == experiment.id)
        .order_by(m.Observable.display_order, m.Observable.name)
    )
    return list(s.scalars(query))


def _find_observable(s: Session, experiment: m.Experiment, name: str) -> m.Observable:
    row = s.scalar(_observable_query(experiment, name))
    if row is None:
        known = ", ".join(repr(o.name) for o in _observables(s, experiment)) or "none"
        raise NotFoundError(f"experiment {experiment.name!r} has no observable {name!r} (known: {known})")
    return row


def _measurement_rows(s: Session, run: m.Run) -> list[m.Measurement]:
    query = (
        select(m.Measurement)
        .join(m.Observable)
        .where(m.Measurement.run_id == run.id)
        .order_by(m.Observable.display_order, m.Observable.name)
    )
    return list(s.scalars(query))


def _put_value(row: m.Measurement, value_type: str, value: Value) -> None:
    row.int_value = value if value_type == "integer" else None  # type: ignore[assignment]
    row.float_value = value if value_type == "float" else None  # type: ignore[assignment]
    row.str_value = value if value_type == "string" else None  # type: ignore[assignment]


def _read_setup(s: Session) -> DaqSetup:
    eccs = s.scalars(select(m.EccServer).order_by(m.EccServer.name)).all()
    names = {e.id: e.name for e in eccs}
    sources = s.scalars(select(m.DataSource).order_by(m.DataSource.name)).all()
    return DaqSetup(
        tuple(EccServer(e.name, e.host, e.port) for e in eccs),
        tuple(
            DataSource(
                d.name, names[d.ecc_server_id], d.router_name, d.router_ip, d.router_port, d.router_type, d.is_mutant
            )  # fmt: skip
            for d in sources
        ),
    )


# --- conversions --------------------------------------------------------------------------------------------


def _experiment(row: m.Experiment) -> Experiment:
    return Experiment(row.name, row.is_active, row.created_at)


def _run(row: m.Run) -> Run:
    return Run(
        row.experiment.name, row.number, row.title, row.run_class, row.start_time, row.stop_time,
        {k: dict(v) for k, v in row.config_sets.items()}, row.state,
    )  # fmt: skip


def _observable(row: m.Observable) -> Observable:
    return Observable(row.name, row.value_type, row.units, row.comment, row.display_order)


def _measurement(run: m.Run, row: m.Measurement) -> Measurement:
    obs = row.observable
    value = {"integer": row.int_value, "float": row.float_value, "string": row.str_value}[obs.value_type]
    assert value is not None, f"measurement of {obs.name!r} in run {run.number} holds no {obs.value_type}"
    return Measurement(run.number, obs.name, obs.value_type, obs.units, value)


def _log_entry(row: m.OperatorLogEntry) -> LogEntry:
    return LogEntry(row.time, row.user, row.host, row.action, row.target, row.outcome, row.detail)


def _when(moment: datetime | None) -> str:
    return "?" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _clip(value: str, length: int) -> str:
    return value if len(value) <= length else value[: length - 1] + "…"


def _cause(exc: DBAPIError) -> str:
    return str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc)


def _transient(exc: OperationalError) -> bool:
    """A PostgreSQL serialization failure or deadlock: worth retrying.

    sqlite's "database is locked" is not: it comes after the busy timeout
    (``schema.SQLITE_BUSY_TIMEOUT_S``) has already been waited out.
    """
    return getattr(exc.orig, "sqlstate", None) in ("40001", "40P01")
