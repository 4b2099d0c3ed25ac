"""The `dcs` command: bring a facility up, look at it, read, write and watch devices.

Every sub-command has ``--help``; the ones that print data take ``--json``
for scripts.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from clients.state import StateDir, default_state_dir

DEFAULT_FACILITY = Path("facilities/demo.yaml")
# Piped output (logs, CI, tests) gets wide lines instead of rich's 80-column default.
_WIDTH = None if sys.stdout.isatty() else 160
console = Console(highlight=False, soft_wrap=True, width=_WIDTH)
errors = Console(stderr=True, highlight=False, soft_wrap=True, width=_WIDTH)


class Failure(Exception):
    """A sub-command failed; the message is shown and dcs exits with status 1."""


# --------------------------------------------------------------------- helpers
def _state(args: argparse.Namespace) -> StateDir:
    return StateDir(args.state_dir or default_state_dir())


def _use_tango_host(args: argparse.Namespace) -> None:
    """Point pytango at the facility's database before any Tango call."""
    from clients.facility_runner import resolve_tango_host

    os.environ["TANGO_HOST"] = resolve_tango_host(_state(args))


def _load(path: Path) -> Any:
    from db.facility import ConfigFileError, load_facility

    try:
        return load_facility(path)
    except ConfigFileError as exc:
        raise Failure(f"{path} is not a usable facility file:\n" + "\n".join(f"  {p}" for p in str(exc).splitlines())) from exc


def _when(stamp: float | None) -> str:
    return dt.datetime.fromtimestamp(stamp).strftime("%H:%M:%S.%f")[:-3] if stamp else ""


def _uptime(started: float | None) -> str:
    if not started:
        return ""
    seconds = int(time.time() - started)
    return str(dt.timedelta(seconds=seconds))


def _value_text(value: Any) -> str:
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list):
        return "[" + ", ".join(_value_text(v) for v in value) + "]"
    return str(value)


def _print_json(data: Any) -> None:
    print(json.dumps(data, default=str))


# --------------------------------------------------------------------- up / down / status
def cmd_up(args: argparse.Namespace) -> int:
    from clients import facility_runner

    path = Path(args.file)
    facility = _load(path)
    state = _state(args)
    started = time.monotonic()
    with console.status(f"bringing up facility {facility.facility}") as spinner:

        def progress(message: str) -> None:
            console.print(f"  {message}")
            spinner.update(message)

        try:
            facility_runner.up(facility, path, state, progress, timeout=args.timeout)
        except facility_runner.UpError as exc:
            raise Failure(f"dcs up: {exc}") from exc
    console.print(f"[green]facility {facility.facility} is up[/] in {time.monotonic() - started:.1f} s\n")
    _show_status(state, as_json=False)
    tango_host = os.environ["TANGO_HOST"]
    first = next((d for server in facility.servers.values() for d in server.devices), "sys/database/2")
    console.print(
        f"\nLook at it:\n"
        f"  dcs status                      processes and devices\n"
        f"  dcs read {first}/State\n"
        f"  dcs watch {first}/Heartbeat\n"
        f"  export TANGO_HOST={tango_host}   then, for every Tango tool:\n"
        f"    itango                        DeviceProxy('{first}').State()\n"
        f"    taurus form {first}\n"
        f"  dcs logs NAME [-f]              a process's log (under {state.root / 'log'})\n"
        f"  dcs down                        stop everything"
    )
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from clients import facility_runner

    state = _state(args)
    if facility_runner.down(state, lambda m: console.print(f"  {m}")):
        console.print("[green]stopped[/]")
    else:
        console.print("nothing was running")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    state = _state(args)
    _use_tango_host(args)
    _show_status(state, args.json)
    return 0


def _show_status(state: StateDir, as_json: bool) -> None:
    from clients.facility_runner import device_statuses

    status = state.status()
    running = state.running_supervisor() is not None
    devices = device_statuses(state) if running else []
    if as_json:
        _print_json({"supervisor_running": running, **status, "devices": [d.__dict__ for d in devices]})
        return
    if not running:
        console.print(f"no facility is running from {state.root} (start one with `dcs up`)")
        return
    console.print(f"facility [bold]{status.get('facility')}[/] on TANGO_HOST={status.get('tango_host')}")
    table = Table("process", "kind", "state", "pid", "uptime", "restarts", title="processes", title_justify="left")
    for proc in status["processes"]:
        colour = {"running": "green", "starting": "yellow", "backoff": "red"}.get(proc["state"], "white")
        exit_note = f" (last exit {proc['last_exit']})" if proc["restarts"] else ""
        table.add_row(
            proc["name"], proc["kind"], f"[{colour}]{proc['state']}[/]", str(proc["pid"] or ""),
            _uptime(proc["started_at"] if proc["pid"] else None), f"{proc['restarts']}{exit_note}",
        )  # fmt: skip
    console.print(table)
    if devices:
        table = Table("device", "server", "State", "Status", title="devices", title_justify="left")
        for dev in devices:
            colour = {"ON": "green", "ALARM": "yellow", "INIT": "yellow"}.get(dev.state, "red")
            table.add_row(dev.name, dev.server, f"[{colour}]{dev.state}[/]", escape(dev.status))
        console.print(table)


def cmd_logs(args: argparse.Namespace) -> int:
    from clients.facility_runner import tail_lines

    state = _state(args)
    name = args.name
    for proc in state.status().get("processes", []):
        if name in proc.get("devices", []):
            name = proc["name"]
    path = state.log_file(name)
    if not path.exists():
        known = sorted(p.stem for p in (state.root / "log").glob("*.log"))
        raise Failure(f"no log for {args.name!r} in {path.parent} (there are: {', '.join(known) or 'none'})")
    for line in tail_lines(path, args.lines):
        print(line)
    if args.follow:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            try:
                while True:
                    chunk = handle.read()
                    if chunk:
                        sys.stdout.write(chunk.decode(errors="replace"))
                        sys.stdout.flush()
                    else:
                        time.sleep(0.2)
            except KeyboardInterrupt:
                pass
    return 0


# --------------------------------------------------------------------- facility file vs database
def cmd_apply(args: argparse.Namespace) -> int:
    import tango

    from db import tango_sync

    path = Path(args.file)
    facility = _load(path)
    _use_tango_host(args)
    try:
        db = tango.Database()
        changes = tango_sync.plan(db, facility)
    except tango.DevFailed as exc:
        raise Failure(f"no Tango database at TANGO_HOST={os.environ['TANGO_HOST']}: {exc.args[0].desc.strip()}") from exc
    if args.json:
        _print_json({"changes": [c.__dict__ for c in changes], "applied": bool(changes and args.yes and not args.dry_run)})
    if not changes:
        if not args.json:
            console.print(f"the database already matches {path}: nothing to do")
        return 0
    if not args.json:
        colours = {"add": "green", "change": "yellow", "remove": "red"}
        for change in changes:
            console.print(f"[{colours[change.action]}]{escape(str(change))}[/]")
        console.print(f"{len(changes)} changes")
    if args.dry_run:
        return 0
    if not args.yes:
        if not sys.stdin.isatty():
            raise Failure("not applied: add --yes to write these changes without being asked")
        if input("apply these changes? [y/N] ").strip().lower() not in ("y", "yes"):
            console.print("not applied")
            return 1
    tango_sync.apply(db, facility)
    if not args.json:
        console.print("[green]applied[/] (running servers pick up new properties on Init or restart)")
    return 0


def cmd_dump(args: argparse.Namespace) -> int:
    import tango

    from db import tango_sync

    _use_tango_host(args)
    db = tango.Database()
    name = args.facility
    if name is None:
        known = tango_sync.facilities_in(db)
        if len(known) != 1:
            raise Failure(f"name the facility with --facility (this database has: {', '.join(known) or 'none'})")
        name = known[0]
    try:
        data = tango_sync.dump(db, name)
    except LookupError as exc:
        raise Failure(str(exc)) from exc
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    if args.output:
        Path(args.output).write_text(text)
        console.print(f"wrote {args.output}")
    else:
        print(text, end="")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    facility = _load(Path(args.file))
    devices = sum(len(s.devices) for s in facility.servers.values())
    console.print(f"{args.file}: facility {facility.facility}, {len(facility.servers)} servers, {devices} devices, {len(facility.simulators)} simulators: [green]valid[/]")
    return 0


# --------------------------------------------------------------------- devices
def cmd_read(args: argparse.Namespace) -> int:
    from clients import tango_client

    _use_tango_host(args)
    readings = [tango_client.read(name) for name in args.attributes]
    if args.json:
        _print_json([r.as_dict() for r in readings] if len(readings) > 1 else readings[0].as_dict())
        return 0
    table = Table("attribute", "value", "unit", "quality", "time")
    for r in readings:
        colour = "green" if r.quality == "VALID" else "red"
        table.add_row(f"{r.device}/{r.attribute}", escape(_value_text(r.value)), r.unit, f"[{colour}]{r.quality}[/]", _when(r.time))
    console.print(table)
    return 0


def cmd_write(args: argparse.Namespace) -> int:
    from clients import tango_client

    _use_tango_host(args)
    reading = tango_client.write(args.attribute, args.value)
    if args.json:
        _print_json(reading.as_dict())
    else:
        console.print(escape(f"{reading.device}/{reading.attribute} = {_value_text(reading.value)} {reading.unit} ({reading.quality})"))
    return 0


def cmd_cmd(args: argparse.Namespace) -> int:
    from clients import tango_client

    _use_tango_host(args)
    result = tango_client.run_command(args.device, args.command, args.argument)
    if hasattr(result, "tolist"):
        result = result.tolist()
    if args.json:
        _print_json({"device": args.device, "command": args.command, "result": result})
    elif result is not None:
        console.print(escape(_value_text(result)))
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    from clients import tango_client

    _use_tango_host(args)

    def show(reading: tango_client.Reading) -> None:
        if args.json:
            _print_json(reading.as_dict())
            sys.stdout.flush()
        elif reading.error:
            console.print(f"{_when(reading.time)}  {reading.device}/{reading.attribute}  [red]{escape(reading.error)}[/]")
        else:
            colour = "green" if reading.quality == "VALID" else "red"
            console.print(f"{_when(reading.time)}  {reading.device}/{reading.attribute} = {escape(_value_text(reading.value))}  [{colour}]{reading.quality}[/]")

    if not args.json:
        console.print(f"watching {', '.join(args.attributes)} (change events; Ctrl-C to stop)")
    tango_client.watch(args.attributes, show, count=args.count, timeout=args.timeout)
    return 0


# --------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dcs",
        description="DCS: bring a Tango control system up from a facility file, and work with its devices.",
        epilog="Start with `dcs up` (the demo facility), then `dcs status`. Every command has --help.",
    )
    parser.add_argument(
        "--state-dir", type=Path, default=None,
        help="where a running facility keeps its database, logs and state (default: $DCS_STATE_DIR or ./var)",
    )  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Any, help: str, json_flag: bool = False) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(func=func)
        if json_flag:
            p.add_argument("--json", action="store_true", help="machine-readable output")
        return p

    p = add("up", cmd_up, "apply a facility file, start its simulators and servers, wait until every device answers")
    p.add_argument("file", nargs="?", default=str(DEFAULT_FACILITY), help=f"facility file (default {DEFAULT_FACILITY})")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for each process (default 60)")
    add("down", cmd_down, "stop every process of the running facility")
    add("status", cmd_status, "processes (pid, uptime, restarts) and every device's State and Status", True)
    p = add("logs", cmd_logs, "show a process's log (name a process, like TextDevice/sipm_hv, or one of its devices)")
    p.add_argument("name", help="process name (see `dcs status`) or device name")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    p.add_argument("-n", "--lines", type=int, default=40, help="lines to show (default 40)")

    p = add("apply", cmd_apply, "show how the Tango database differs from a facility file, and write the difference", True)
    p.add_argument("file", help="facility file")
    p.add_argument("--dry-run", action="store_true", help="only show the differences")
    p.add_argument("--yes", "-y", action="store_true", help="write without asking")
    p = add("dump", cmd_dump, "write the live Tango database back out as a facility file")
    p.add_argument("--facility", help="which facility (needed when the database holds several)")
    p.add_argument("-o", "--output", help="file to write (default: standard output)")
    p = add("validate", cmd_validate, "check a facility file without touching any database")
    p.add_argument("file", help="facility file")

    p = add("read", cmd_read, "read attributes: dcs read dcs/hv/sipm/Ch00VMon [more ...]", True)
    p.add_argument("attributes", nargs="+", metavar="DEVICE/ATTRIBUTE")
    p = add("write", cmd_write, "write an attribute and show the value read back", True)
    p.add_argument("attribute", metavar="DEVICE/ATTRIBUTE")
    p.add_argument("value", help="the value (comma-separated for a spectrum; true/false for booleans)")
    p = add("cmd", cmd_cmd, "run a device command: dcs cmd dcs/hv/sipm Reset 3", True)
    p.add_argument("device")
    p.add_argument("command")
    p.add_argument("argument", nargs="?", default=None)
    p = add("watch", cmd_watch, "print change events of attributes as they arrive", True)
    p.add_argument("attributes", nargs="+", metavar="DEVICE/ATTRIBUTE")
    p.add_argument("--count", type=int, default=None, help="stop after this many events")
    p.add_argument("--timeout", type=float, default=None, help="stop after this many seconds")

    from clients.daq_cli import add_daq_commands
    from clients.obs_cli import add_obs_commands

    add_daq_commands(sub)
    add_obs_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from clients.tango_client import ClientError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (Failure, ClientError) as exc:
        errors.print(f"[red]error:[/] {escape(str(exc))}")
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
