"""The process supervisor behind `dcs up`: starts a plan level by level and keeps it running.

It runs detached, one per state directory. It reads ``plan.json`` at start
and on SIGHUP (``dcs up`` again), starts what is missing, stops what the
plan no longer lists, restarts a crashed process with back-off, and writes
what it is doing to ``supervisor.json`` for `dcs status`. SIGTERM (`dcs
down`) stops everything, highest level first.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clients.plan import Plan, ProcessSpec, tool_path
from clients.state import StateDir
from db.tango_db import port_open, split_tango_host

log = logging.getLogger("dcs.supervisor")

LOOP_PERIOD = 0.2
LEVEL_TIMEOUT = 30.0  # after this a level's laggards no longer hold back the next level
STOP_GRACE = 5.0
STABLE_AFTER = 30.0  # a process that ran this long starts its back-off afresh
MAX_BACKOFF = 30.0


@dataclass
class Supervised:
    """A planned process and what happened to it."""

    spec: ProcessSpec
    popen: subprocess.Popen[bytes] | None = None
    state: str = "waiting"  # waiting, starting, running, backoff, stopped
    started_at: float | None = None
    ready_at: float | None = None
    restarts: int = 0
    failures_in_a_row: int = 0
    last_exit: int | None = None
    next_start: float = 0.0
    argv: list[str] = field(default_factory=list)  # as started, variables expanded

    def status(self) -> dict[str, Any]:
        return {
            "name": self.spec.name,
            "kind": self.spec.kind,
            "level": self.spec.level,
            "pid": self.popen.pid if self.popen and self.popen.poll() is None else None,
            "state": self.state,
            "started_at": self.started_at,
            "ready_at": self.ready_at,
            "restarts": self.restarts,
            "last_exit": self.last_exit,
            "next_start": self.next_start if self.state == "backoff" else None,
            "devices": self.spec.devices,
            "argv": self.argv or self.spec.argv,
        }


class Supervisor:
    """Keeps one plan's processes running."""

    def __init__(self, state: StateDir) -> None:
        self.state = state
        self.processes: dict[str, Supervised] = {}
        self.plan: Plan | None = None
        self.reload_requested = True
        self.stop_requested = False
        self._last_status = ""

    # ------------------------------------------------------------------ main loop
    def run(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: self._request_stop())
        signal.signal(signal.SIGINT, lambda *_: self._request_stop())
        signal.signal(signal.SIGHUP, lambda *_: self._request_reload())
        self.state.supervisor_pid.write_text(str(os.getpid()))
        log.info("supervisor %d started for %s", os.getpid(), self.state.root)
        try:
            while not self.stop_requested:
                if self.reload_requested:
                    self.reload_requested = False
                    self._reload()
                self._reap()
                self._start_due()
                self._check_ready()
                self._write_status()
                time.sleep(LOOP_PERIOD)
        finally:
            self._stop_all()
            self._write_status(final=True)
            self.state.supervisor_pid.unlink(missing_ok=True)
            log.info("supervisor %d stopped", os.getpid())

    def _request_stop(self) -> None:
        self.stop_requested = True

    def _request_reload(self) -> None:
        self.reload_requested = True

    def _reload(self) -> None:
        try:
            plan = Plan.load(self.state.plan)
        except FileNotFoundError:
            return
        except (ValueError, KeyError, TypeError) as exc:
            log.error("plan %s unreadable, keeping the current one: %s", self.state.plan, exc)
            return
        self.plan = plan
        os.environ["TANGO_HOST"] = plan.tango_host
        wanted = {p.name: p for p in plan.processes}
        for name in sorted(self.processes, key=lambda n: -self.processes[n].spec.level):
            current = self.processes[name]
            if name not in wanted or _changed(current.spec, wanted[name]):
                log.info("%s: no longer planned as it runs; stopping it", name)
                self._stop(current)
                del self.processes[name]
        for name, spec in wanted.items():
            if name not in self.processes:
                self.processes[name] = Supervised(spec)

    # ------------------------------------------------------------------ starting
    def _start_due(self) -> None:
        now = time.monotonic()
        for proc in sorted(self.processes.values(), key=lambda p: p.spec.level):
            if proc.state == "waiting" and self._lower_levels_ready(proc.spec.level):
                self._start(proc)
            elif proc.state == "backoff" and now >= proc.next_start:
                self._start(proc)

    def _lower_levels_ready(self, level: int) -> bool:
        for other in self.processes.values():
            if other.spec.level < level and other.state != "running":
                started = other.started_at or 0.0
                if other.state == "waiting" or time.time() - started < LEVEL_TIMEOUT:
                    return False
        return True

    def _start(self, proc: Supervised) -> None:
        spec = proc.spec
        log_path = self.state.log_file(spec.log_name)
        env = dict(os.environ)
        env.update(spec.env)
        env["PATH"] = tool_path()
        env["PYTHONUNBUFFERED"] = "1"
        env["DCS_STATE_DIR"] = str(self.state.root)  # where servers keep state (the application database)
        if self.plan is not None:
            env["TANGO_HOST"] = self.plan.tango_host
        with log_path.open("ab") as out:
            note = f"restart #{proc.restarts} after exit {proc.last_exit}" if proc.restarts else "start"
            out.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} dcs supervisor: {note}: {' '.join(spec.argv)}\n".encode())
            out.flush()
            # $DCS_STATE_DIR and other variables in a facility file's arguments, as a shell would expand them.
            proc.argv = [_expand(arg, env) for arg in spec.argv]
            try:
                proc.popen = subprocess.Popen(
                    proc.argv, cwd=spec.cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL, start_new_session=True,
                )  # fmt: skip
            except OSError as exc:
                out.write(f"=== cannot start: {exc}\n".encode())
                log.error("%s: cannot start %s: %s", spec.name, spec.argv[0], exc)
                self._schedule_restart(proc, None)
                return
        proc.state = "starting"
        proc.started_at = time.time()
        proc.ready_at = None
        log.info("%s: started, pid %d", spec.name, proc.popen.pid)

    # ------------------------------------------------------------------ watching
    def _reap(self) -> None:
        for proc in self.processes.values():
            if proc.popen is None or proc.state not in ("starting", "running"):
                continue
            code = proc.popen.poll()
            if code is None:
                continue
            log.warning("%s: exited with status %s", proc.spec.name, code)
            with self.state.log_file(proc.spec.log_name).open("ab") as out:
                out.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} dcs supervisor: exited with status {code}\n".encode())
            self._schedule_restart(proc, code)

    def _schedule_restart(self, proc: Supervised, code: int | None) -> None:
        ran_for = time.time() - (proc.started_at or time.time())
        proc.failures_in_a_row = 1 if ran_for >= STABLE_AFTER else proc.failures_in_a_row + 1
        delay = min(2.0 ** (proc.failures_in_a_row - 1), MAX_BACKOFF)
        proc.last_exit = code
        proc.restarts += 1
        proc.state = "backoff"
        proc.next_start = time.monotonic() + delay
        log.info("%s: restart #%d in %.0f s", proc.spec.name, proc.restarts, delay)

    def _check_ready(self) -> None:
        for proc in self.processes.values():
            if proc.state == "starting" and self._is_ready(proc.spec):
                proc.state = "running"
                proc.ready_at = time.time()
                log.info("%s: ready", proc.spec.name)

    def _is_ready(self, spec: ProcessSpec) -> bool:
        if spec.ready_tcp:
            host, port = split_tango_host(spec.ready_tcp)
            if not port_open(host, port, 0.2):
                return False
        if spec.kind == "database" and self.plan is not None:
            host, port = split_tango_host(self.plan.tango_host)
            return port_open(host, port, 0.2)
        return all(_device_answers(d) for d in spec.devices)

    # ------------------------------------------------------------------ stopping
    def _stop_all(self) -> None:
        for level in sorted({p.spec.level for p in self.processes.values()}, reverse=True):
            batch = [p for p in self.processes.values() if p.spec.level == level]
            for proc in batch:
                self._signal(proc, signal.SIGTERM)
            deadline = time.monotonic() + STOP_GRACE
            for proc in batch:
                self._wait_or_kill(proc, deadline)

    def _stop(self, proc: Supervised) -> None:
        self._signal(proc, signal.SIGTERM)
        self._wait_or_kill(proc, time.monotonic() + STOP_GRACE)

    def _signal(self, proc: Supervised, sig: int) -> None:
        if proc.popen is not None and proc.popen.poll() is None:
            try:
                os.killpg(proc.popen.pid, sig)
            except ProcessLookupError:
                pass

    def _wait_or_kill(self, proc: Supervised, deadline: float) -> None:
        if proc.popen is None:
            proc.state = "stopped"
            return
        try:
            proc.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("%s: did not stop within %.0f s; killing it", proc.spec.name, STOP_GRACE)
            self._signal(proc, signal.SIGKILL)
            proc.popen.wait()
        proc.last_exit = proc.popen.returncode
        proc.state = "stopped"

    def _write_status(self, final: bool = False) -> None:
        status = {
            "supervisor_pid": None if final else os.getpid(),
            "facility": self.plan.facility if self.plan else None,
            "tango_host": self.plan.tango_host if self.plan else None,
            "processes": [p.status() for p in sorted(self.processes.values(), key=lambda p: (p.spec.level, p.spec.name))],
        }
        text = json.dumps(status, indent=2)
        if text != self._last_status:
            tmp = self.state.supervisor_status.with_suffix(".tmp")
            tmp.write_text(text)
            tmp.replace(self.state.supervisor_status)
            self._last_status = text


def _expand(text: str, env: dict[str, str]) -> str:
    """``$NAME`` and ``${NAME}`` replaced from ``env``; unknown names are left as written."""
    return re.sub(r"\$(\w+)|\$\{(\w+)\}", lambda m: env.get(m[1] or m[2], m[0]), text)


def _changed(old: ProcessSpec, new: ProcessSpec) -> bool:
    return (old.argv, old.env, old.cwd, old.level) != (new.argv, new.env, new.cwd, new.level)


def _device_answers(name: str) -> bool:
    import tango

    try:
        proxy = tango.DeviceProxy(name)
        proxy.set_timeout_millis(1000)
        proxy.ping()
    except tango.DevFailed:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="dcs-supervisor",
        description="Keep a DCS plan running (started by `dcs up`; you rarely run this yourself).",
    )
    parser.add_argument("--state-dir", type=Path, required=True, help="state directory holding plan.json")
    args = parser.parse_args(argv)
    state = StateDir(args.state_dir)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        handlers=[logging.FileHandler(state.log_file("supervisor"))],
    )
    Supervisor(state).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
