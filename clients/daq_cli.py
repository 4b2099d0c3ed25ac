"""`dcs daq ...`: run control of the GET DAQ, as the old web DAQ's pages did it, from the command line.

::

    dcs daq status [--watch]                      ECC servers, data routers, the run, the overall state
    dcs daq describe | prepare | configure        system-wide steps, following events until done
    dcs daq start --title T --class Beam          a new run;  dcs daq stop;  dcs daq reset (one step back)
    dcs daq describe --server daq/ecc/0           one ECC server only (troubleshooting)
    dcs daq select-config [CONFIG]                list the config sets, or choose one
    dcs daq experiment [NAME] [--create]          the active experiment
    dcs daq run-sheet [RUN] --set NAME=VALUE      run metadata and observables
    dcs daq runs                                  the run list
    dcs daq easy-setup N FIRST_IP                 ECC servers, routers, sequencer: both databases at once
    dcs daq logs ecc|router NAME                  a log tail

The devices are found from the sequencer's properties (``daq/sequencer/1``
unless ``dcs daq --sequencer NAME``); the application database is
``DCS_DB_URL``, else the sequencer's ``Database`` property, else
``dcs.db`` in the state directory (what the sequencer uses under `dcs up`).
Errors are raised as :class:`DaqError` (a ClientError: one sentence, exit 1).
"""

from __future__ import annotations

import argparse
import getpass
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from rich.console import Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from clients.cli import _print_json, _state, _use_tango_host, console, errors
from clients.tango_client import ClientError
from clients.tango_client import enum_label as _label
from clients.tango_client import one_line as _desc
from clients.tango_client import read_values as _read
from clients.tango_client import state_and_status as _state_and_status

if TYPE_CHECKING:
    import tango

    from db.app import RunStore

SEQUENCER = "daq/sequencer/1"
# sub-command: (sequencer command, ECC server command, what it does)
STEPS = {
    "describe": ("DescribeAll", "Describe", "Idle -> Described, every ECC server (CoBo servers first)"),
    "prepare": ("PrepareAll", "Prepare", "Described -> Prepared, every ECC server (MuTAnT first)"),
    "configure": ("ConfigureAll", "Configure", "Prepared -> Ready, every ECC server (CoBo servers first)"),
    "start": ("StartRun", "Start", "start a new run: Ready -> Running"),
    "stop": ("StopRun", "Stop", "stop the run (Running -> Ready) and file its data on every router"),
    "reset": ("ResetAll", "Reset", "one step back on every ECC server (Ready -> Prepared -> Described -> Idle)"),
}
DEFAULT_TIMEOUT = 180.0
SEQUENCER_ATTRIBUTES = [
    "OverallState",
    "RunNumber",
    "RunTitle",
    "RunClass",
    "RunStart",
    "RunDuration",
    "Experiment",
    "LastError",
]
ECC_ATTRIBUTES = ["CoboState", "Transitioning", "SelectedConfig", "Online", "LastError"]
ROUTER_ATTRIBUTES = ["Online", "StagingClean", "GrawFiles", "WorkingDir"]
STATE_COLOURS = {"Running": "green", "Ready": "cyan", "Prepared": "blue", "Described": "blue", "Idle": "white",
                 "Mixed": "yellow", "Error": "red", "Off": "dim"}  # fmt: skip


class DaqError(ClientError):
    """A `dcs daq` command failed; the message is shown as one sentence and dcs exits with status 1."""


# ============================================================================ Tango helpers
@dataclass
class Topology:
    """The DAQ's devices, as the sequencer's properties list them."""

    sequencer: str
    ecc: list[str]
    mutants: list[str]
    routers: list[str]


def _topology(args: argparse.Namespace) -> Topology:
    import tango

    _use_tango_host(args)
    name = args.sequencer
    try:
        db = tango.Database()
        db.get_device_info(name)
        props = db.get_device_property(name, ["EccServers", "MutantServers", "DataRouters"])
    except tango.DevFailed as exc:
        raise DaqError(
            f"{name}: not usable in the Tango database at TANGO_HOST={os.environ['TANGO_HOST']}: {_desc(exc)} "
            "(is the DAQ facility up, `dcs up FILE`? another sequencer: `dcs daq --sequencer NAME ...`)"
        ) from exc
    routers = [line.split()[0] for line in props["DataRouters"] if line.split()]
    return Topology(name, list(props["EccServers"]), list(props["MutantServers"]), routers)





def _proxy(name: str, timeout: float = 3.0) -> tango.DeviceProxy:
    import tango

    try:
        proxy = tango.DeviceProxy(name)
        proxy.set_timeout_millis(int(timeout * 1000))
    except tango.DevFailed as exc:
        raise DaqError(f"{name}: {_desc(exc)}") from exc
    return proxy
















def _resolve(name: str, known: list[str], family: str) -> str:
    """``daq/ecc/0``, or just ``0``, as one of the DAQ's devices."""
    lowered = {k.lower(): k for k in known}
    for candidate in (name.lower(), f"{family}{name}".lower()):
        if candidate in lowered:
            return lowered[candidate]
    if "/" in name:
        return name
    raise DaqError(f"{name!r} is not one of the DAQ's devices ({', '.join(known) or 'none'})")


# ============================================================================ status
def _gather(top: Topology) -> dict[str, Any]:
    seq = _proxy(top.sequencer, 2.0)
    values, problem = _read(seq, SEQUENCER_ATTRIBUTES)
    state, status = _state_and_status(seq)
    sequencer = {
        "device": top.sequencer, "state": state, "status": status, "error": problem,
        "overall_state": _label(seq, "OverallState", values["OverallState"]),
        "run_number": values["RunNumber"], "run_title": values["RunTitle"], "run_class": values["RunClass"],
        "run_start": values["RunStart"], "run_duration": values["RunDuration"], "experiment": values["Experiment"],
        "last_error": values["LastError"],
    }  # fmt: skip
    eccs = []
    for name in top.ecc:
        proxy = _proxy(name, 2.0)
        values, problem = _read(proxy, ECC_ATTRIBUTES)
        state, status = _state_and_status(proxy)
        eccs.append({
            "device": name, "state": state, "status": status, "error": problem, "mutant": name in top.mutants,
            "cobo_state": _label(proxy, "CoboState", values["CoboState"]), "transitioning": values["Transitioning"],
            "selected_config": values["SelectedConfig"], "online": values["Online"], "last_error": values["LastError"],
        })  # fmt: skip
    routers = []
    for name in top.routers:
        proxy = _proxy(name, 2.0)
        values, problem = _read(proxy, ROUTER_ATTRIBUTES)
        state, status = _state_and_status(proxy)
        routers.append({
            "device": name, "state": state, "status": status, "error": problem, "online": values["Online"],
            "staging_clean": values["StagingClean"], "graw_files": values["GrawFiles"], "working_dir": values["WorkingDir"],
        })  # fmt: skip
    return {"sequencer": sequencer, "ecc_servers": eccs, "routers": routers}


def _tick(value: bool | None, good: bool = True) -> str:
    if value is None:
        return "[dim]?[/]"
    return f"[{'green' if value == good else 'red'}]{'yes' if value else 'no'}[/]"


def _coloured(state: str | None) -> str:
    if state is None:
        return "[red]?[/]"
    return f"[{STATE_COLOURS.get(state, 'white')}]{state}[/]"


def _render_status(data: dict[str, Any]) -> RenderableType:
    ecc = Table("ECC server", "state", "selected config", "transitioning", "online", "last error",
                title="ECC servers", title_justify="left")  # fmt: skip
    for row in data["ecc_servers"]:
        name = row["device"] + (" (MuTAnT)" if row["mutant"] else "")
        if row["error"]:
            ecc.add_row(name, "[red]DOWN[/]", "", "", "", f"[red]{escape(row['error'])}[/]")
            continue
        problem = row["last_error"] or ("" if row["cobo_state"] else row["status"])
        ecc.add_row(
            name, _coloured(row["cobo_state"]), escape(row["selected_config"] or "[none]"),
            "[yellow]yes[/]" if row["transitioning"] else "no", _tick(row["online"]), f"[red]{escape(problem)}[/]",
        )  # fmt: skip
    routers = Table("data router", "online", "staging clean", ".graw files", "working dir",
                    title="data routers", title_justify="left")  # fmt: skip
    for row in data["routers"]:
        if row["error"] or row["online"] is None:
            routers.add_row(row["device"], "[red]?[/]", "", "", f"[red]{escape(row['error'] or row['status'])}[/]")
            continue
        graw = "" if row["graw_files"] is None else str(row["graw_files"])
        routers.add_row(
            row["device"], _tick(row["online"]), _tick(row["staging_clean"]), graw, escape(row["working_dir"] or "")
        )
    seq = data["sequencer"]
    lines = Table.grid(padding=(0, 2))
    lines.add_column(style="bold")
    lines.add_column()
    if seq["error"]:
        lines.add_row("sequencer", f"{seq['device']} [red]DOWN[/]: {escape(seq['error'])}")
    else:
        number = seq["run_number"]
        lines.add_row("experiment", escape(seq["experiment"] or "[none active]"))
        lines.add_row("run", "none yet" if number is None or number < 0 else str(number))
        lines.add_row("title", escape(seq["run_title"] or ""))
        lines.add_row("class", escape(seq["run_class"] or ""))
        lines.add_row("started", escape(seq["run_start"] or ""))
        lines.add_row("duration", escape(seq["run_duration"] or ""))
        lines.add_row("overall state", _coloured(seq["overall_state"]))
        lines.add_row(seq["device"], f"{seq['state']}: {escape(seq['status'])}")
        if seq["last_error"]:
            lines.add_row("last error", f"[red]{escape(seq['last_error'])}[/]")
    return Group(ecc, routers, Text(""), lines)


def cmd_status(args: argparse.Namespace) -> int:
    top = _topology(args)
    if not args.watch:
        data = _gather(top)
        if args.json:
            _print_json(data)
        else:
            console.print(_render_status(data))
        return 0
    try:
        if args.json:
            while True:
                _print_json(_gather(top))
                sys.stdout.flush()
                time.sleep(args.period)
        with Live(
            _render_status(_gather(top)), console=console, refresh_per_second=4, vertical_overflow="visible"
        ) as live:
            while True:
                time.sleep(args.period)
                live.update(_render_status(_gather(top)))
    except KeyboardInterrupt:
        return 0


# ============================================================================ transitions, following events
class Follower:
    """Change events of the acting device and of every ECC server, mirrored for display and for 'done'.

    The acting device is busy from the moment its command returns (the
    sequencer's State is MOVING, an ECC server's Transitioning is true) until
    its sequence ends; done is a busy event followed by a not-busy one, with a
    read once a second as a safety net against a lost event.
    """

    def __init__(self, device: str, on_sequencer: bool, eccs: list[str]) -> None:
        self.device = device
        self.busy_attribute = "State" if on_sequencer else "Transitioning"
        self.eccs = eccs
        self.values: dict[tuple[str, str], Any] = {}
        self.problems: dict[str, str] = {}
        self.changed = threading.Condition()
        self.busy_seen = False
        self.busy_now: bool | None = None
        self.proxies: dict[str, tango.DeviceProxy] = {}
        self._subscriptions: list[tuple[tango.DeviceProxy, int]] = []

    def _busy(self, value: Any) -> bool:
        import tango

        return value == tango.DevState.MOVING if self.busy_attribute == "State" else bool(value)

    def subscribe(self) -> None:
        import tango

        watched = [(self.device, "State")]
        if self.busy_attribute == "State":
            watched.append((self.device, "OverallState"))
        for ecc in self.eccs:
            watched += [(ecc, "CoboState"), (ecc, "Transitioning"), (ecc, "LastError")]
        for device, attribute in dict.fromkeys(watched):
            proxy = self.proxies.setdefault(device, _proxy(device))
            try:
                event_id = proxy.subscribe_event(
                    attribute, tango.EventType.CHANGE_EVENT,
                    lambda event, d=device, a=attribute: self._event(d, a, event), stateless=True,
                )  # fmt: skip
            except tango.DevFailed as exc:
                raise DaqError(f"{device}: cannot follow {attribute}: {_desc(exc)}") from exc
            self._subscriptions.append((proxy, event_id))

    def unsubscribe(self) -> None:
        import tango

        for proxy, event_id in self._subscriptions:
            try:
                proxy.unsubscribe_event(event_id)
            except tango.DevFailed:
                pass
        self._subscriptions.clear()

    def _event(self, device: str, attribute: str, event: tango.EventData) -> None:
        import tango

        with self.changed:
            if event.err:
                self.problems[device] = " ".join(event.errors[0].desc.split())
            else:
                self.problems.pop(device, None)
                invalid = event.attr_value.quality == tango.AttrQuality.ATTR_INVALID
                value = None if invalid else event.attr_value.value
                self.values[(device, attribute)] = value
                if device == self.device and attribute == self.busy_attribute and value is not None:
                    self.busy_now = self._busy(value)
                    self.busy_seen = self.busy_seen or self.busy_now
            self.changed.notify_all()

    def wait(self, timeout: float, on_tick: Callable[[], None]) -> bool:
        """Until the acting device is no longer busy (True) or ``timeout`` runs out (False)."""
        import tango

        deadline = time.monotonic() + timeout
        next_read = time.monotonic() + 1.0
        while True:
            with self.changed:
                self.changed.wait(0.1)
                done = self.busy_seen and self.busy_now is False
            on_tick()
            if done:
                return True
            now = time.monotonic()
            if now >= next_read:
                next_read = now + 1.0
                proxy = self.proxies[self.device]
                try:
                    value = (
                        proxy.state() if self.busy_attribute == "State" else proxy.read_attribute("Transitioning").value
                    )
                    if not self._busy(value):
                        return True
                except tango.DevFailed:
                    pass
            if now >= deadline:
                return False

    def ecc_view(self, ecc: str) -> tuple[str | None, bool, str]:
        """(CoboState label, transitioning, problem) of one ECC server, from its events."""
        with self.changed:
            cobo = self.values.get((ecc, "CoboState"))
            moving = bool(self.values.get((ecc, "Transitioning")))
            problem = self.problems.get(ecc) or self.values.get((ecc, "LastError")) or ""
        label = _label(self.proxies[ecc], "CoboState", cobo) if cobo is not None else None
        return label, moving, problem

    def overall(self) -> str | None:
        with self.changed:
            value = self.values.get((self.device, "OverallState"))
        return _label(self.proxies[self.device], "OverallState", value) if value is not None else None


class Progress:
    """What the operator sees while a sequence runs: a live table on a terminal, change lines otherwise."""

    def __init__(self, follower: Follower, title: str, live: bool) -> None:
        self.follower = follower
        self.title = title
        self.spinners = {ecc: Spinner("dots", style="yellow") for ecc in follower.eccs}
        self.started = time.monotonic()
        self.shown: dict[str, str] = {}
        self.live = (
            Live(self.render(), console=console, refresh_per_second=10, vertical_overflow="visible") if live else None
        )

    def __enter__(self) -> Progress:
        if self.live is not None:
            self.live.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        if self.live is not None:
            self.live.update(self.render(final=True))
            self.live.stop()

    def render(self, final: bool = False) -> RenderableType:
        table = Table("ECC server", "state", "last error", title=self.title, title_justify="left", box=None)
        for ecc in self.follower.eccs:
            state, moving, problem = self.follower.ecc_view(ecc)
            cell: RenderableType = _coloured(state) if state or not problem else "[red]?[/]"
            if moving and not final:
                spinner = self.spinners[ecc]
                spinner.update(text=Text.from_markup(f"{_coloured(state)} [yellow]changing state[/]"))
                cell = spinner
            table.add_row(ecc, cell, f"[red]{escape(problem)}[/]")
        overall = self.follower.overall()
        footer = f"{time.monotonic() - self.started:.1f} s" + (
            f"   overall state {_coloured(overall)}" if overall else ""
        )
        return Group(table, Text.from_markup(footer))

    def tick(self) -> None:
        if self.live is not None:
            self.live.update(self.render())
            return
        lines = {}
        for ecc in self.follower.eccs:
            state, moving, problem = self.follower.ecc_view(ecc)
            lines[ecc] = f"{state or '?'}{' (changing state)' if moving else ''}{f': {problem}' if problem else ''}"
        overall = self.follower.overall()
        if overall:
            lines[self.follower.device] = f"overall state {overall}"
        for name, text in lines.items():
            if self.shown.get(name) != text:
                self.shown[name] = text
                console.print(f"  {time.monotonic() - self.started:5.1f} s  {name}: {escape(text)}")


def cmd_step(args: argparse.Namespace) -> int:
    import tango

    top = _topology(args)
    seq_command, ecc_command, _ = STEPS[args.step]
    if args.server:
        device, command = _resolve(args.server, top.ecc, "daq/ecc/"), ecc_command
        eccs = [device]
        if args.step == "start" and (args.title is not None or args.run_class is not None):
            raise DaqError("--title and --class belong to a run: use them without --server (`dcs daq start`)")
        if args.step in ("start", "stop") and not args.json:
            errors.print(
                f"[yellow]note:[/] {args.step} on {device} alone records no run and files no data "
                f"(use `dcs daq {args.step}` for runs)"
            )
    else:
        device, command, eccs = top.sequencer, seq_command, top.ecc
    proxy = _proxy(device, 10.0)
    if args.step == "start" and not args.server:
        for attribute, value in (("RunTitle", args.title), ("RunClass", args.run_class)):
            if value is not None:
                try:
                    proxy.write_attribute(attribute, value)
                except tango.DevFailed as exc:
                    raise DaqError(_desc(exc)) from exc
    follower = Follower(device, not args.server, eccs)
    started = time.monotonic()
    try:
        if not args.no_wait:
            follower.subscribe()
        try:
            proxy.command_inout(command)
        except tango.DevFailed as exc:
            if args.json:
                _print_json({"device": device, "command": command, "ok": False, "error": _desc(exc)})
            raise DaqError(_desc(exc)) from exc
        if args.no_wait:
            if args.json:
                _print_json({"device": device, "command": command, "started": True})
            else:
                console.print(f"{device}: {command} started (follow it with `dcs daq status --watch`)")
            return 0
        interactive = console.is_terminal and not args.json
        if not args.json and not interactive:
            console.print(f"{device}: {command} ...")
        try:
            with Progress(follower, f"{device}: {command}", live=interactive) as progress:
                finished = follower.wait(args.timeout, lambda: None if args.json else progress.tick())
        except KeyboardInterrupt:
            errors.print(f"interrupted: {command} goes on in {device}; follow it with `dcs daq status --watch`")
            raise
    finally:
        follower.unsubscribe()
    elapsed = time.monotonic() - started
    if not finished:
        raise DaqError(
            f"{device}: {command} still running after {args.timeout:g} s; it goes on in the device "
            "(follow it with `dcs daq status --watch`)"
        )
    return _report_step(args, device, command, eccs, elapsed)


def _report_step(args: argparse.Namespace, device: str, command: str, eccs: list[str], elapsed: float) -> int:
    proxy = _proxy(device)
    if args.server:
        values, problem = _read(proxy, ["CoboState", "LastError"])
        state = _label(proxy, "CoboState", values["CoboState"])
        error = problem or values["LastError"] or ""
        result: dict[str, Any] = {"device": device, "command": command, "ok": not error, "cobo_state": state}
    else:
        values, problem = _read(proxy, ["OverallState", "LastError", "RunNumber", "Experiment", "RunDuration"])
        state = _label(proxy, "OverallState", values["OverallState"])
        error = problem or values["LastError"] or ""
        result = {"device": device, "command": command, "ok": not error, "overall_state": state,
                  "run_number": values["RunNumber"], "experiment": values["Experiment"]}  # fmt: skip
    servers = {}
    for ecc in eccs:
        ecc_proxy = _proxy(ecc)
        ecc_values, _ = _read(ecc_proxy, ["CoboState"])
        servers[ecc] = _label(ecc_proxy, "CoboState", ecc_values["CoboState"])
    result.update(servers=servers, last_error=error, seconds=round(elapsed, 2))
    if args.json:
        _print_json(result)
    if error:
        raise DaqError(f"{device}: {command} failed: {error}")
    if not args.json:
        detail = f"state {_coloured(state)}"
        if command == "StartRun":
            detail = f"run {values['RunNumber']} of {escape(str(values['Experiment']))} started; {detail}"
        elif command == "StopRun":
            detail = f"run {values['RunNumber']} stopped after {values['RunDuration']}, data filed; {detail}"
        console.print(f"[green]{device}: {command} done[/] in {elapsed:.1f} s: {detail}")
    return 0


# ============================================================================ config sets
def cmd_select_config(args: argparse.Namespace) -> int:
    import tango

    top = _topology(args)
    servers = [_resolve(args.server, top.ecc, "daq/ecc/")] if args.server else top.ecc
    if args.refresh:
        for name in servers:
            try:
                _proxy(name, 10.0).command_inout("RefreshConfigs")
            except tango.DevFailed as exc:
                raise DaqError(_desc(exc)) from exc
    if args.config is None:
        listing = {}
        for name in servers:
            values, problem = _read(_proxy(name), ["SelectedConfig", "AvailableConfigs"])
            listing[name] = {"selected": values["SelectedConfig"] or "", "available": values["AvailableConfigs"] or [],
                             "error": problem}  # fmt: skip
        if args.json:
            _print_json(listing)
            return 0
        table = Table("ECC server", "config sets offered (* selected)", title="config sets (describe/prepare/configure)",
                      title_justify="left")  # fmt: skip
        for name, row in listing.items():
            if row["error"]:
                table.add_row(name, f"[red]{escape(row['error'])}[/]")
                continue
            offered = [
                f"[bold]* {escape(c)}[/]" if c == row["selected"] else f"  {escape(c)}" for c in row["available"]
            ]
            if row["selected"] and row["selected"] not in row["available"]:
                offered.insert(0, f"[bold]* {escape(row['selected'])}[/] [yellow](not offered)[/]")
            table.add_row(name, "\n".join(offered) or "[yellow]none (is the ECC server online? --refresh)[/]")
        console.print(table)
        return 0
    chosen, refused = [], []
    for name in servers:
        try:
            _proxy(name, 10.0).command_inout("SelectConfig", args.config)
            chosen.append(name)
        except tango.DevFailed as exc:
            refused.append(_desc(exc))
    if args.json:
        _print_json({"config": args.config, "selected_on": chosen, "refused": refused})
    elif chosen:
        console.print(f"[green]{escape(args.config)}[/] selected on {', '.join(chosen)}")
    if refused:
        raise DaqError("; ".join(refused))
    return 0


# ============================================================================ application database
def _store_url(args: argparse.Namespace) -> str:
    from db.app import database_url
    from db.tango_db import database_answers

    if os.environ.get("DCS_DB_URL"):
        return os.environ["DCS_DB_URL"]
    _use_tango_host(args)
    if database_answers(os.environ["TANGO_HOST"], 1.0):
        import tango

        try:
            configured = tango.Database().get_device_property(args.sequencer, ["Database"])["Database"]
            if configured and configured[0]:
                return configured[0]
        except tango.DevFailed:
            pass
    return database_url(_state(args).root)


@contextmanager
def _open_store(args: argparse.Namespace) -> Iterator[RunStore]:
    from db.app import NoActiveExperimentError, RunStore, StoreError

    try:
        store = RunStore.open(_store_url(args))
    except StoreError as exc:
        raise DaqError(str(exc)) from exc
    try:
        yield store
    except NoActiveExperimentError as exc:
        raise DaqError("no active experiment: create and choose one with `dcs daq experiment NAME --create`") from exc
    except StoreError as exc:
        raise DaqError(str(exc)) from exc
    finally:
        store.close()


def _who() -> tuple[str, str]:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user} (dcs daq)", socket.gethostname()


def _log(store: RunStore, action: str, target: str, outcome: str, detail: str = "") -> None:
    from db.app import StoreError

    try:
        store.log(*_who(), action, target, outcome, detail)
    except StoreError as exc:  # the operator log must not turn a done action into a failure
        errors.print(f"[yellow]note:[/] not recorded in the operator log: {escape(str(exc))}")


def _utc(moment: Any) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment else ""


def cmd_experiment(args: argparse.Namespace) -> int:
    from clients import daq_setup

    with _open_store(args) as store:
        if args.name is not None:
            known = {e.name for e in store.experiments()}
            if args.name not in known:
                if not args.create:
                    raise DaqError(
                        f"no experiment {args.name!r} (known: {', '.join(map(repr, sorted(known))) or 'none'}); "
                        "add --create to create it"
                    )
                store.create_experiment(args.name)
                if not args.json:
                    console.print(f"created experiment {escape(args.name)}")
            active = store.active_experiment()
            if active is None or active.name != args.name:
                top = _topology(args)
                activity = daq_setup.ecc_activity(top.ecc)
                for unknown in (a for a in activity if a.cobo_state is None):
                    errors.print(f"[yellow]note:[/] {unknown.device}: state unknown ({escape(unknown.problem)})")
                why = daq_setup.busy_reason(activity)
                from db.app import RefusedError

                try:
                    store.activate_experiment(args.name, busy_reason=why)
                except RefusedError as exc:
                    _log(store, "ActivateExperiment", args.name, "refused", str(exc))
                    raise
                _log(store, "ActivateExperiment", args.name, "ok", f"was {active.name if active else 'none'}")
        experiments = store.experiments()
    if args.json:
        _print_json({
            "active": next((e.name for e in experiments if e.is_active), None),
            "experiments": [{"name": e.name, "active": e.is_active, "created": e.created_at.isoformat()} for e in experiments],
        })  # fmt: skip
        return 0
    table = Table("", "experiment", "created", title="experiments", title_justify="left")
    for e in experiments:
        table.add_row("[green]*[/]" if e.is_active else "", escape(e.name), _utc(e.created_at))
    console.print(table)
    active_name = next((e.name for e in experiments if e.is_active), None)
    console.print(f"active experiment: [bold]{escape(active_name)}[/]" if active_name else "no active experiment")
    return 0


def _run_dict(run: Any) -> dict[str, Any]:
    return {
        "experiment": run.experiment, "number": run.number, "title": run.title, "run_class": run.run_class,
        "state": run.state, "start": run.start_time.isoformat(), "stop": run.stop_time.isoformat() if run.stop_time else None,
        "duration": run.duration_string, "config_sets": run.config_set_names,
    }  # fmt: skip


def cmd_runs(args: argparse.Namespace) -> int:
    with _open_store(args) as store:
        experiment = store.active_experiment()
        runs = store.runs(limit=args.limit)
    if args.json:
        _print_json([_run_dict(r) for r in runs])
        return 0
    name = experiment.name if experiment else "?"
    table = Table("run", "title", "class", "start", "duration", "state", title=f"runs of {name}", title_justify="left")
    colours = {"running": "green", "stopped": "white", "aborted": "red"}
    for r in runs:
        table.add_row(str(r.number), escape(r.title), r.run_class, _utc(r.start_time), r.duration_string,
                      f"[{colours.get(r.state, 'white')}]{r.state}[/]")  # fmt: skip
    console.print(table if runs else f"experiment {escape(name)} has no runs yet")
    return 0


def _assignment(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise DaqError(f"--set {text!r}: write NAME=VALUE (e.g. --set anode_voltage=1200)")
    return name.strip(), value


def cmd_run_sheet(args: argparse.Namespace) -> int:
    if (args.units is not None or args.comment is not None) and not args.add_observable:
        raise DaqError("--units and --comment describe a new observable: use them with --add-observable NAME TYPE")
    values = dict(_assignment(text) for text in args.set or [])
    with _open_store(args) as store:
        number = args.run
        if number is None:
            current = store.current_run() or store.latest_run()
            if current is None:
                experiment = store.active_experiment()
                if experiment is None:
                    raise DaqError(
                        "no active experiment: create and choose one with `dcs daq experiment NAME --create`"
                    )
                raise DaqError(f"experiment {experiment.name!r} has no runs yet (start one with `dcs daq start`)")
            number = current.number
        run = store.run(number)
        notes = []
        if args.add_observable:
            name, value_type = args.add_observable
            obs = store.add_observable(name, value_type, units=args.units or "", comment=args.comment or "")
            notes.append(f"added observable {obs.name} ({obs.value_type}{f', {obs.units}' if obs.units else ''})")
        if values:
            stored = store.set_measurements(number, values)
            notes.append("set " + ", ".join(f"{m.observable} = {m.value}" for m in stored))
        if args.same_as_previous:
            filled = store.same_as_previous(number)
            notes.append(
                f"copied from the previous run: {', '.join(f'{m.observable} = {m.value}' for m in filled)}"
                if filled else "nothing to copy from the previous run"
            )  # fmt: skip
        run = store.run(number)
        observables = store.observables()
        measured = {m.observable: m.value for m in store.measurements(number)}
    sheet = [
        {"name": o.name, "value_type": o.value_type, "units": o.units, "comment": o.comment,
         "display_order": o.display_order, "value": measured.get(o.name)}
        for o in observables
    ]  # fmt: skip
    if args.json:
        _print_json({"run": _run_dict(run), "observables": sheet})
        return 0
    for note in notes:
        console.print(f"[green]{escape(note)}[/]")
    info = Table.grid(padding=(0, 2))
    info.add_column(style="bold")
    info.add_column()
    for label, value in (
        ("experiment", run.experiment), ("run", str(run.number)), ("title", run.title), ("class", run.run_class),
        ("state", run.state), ("start", _utc(run.start_time)), ("stop", _utc(run.stop_time)),
        ("duration", run.duration_string),
        ("config sets", ", ".join(f"{k}: {v}" for k, v in run.config_set_names.items())),
    ):  # fmt: skip
        info.add_row(label, escape(value))
    console.print(info)
    table = Table("observable", "value", "units", "type", "comment", title="run sheet", title_justify="left")
    for row in sheet:
        value = "" if row["value"] is None else str(row["value"])
        table.add_row(
            escape(row["name"]), escape(value), escape(row["units"]), row["value_type"], escape(row["comment"])
        )
    console.print(table if sheet else "no observables yet (add one with --add-observable NAME TYPE)")
    return 0


# ============================================================================ easy setup
def cmd_easy_setup(args: argparse.Namespace) -> int:
    import tango

    from clients import daq_setup
    from db.app import StoreError, plan_easy_setup

    try:
        setup = plan_easy_setup(
            args.n_cobos, args.first_ip, args.ecc_port, args.multiple_ecc, args.mutant, args.router_port,
            first_router_ip=args.router_ip, mutant_ecc_ip=args.mutant_ecc_ip, mutant_router_ip=args.mutant_router_ip,
        )  # fmt: skip
    except StoreError as exc:
        raise DaqError(str(exc)) from exc
    _use_tango_host(args)
    ssh = daq_setup.SshOptions(args.ssh_user, args.key_file, args.known_hosts)
    try:
        db = tango.Database()
        plan = daq_setup.plan_tango(db, setup, args.sequencer, ssh)
        activity = daq_setup.ecc_activity(plan.previous_ecc)
        why = daq_setup.busy_reason(activity)
    except tango.DevFailed as exc:
        raise DaqError(f"Tango database at TANGO_HOST={os.environ['TANGO_HOST']}: {_desc(exc)}") from exc
    except daq_setup.SetupError as exc:
        raise DaqError(f"easy setup refused: {exc}") from exc
    result: dict[str, Any] = {
        "setup": {
            "ecc_servers": [asdict(e) | {"device": plan.ecc_devices[e.name]} for e in setup.ecc_servers],
            "data_sources": [
                asdict(s) | {"router_device": plan.router_devices[s.router_name]} for s in setup.data_sources
            ],
        },
        "tango": daq_setup.data(plan),
        "refused": why,
        "applied": False,
    }
    if not args.json:
        _show_setup(setup, plan)
        for unknown in (a for a in activity if a.cobo_state is None):
            errors.print(f"[yellow]note:[/] {unknown.device}: state unknown ({escape(unknown.problem)})")
    if why:
        if args.json:
            _print_json(result)
        raise DaqError(f"easy setup refused: {why}; bring every ECC server back to Idle first (`dcs daq reset`)")
    if args.dry_run:
        if args.json:
            _print_json(result)
        else:
            console.print("dry run: nothing written")
        return 0
    if not args.yes:
        if not sys.stdin.isatty():
            raise DaqError("not applied: add --yes to replace the DAQ setup without being asked")
        if input("replace the DAQ setup in both databases? [y/N] ").strip().lower() not in ("y", "yes"):
            console.print("not applied")
            return 1
    summary = f"{len(setup.ecc_servers)} ECC servers, {len(setup.data_sources)} data sources"
    with _open_store(args) as store:
        try:
            daq_setup.apply(db, store, setup, plan, backup_dir=_state(args).root)
        except daq_setup.SetupError as exc:
            _log(store, "EasySetup", plan.sequencer, "failed", str(exc))
            raise DaqError(str(exc)) from exc
        _log(store, "EasySetup", plan.sequencer, "ok", summary)
    result["applied"] = True
    if args.restart:
        result["restarted"] = daq_setup.restart_servers(plan)
    if args.json:
        _print_json(result)
        return 0
    console.print(
        f"[green]applied[/]: {summary} in the application database, {len(plan.changes)} changes in the Tango "
        f"database at {plan.tango_host}"
    )
    _after_setup(args, plan, result.get("restarted"))
    return 0


def _show_setup(setup: Any, plan: Any) -> None:
    ecc = Table("ECC server", "device", "host", "port", "data sources", title="ECC servers", title_justify="left")
    for e in setup.ecc_servers:
        sources = ", ".join(s.name for s in setup.sources_of(e.name))
        ecc.add_row(e.name, plan.ecc_devices[e.name], e.host, str(e.port), escape(sources))
    sources = Table("data source", "ECC server", "data router", "router device", "router address", "type",
                    title="data sources", title_justify="left")  # fmt: skip
    for s in setup.data_sources:
        sources.add_row(escape(s.name), s.ecc_server, s.router_name, plan.router_devices[s.router_name],
                        f"{s.router_ip}:{s.router_port}", s.router_type)  # fmt: skip
    console.print(ecc)
    console.print(sources)
    colours = {"+": "green", "~": "yellow", "-": "red"}
    console.print(f"Tango database at {plan.tango_host}: {len(plan.changes) or 'no'} changes")
    for change in plan.changes:
        console.print(f"  [{colours.get(change[0], 'white')}]{escape(change)}[/]")


def _after_setup(args: argparse.Namespace, plan: Any, restarted: dict[str, str] | None) -> None:
    from clients.plan import Plan

    if restarted is not None:
        for server, outcome in restarted.items():
            colour = "green" if outcome == "restarted" else "yellow"
            console.print(f"  {server}: [{colour}]{escape(outcome)}[/]")
    elif plan.servers:
        console.print(
            "Running device servers keep serving the previous devices until they restart: "
            f"restart {', '.join(plan.servers)} (run easy setup with --restart, or "
            f"`dcs cmd dserver/{plan.servers[0]} RestartServer` for each, or `dcs down && dcs up`)."
        )
    state = _state(args)
    if not state.plan.exists():
        return
    try:
        running = Plan.load(state.plan)
    except (OSError, ValueError, KeyError, TypeError):
        return
    managed = {p.name for p in running.processes}
    if any(server in managed for server in plan.servers):
        console.print(
            f"[yellow]The facility file {running.facility_file} still declares the previous DAQ devices[/]: "
            "`dcs up` applies it to the Tango database again and would put them back. Keep this setup there with\n"
            f"  dcs dump --facility {running.facility} -o FILE      then `dcs up FILE`"
        )


# ============================================================================ logs
def cmd_logs(args: argparse.Namespace) -> int:
    import tango

    from clients.facility_runner import tail_lines

    top = _topology(args)
    if args.kind == "router":
        device = _resolve(args.name, top.routers, "daq/router/")
        try:
            text = _proxy(device, 15.0).command_inout("TailLog", args.lines)
        except tango.DevFailed as exc:
            raise DaqError(_desc(exc)) from exc
        if args.json:
            _print_json({"device": device, "source": "router log (TailLog)", "lines": text.splitlines()})
        else:
            sys.stdout.write(text if text.endswith("\n") or not text else text + "\n")
        return 0
    device = _resolve(args.name, top.ecc, "daq/ecc/")
    try:
        props = tango.Database().get_device_property(device, ["Host", "Port"])
    except tango.DevFailed as exc:
        raise DaqError(f"{device}: {_desc(exc)}") from exc
    where = f"{(props['Host'] or ['127.0.0.1'])[0]}:{(props['Port'] or ['8083'])[0]}"
    note = (
        f"{device}: the ECC server's own log (getEccSoapServer at {where}) stays on its host: the EccServer device "
        "has no command to fetch it"
    )
    state = _state(args)
    process = next(
        (
            p["name"]
            for p in state.status().get("processes", [])
            if device.lower() in [d.lower() for d in p.get("devices", [])]
        ),
        None,
    )
    path = state.log_file(process) if process else None
    if path is None or not path.exists():
        raise DaqError(
            f"{note}, and no DCS device server log for it is in {state.root / 'log'} (is it run by `dcs up` there?)"
        )
    lines = tail_lines(path, args.lines)
    if args.json:
        _print_json(
            {
                "device": device,
                "source": f"DCS device server {process}",
                "note": note,
                "path": str(path),
                "lines": lines,
            }
        )
        return 0
    errors.print(
        f"[yellow]{escape(note)}[/]; here is the log of the DCS device server {process} that drives it ({path}):"
    )
    for line in lines:
        print(line)
    return 0


# ============================================================================ parser
def add_daq_commands(sub: Any) -> None:
    """Register `dcs daq` and its sub-commands on the `dcs` parser's sub-parsers."""
    daq = sub.add_parser(
        "daq",
        help="GET DAQ run control: status, describe ... start/stop, config sets, experiments, run sheets, easy setup",
        description="Run control of the GET DAQ: the sequencer, ECC servers and data routers, and the run records.",
        epilog="Start with `dcs daq status`. Every sub-command has --help.",
    )
    daq.add_argument("--sequencer", default=SEQUENCER, help=f"the DaqSequencer device (default {SEQUENCER})")
    commands = daq.add_subparsers(dest="daq_command", required=True, metavar="COMMAND")

    def add(name: str, func: Any, help: str, json_flag: bool = True, more: str = "") -> argparse.ArgumentParser:
        p = commands.add_parser(name, help=help, description=help + more)
        p.set_defaults(func=func)
        if json_flag:
            p.add_argument("--json", action="store_true", help="machine-readable output")
        return p

    p = add("status", cmd_status, "ECC servers, data routers, the current run and the overall state")
    p.add_argument("--watch", "-w", action="store_true", help="refresh until Ctrl-C")
    p.add_argument("--period", type=float, default=1.0, help="seconds between refreshes with --watch (default 1)")

    for step, (seq_command, ecc_command, what) in STEPS.items():
        more = (
            "; shows each ECC server's state from its events until the sequence ends: exit 0 when it succeeds, "
            "1 with the sequencer's LastError when it fails"
        )
        p = add(step, cmd_step, what, more=more)
        p.set_defaults(step=step)
        p.add_argument(
            "--server",
            metavar="NAME",
            help=f"only this ECC server ({ecc_command} on e.g. daq/ecc/0), not {seq_command}",
        )
        p.add_argument(
            "--timeout", type=float, default=DEFAULT_TIMEOUT, help=f"seconds to follow (default {DEFAULT_TIMEOUT:g})"
        )
        p.add_argument("--no-wait", action="store_true", help="return once the command is accepted")
        if step == "start":
            p.add_argument("--title", help="title of the new run")
            p.add_argument(
                "--class", dest="run_class", metavar="CLASS", help="Testing, Production, Beam, Pulser or Junk"
            )
        else:
            p.set_defaults(title=None, run_class=None)

    p = add("select-config", cmd_select_config, "list the config sets each ECC server offers, or choose one")
    p.add_argument(
        "config", nargs="?", metavar="CONFIG", help="describe/prepare/configure, e.g. cobo0/experiment/experiment"
    )
    p.add_argument("--server", metavar="NAME", help="only this ECC server")
    p.add_argument("--refresh", action="store_true", help="ask the ECC servers again for the config sets they offer")

    p = add(
        "experiment",
        cmd_experiment,
        "show the experiments, or make NAME the active one (only while every ECC server is Idle)",
    )
    p.add_argument("name", nargs="?", metavar="NAME")
    p.add_argument("--create", action="store_true", help="create NAME if it does not exist")

    p = add("run-sheet", cmd_run_sheet, "a run's metadata and observables; fill values, copy the previous run's")
    p.add_argument("run", nargs="?", type=int, metavar="RUN", help="run number (default: the current or last run)")
    p.add_argument("--set", action="append", metavar="NAME=VALUE", help="a value for an observable (repeatable); typed")
    p.add_argument(
        "--same-as-previous", action="store_true", help="copy the previous run's values where this run has none"
    )
    p.add_argument(
        "--add-observable", nargs=2, metavar=("NAME", "TYPE"), help="a new run-sheet field: integer, float or string"
    )
    p.add_argument("--units", help="units of the new observable")
    p.add_argument("--comment", help="comment of the new observable")

    p = add("runs", cmd_runs, "the runs of the active experiment, newest first")
    p.add_argument("--limit", type=int, default=50, help="how many (default 50)")

    p = add(
        "easy-setup",
        cmd_easy_setup,
        "replace the DAQ setup: N CoBos (and a MuTAnT) in the application and Tango databases",
    )
    p.add_argument("n_cobos", type=int, metavar="N_COBOS")
    p.add_argument("first_ip", metavar="FIRST_IP", help="address of the first ECC server (the others: +1, +2, ...)")
    p.add_argument(
        "--multiple-ecc", action="store_true", help="one ECC server per CoBo (default: one ECC server for all)"
    )
    p.add_argument("--mutant", action="store_true", help="add the MuTAnT and its data router")
    p.add_argument("--ecc-port", type=int, default=8083, help="ECC servers' SOAP port (default 8083)")
    p.add_argument("--router-port", type=int, default=46005, help="data routers' port (default 46005)")
    p.add_argument("--router-ip", metavar="IP", help="address of the first data router (default FIRST_IP)")
    p.add_argument("--mutant-ecc-ip", metavar="IP", help="the MuTAnT's ECC server (with --multiple-ecc)")
    p.add_argument("--mutant-router-ip", metavar="IP", help="the MuTAnT's data router")
    p.add_argument("--ssh-user", help="SSH user for the data routers' nodes (default: the existing routers')")
    p.add_argument("--key-file", help="SSH private key for the routers' nodes (default: the existing routers')")
    p.add_argument("--known-hosts", help="known_hosts file for the routers' nodes (default: the existing routers')")
    p.add_argument("--dry-run", action="store_true", help="show the setup and the changes, write nothing")
    p.add_argument("--yes", "-y", action="store_true", help="apply without asking")
    p.add_argument(
        "--restart", action="store_true", help="then restart the running device servers so they serve the new devices"
    )

    p = add("logs", cmd_logs, "the end of a data router's log, or what there is for an ECC server")
    p.add_argument("kind", choices=("ecc", "router"))
    p.add_argument("name", metavar="NAME", help="device, e.g. daq/router/0 (or just 0)")
    p.add_argument("-n", "--lines", type=int, default=40, help="lines to show (default 40)")
