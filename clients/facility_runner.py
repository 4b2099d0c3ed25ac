"""`dcs up`, `dcs down` and `dcs status`: a facility on this machine, under one supervisor."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clients.plan import DATABASE_LEVEL, Plan, ProcessSpec, build_plan
from clients.state import StateDir
from db import tango_sync
from db.facility import Facility
from db.tango_db import (
    DEFAULT_TANGO_HOST,
    database_answers,
    embedded_database_command,
    is_local,
    port_open,
    split_tango_host,
)

Progress = Callable[[str], None]


class UpError(Exception):
    """`dcs up` could not finish; the message says which part and why."""


@dataclass
class DeviceStatus:
    name: str
    server: str
    state: str
    status: str


def resolve_tango_host(state: StateDir) -> str:
    """TANGO_HOST from the environment, else the one this state directory last used, else the default."""
    return os.environ.get("TANGO_HOST") or state.saved_tango_host() or DEFAULT_TANGO_HOST


def up(
    facility: Facility,
    facility_file: Path,
    state: StateDir,
    progress: Progress,
    timeout: float = 60.0,
) -> list[tango_sync.Change]:
    """Bring ``facility`` up and return what was changed in the Tango database."""
    tango_host = resolve_tango_host(state)
    os.environ["TANGO_HOST"] = tango_host
    state.tango_host_file.write_text(tango_host)
    _check_simulator_ports(facility, state)
    database = _embedded_database(tango_host, state, progress)
    _ensure_supervisor(state, progress)
    if database is not None and not database_answers(tango_host, 1.0):
        # The database first, alone with whatever already runs: the file is applied to it next.
        running = Plan.load(state.plan).processes if state.plan.exists() else []
        others = [p for p in running if p.name != database.name]
        Plan(facility.facility, str(facility_file.resolve()), tango_host, [database, *others]).save(state.plan)
        _reload(state)
        _wait(lambda: database_answers(tango_host, 1.0), timeout, f"Tango database at {tango_host}", state, database)
    elif not database_answers(tango_host):
        raise UpError(f"no Tango database answers at {tango_host}")
    import tango

    db = tango.Database(*split_tango_host(tango_host))
    changes = tango_sync.apply(db, facility)
    for change in changes:
        progress(f"database: {change}")
    plan = build_plan(facility, facility_file, tango_host, database)
    plan.save(state.plan)
    _reload(state)
    for proc in sorted(plan.processes, key=lambda p: p.level):
        if proc.kind == "database":
            continue
        progress(f"waiting for {proc.name}" + (f" ({', '.join(proc.devices)})" if proc.devices else ""))
        _wait(lambda proc=proc: _process_state(state, proc.name) == "running", timeout, proc.name, state, proc)
    return changes


def _check_simulator_ports(facility: Facility, state: StateDir) -> None:
    """Refuse to start a simulator whose port another program holds: devices would talk to that program."""
    ours = {p["name"] for p in state.status().get("processes", []) if p.get("pid")}
    for name, sim in facility.simulators.items():
        if sim.port and f"sim/{name}" not in ours and port_open(sim.host, sim.port, 0.2):
            raise UpError(
                f"simulator {name}: port {sim.host}:{sim.port} is already in use by another program; "
                f"stop it or choose another port in the facility file"
            )


def _embedded_database(tango_host: str, state: StateDir, progress: Progress) -> ProcessSpec | None:
    """The database process to supervise, or None when one already answers that DCS does not run."""
    current = state.status()
    ours = any(p["kind"] == "database" and p["state"] != "stopped" for p in current.get("processes", []))
    if database_answers(tango_host) and not ours:
        progress(f"using the Tango database at {tango_host}")
        return None
    host, _ = split_tango_host(tango_host)
    if not is_local(host):
        raise UpError(f"no Tango database answers at TANGO_HOST={tango_host}, and {host} is not this machine")
    argv, env = embedded_database_command(tango_host, state.root)
    if not ours:
        progress(f"starting the embedded Tango database at {tango_host} ({env['PYTANGO_DATABASE_NAME']})")
    return ProcessSpec(
        name="tango-db", kind="database", argv=argv, level=DATABASE_LEVEL, cwd=str(state.root), env=env,
        ready_tcp=tango_host,
    )  # fmt: skip


def _ensure_supervisor(state: StateDir, progress: Progress) -> None:
    if state.running_supervisor() is not None:
        return
    progress("starting the supervisor")
    state.supervisor_status.unlink(missing_ok=True)
    state.plan.unlink(missing_ok=True)
    with state.log_file("supervisor").open("ab") as out:
        subprocess.Popen(
            [sys.executable, "-m", "clients.supervisor", "--state-dir", str(state.root)],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            cwd=str(Path(__file__).resolve().parent.parent),
        )  # fmt: skip
    deadline = time.monotonic() + 10
    while state.running_supervisor() is None:
        if time.monotonic() > deadline:
            raise UpError(f"the supervisor did not start; see {state.log_file('supervisor')}")
        time.sleep(0.05)


def _reload(state: StateDir) -> None:
    pid = state.running_supervisor()
    if pid is None:
        raise UpError(f"the supervisor is not running; see {state.log_file('supervisor')}")
    os.kill(pid, signal.SIGHUP)


def _process_state(state: StateDir, name: str) -> str | None:
    for proc in state.status().get("processes", []):
        if proc["name"] == name:
            return proc["state"]
    return None


def _wait(ready: Callable[[], bool], timeout: float, what: str, state: StateDir, proc: ProcessSpec) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise UpError(_not_ready_message(what, timeout, state, proc))
        time.sleep(0.1)


def _not_ready_message(what: str, timeout: float, state: StateDir, proc: ProcessSpec) -> str:
    silent = [d for d in proc.devices if not _ping(d)]
    subject = f"device {silent[0]} (server {proc.name})" if silent else what
    log_path = state.log_file(proc.log_name)
    tail = tail_lines(log_path, 15)
    return (
        f"{subject} did not answer within {timeout:.0f} s.\n"
        f"Last lines of {log_path}:\n" + ("\n".join(f"  {line}" for line in tail) or "  (empty)")
    )


def _ping(device: str) -> bool:
    import tango

    try:
        proxy = tango.DeviceProxy(device)
        proxy.set_timeout_millis(1000)
        proxy.ping()
        return True
    except tango.DevFailed:
        return False


def tail_lines(path: Path, count: int) -> list[str]:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 64 * 1024))
            return handle.read().decode(errors="replace").splitlines()[-count:]
    except OSError:
        return []


def down(state: StateDir, progress: Progress, timeout: float = 60.0) -> bool:
    """Stop the supervisor and everything it runs; False if nothing was running."""
    pid = state.running_supervisor()
    leftovers = [p for p in state.status().get("processes", []) if p.get("pid")]
    if pid is None:
        _kill_leftovers(leftovers, progress)
        return bool(leftovers)
    progress(f"stopping {len(leftovers)} processes")
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while state.running_supervisor() is not None:
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            _kill_leftovers(leftovers, progress)
            break
        time.sleep(0.1)
    return True


def _kill_leftovers(processes: list[dict[str, Any]], progress: Progress) -> None:
    """Processes of a supervisor that died (kill -9): stop them, if they are still the same programs."""
    for proc in processes:
        pid = proc["pid"]
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if [c.decode(errors="replace") for c in cmdline if c] == proc["argv"]:
            progress(f"stopping orphaned {proc['name']} (pid {pid})")
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def device_statuses(state: StateDir) -> list[DeviceStatus]:
    """State and Status of every device the running plan serves."""
    import tango

    out = []
    for proc in state.status().get("processes", []):
        for device in proc.get("devices", []):
            try:
                dev = tango.DeviceProxy(device)
                dev.set_timeout_millis(1000)
                out.append(DeviceStatus(device, proc["name"], str(dev.state()), dev.status()))
            except tango.DevFailed as exc:
                out.append(DeviceStatus(device, proc["name"], "DOWN", exc.args[0].desc.strip()))
    return out
