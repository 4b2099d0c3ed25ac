"""DAQ run control: 32 CoBos, 1 s per simulated transition, time from DescribeAll to Running.

DCS's ``DaqSequencer`` (every ECC server of a step at once, waiting on
events) against a serial baseline driven in the same run, on the same
facility: one ECC server after another, each transition waited for before
the next server's, as the old web DAQ effectively did.

The facility (written into a temporary directory, run with the real CLI,
``python -m clients.cli --state-dir DIR up FILE`` on free ports of
127.0.0.1, `dcs down` in a ``finally``):

- N ECC server simulators (``simulators.ecc.server``), one CoBo each
  (``CoBo[i]``), every transition taking ``--transition`` seconds;
- N data router simulators (``simulators.datarouter.server``), one per CoBo,
  the targets of the ECC servers' data links, so that Start really starts
  them (the ECC simulator's START handshake when Start completes);
- N ``EccServer`` devices ``daq/ecc/<i>`` in one ``EccServer`` server process
  (``--ecc-servers K`` splits them over K processes);
- one ``DaqSequencer`` ``daq/sequencer/1`` over all of them, with no
  DataRouter devices (StartRun then has no staging directory to check; see
  bench/README.md for why), and an active experiment in the app database.

Measured, for each size (``--small`` first, a quick sanity row, then
``--cobos``):

dcs     DescribeAll, PrepareAll, ConfigureAll, StartRun on the sequencer, each
        sent as soon as the previous one ended (the sequencer leaves MOVING
        with OverallState at the step's target); from sending DescribeAll to
        the sequencer done with StartRun (OverallState Running).
reset   StopRun, then ResetAll three times, back to Idle (timed, not judged).
serial  for each of Describe, Prepare, Configure, Start: for each ECC server
        in turn, the command on its EccServer device, then wait until its
        CoboState is the target with Transitioning false, then the next server.

Both sides wait the same way, on change events (with a direct read as a
fallback once a wait lasts 1.5 transitions), so the comparison is parallel
vs serial, not events vs polling. After each sequence, the change events of
every EccServer give a breakdown of each step (when the devices accepted,
when they reached the target, how long after the last one the sequencer was
done) and /proc gives the CPU each kind of process used. Ideal: 4 transitions x ``--transition``.
Goal: DCS / ideal <= 1.15. Reported, never asserted.

    python bench/bench_daq.py [--cobos 32] [--small 4] [--transition 1.0] [--repeat 1]
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import common

sys.path.insert(0, str(common.ROOT))  # the project's packages (simulators, db, device_servers), run from anywhere

GOAL_RATIO = 1.15
SEQUENCER = "daq/sequencer/1"
CONFIG_SET = "cobo0/experiment/experiment"
EXPERIMENT = "bench_daq"
# (sequencer command, EccServer command, target CoboState / OverallState name)
STEPS = (
    ("DescribeAll", "Describe", "Described"),
    ("PrepareAll", "Prepare", "Prepared"),
    ("ConfigureAll", "Configure", "Ready"),
    ("StartRun", "Start", "Running"),
)
RESETS = (("StopRun", "Ready"), ("ResetAll", "Prepared"), ("ResetAll", "Described"), ("ResetAll", "Idle"))
ECC_ATTRS = ("CoboState", "Transitioning", "LastError")
SEQ_ATTRS = ("State", "OverallState", "LastError")
# A wait that has not ended this long after it began (in transitions) reads the attributes directly, and again
# every REFRESH_EVERY_S: a fallback for a change event that does not come (not seen so far; see the README).
REFRESH_AFTER_T = 1.5
REFRESH_EVERY_S = 0.25
SETTLE_S = 2.0  # quiet time before each timed sequence


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def ecc_name(i: int) -> str:
    return f"daq/ecc/{i}"


# --------------------------------------------------------------------- event mirror
def _plain(value: Any) -> Any:
    import numpy
    import tango

    if isinstance(value, (tango.DevState, str)) or value is None:
        return value
    if isinstance(value, (bool, numpy.bool_)):
        return bool(value)
    try:
        return int(value)
    except (TypeError, ValueError):
        return value


class Mirror:
    """The latest values of some attributes of some devices, from change events.

    ``seen[(device, attr, value)]`` is the last perf_counter() at which that
    value arrived; waits are on a condition the event callbacks notify.
    """

    def __init__(self, facility: common.BenchFacility, devices: list[str], attributes: tuple[str, ...]) -> None:
        self.attributes = attributes
        self.changed = threading.Condition()
        self.values: dict[tuple[str, str], Any] = {}
        self.updates: dict[tuple[str, str], int] = {}
        self.seen: dict[tuple[str, str, Any], float] = {}
        self.history: dict[tuple[str, str], list[tuple[float, Any]]] = {}
        self.event_errors: list[str] = []
        self.refreshes = 0
        self.refresh_changes: list[str] = []  # values a direct read changed: events that did not arrive (in time)
        self.proxies = {d: facility.proxy(d, timeout_ms=10000) for d in devices}
        self.subscriptions: list[tuple[Any, int]] = []

    def subscribe(self) -> Mirror:
        import tango

        for device, proxy in self.proxies.items():
            for attr in self.attributes:
                event_id = proxy.subscribe_event(
                    attr, tango.EventType.CHANGE_EVENT, functools.partial(self._event, device)
                )
                self.subscriptions.append((proxy, event_id))
        return self

    def unsubscribe(self) -> None:
        for proxy, event_id in self.subscriptions:
            try:
                proxy.unsubscribe_event(event_id)
            except Exception:
                pass
        self.subscriptions.clear()

    def _event(self, device: str, event: Any) -> None:
        arrived = time.perf_counter()
        attr = event.attr_name.rsplit("/", 1)[-1].lower()
        if event.err:
            with self.changed:
                self.event_errors.append(f"{device}/{attr}: {event.errors[0].desc.strip()}")
                self.changed.notify_all()
            return
        value = None if event.attr_value is None else _plain(event.attr_value.value)
        self._store(device, attr, value, arrived)

    def _store(self, device: str, attr: str, value: Any, arrived: float, only_if_updates: int | None = None) -> None:
        with self.changed:
            key = (device, attr)
            if only_if_updates is not None and self.updates.get(key, 0) != only_if_updates:
                return  # an event came while we read: it is newer than what we read
            self.values[key] = value
            self.updates[key] = self.updates.get(key, 0) + 1
            self.seen[(device, attr, value)] = arrived
            self.history.setdefault(key, []).append((arrived, value))
            self.changed.notify_all()

    def get(self, device: str, attr: str) -> Any:
        return self.values.get((device, attr.lower()))

    def arrived(self, device: str, attr: str, value: Any) -> float:
        return self.seen.get((device, attr.lower(), value), float("-inf"))

    def first_arrival(self, device: str, attr: str, value: Any, start: float, end: float) -> float | None:
        """When ``value`` first arrived in [start, end), or None."""
        with self.changed:
            for arrived, seen in self.history.get((device, attr.lower()), []):
                if start <= arrived < end and seen == value:
                    return arrived
        return None

    def refresh(self, devices: list[str]) -> None:
        """Read the attributes directly (fallback when events are late); never overwrites a newer event."""
        self.refreshes += 1
        for device in devices:
            keys = [(device, a.lower()) for a in self.attributes]
            with self.changed:
                before = [self.updates.get(k, 0) for k in keys]
            replies = self.proxies[device].read_attributes(list(self.attributes))
            now = time.perf_counter()
            for key, count, reply in zip(keys, before, replies, strict=True):
                value = _plain(reply.value)
                with self.changed:
                    if self.updates.get(key, 0) == count and self.values.get(key) != value:
                        self.refresh_changes.append(f"{device}/{key[1]}: {self.values.get(key)!r} -> {value!r}")
                self._store(device, key[1], value, now, only_if_updates=count)

    def wait(
        self, done: Callable[[], bool], timeout: float, what: str, refresh: list[str], refresh_after: float
    ) -> float:
        """Wait until ``done()`` (called with the lock held) is true; the perf_counter() when it was seen true."""
        deadline = time.monotonic() + timeout
        next_refresh = time.monotonic() + refresh_after
        while True:
            with self.changed:
                while not done():
                    now = time.monotonic()
                    if now >= deadline:
                        raise RuntimeError(
                            f"timed out after {timeout:g} s waiting for {what}; last errors {self.event_errors[-3:]}"
                        )
                    if now >= next_refresh:
                        break
                    self.changed.wait(min(deadline, next_refresh) - now)
                else:
                    return time.perf_counter()
            self.refresh(refresh)
            next_refresh = time.monotonic() + REFRESH_EVERY_S


# --------------------------------------------------------------------- the facility
def facility_spec(
    fac: common.BenchFacility, n: int, transition: float, ecc_servers: int, router_rate: int
) -> dict[str, Any]:
    used: set[int] = set()

    def port() -> int:
        while (p := common.free_port()) in used:
            pass
        used.add(p)
        return p

    config_dir = fac.root / "ecc-configs"
    from simulators.ecc.configs import ConfigDir

    ConfigDir(config_dir).write_examples()  # once, here: 32 simulators writing them at once would race
    simulators: dict[str, Any] = {}
    ecc_devices: list[dict[str, Any]] = [{} for _ in range(max(1, min(ecc_servers, n)))]
    for i in range(n):
        ecc_port, router_port = port(), port()
        simulators[f"router{i}"] = {
            "module": "simulators.datarouter.server",
            "args": ["--port", router_port, "--workdir", str(fac.root / "staging" / f"router{i}"), "--name", f"DataRouter{i}",
                     "--rate", router_rate, "--log-level", "WARNING"],
            "port": router_port,
        }  # fmt: skip
        simulators[f"ecc{i}"] = {
            "module": "simulators.ecc.server",
            "args": ["--port", ecc_port, "--config-dir", str(config_dir), "--sources", f"CoBo[{i}]",
                     "--transition-time", transition, "--log-level", "WARNING"],
            "port": ecc_port,
        }  # fmt: skip
        ecc_devices[i % len(ecc_devices)][ecc_name(i)] = {
            "class": "EccServer",
            "properties": {
                "Port": ecc_port,
                "DataLinks": [f"CoBo[{i}] DataRouter{i} 127.0.0.1 {router_port} TCP"],
                "Timeout": 3.0,
            },
        }
    servers: dict[str, Any] = {
        (f"EccServer/bench{j}" if len(ecc_devices) > 1 else "EccServer/bench"): {"level": 1, "devices": devices}
        for j, devices in enumerate(ecc_devices)
    }
    servers["DaqSequencer/bench"] = {
        "level": 2,
        "devices": {
            SEQUENCER: {
                "class": "DaqSequencer",
                "properties": {
                    "EccServers": [ecc_name(i) for i in range(n)],
                    "Database": app_database_url(fac),
                    "TransitionTimeout": max(30.0, 10 * transition),
                },
            }
        },
    }
    return {"facility": f"bench_daq_{n}", "simulators": simulators, "servers": servers}


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before[k] for k in before}


def app_database_url(fac: common.BenchFacility) -> str:
    return f"sqlite:///{fac.state_dir / 'dcs.db'}"


class Daq:
    """A running DAQ facility: the sequencer and ECC server mirrors, and the timed sequences."""

    def __init__(self, fac: common.BenchFacility, n: int, transition: float) -> None:
        self.fac = fac
        self.n = n
        self.transition = transition
        self.eccs = [ecc_name(i) for i in range(n)]
        self.step_timeout = max(30.0, 10 * transition) + 30.0
        self.seq_mirror = Mirror(fac, [SEQUENCER], SEQ_ATTRS)
        self.ecc_mirror = Mirror(fac, self.eccs, ECC_ATTRS)
        self.sequencer = fac.proxy(SEQUENCER, timeout_ms=10000)
        self.pids: dict[str, list[int]] = {}

    def prepare(self, timeout: float) -> None:
        """Active experiment, a config selected on every ECC server, subscriptions, OverallState Idle."""
        from db.app import RunStore

        store = RunStore.open(app_database_url(self.fac))
        try:
            store.create_experiment(EXPERIMENT)
            store.activate_experiment(EXPERIMENT)
        finally:
            store.close()
        for name in self.eccs:
            proxy = self.ecc_mirror.proxies[name]
            common.wait_for(
                lambda p=proxy: len(p.read_attribute("AvailableConfigs").value) >= 1, timeout, f"{name} configs"
            )
            proxy.command_inout("SelectConfig", CONFIG_SET)
        self.ecc_mirror.subscribe()
        self.seq_mirror.subscribe()
        self.wait_sequencer_idle(timeout)
        self.find_pids()
        self.selected_config_loop_s = self.selected_config_loop()

    def selected_config_loop(self) -> float:
        """What StartRun does before it sends Start: a new DeviceProxy and a SelectedConfig read per ECC server, in turn."""
        import tango

        started = time.perf_counter()
        for name in self.eccs:
            tango.DeviceProxy(self.fac.name(name)).read_attribute("SelectedConfig")
        return time.perf_counter() - started

    def close(self) -> None:
        self.seq_mirror.unsubscribe()
        self.ecc_mirror.unsubscribe()

    # ------------------------------------------------------------------ the sequencer
    def wait_sequencer_idle(self, timeout: float) -> None:
        import tango

        from device_servers.daq.ecc_group import OverallState

        m = self.seq_mirror
        m.wait(
            lambda: m.get(SEQUENCER, "OverallState") == int(OverallState.Idle)
            and m.get(SEQUENCER, "State") not in (None, tango.DevState.MOVING),
            timeout, "the sequencer to be Idle", [SEQUENCER], 1.0,
        )  # fmt: skip

    def sequencer_step(self, command: str, target: str) -> dict[str, Any]:
        """Send one sequencer command; wait until it has run (MOVING seen, then left, OverallState at target).

        Nothing else happens between two steps of a timed sequence: the breakdown is worked out afterwards.
        """
        import tango

        from device_servers.daq.ecc_group import OverallState

        m = self.seq_mirror
        want = int(OverallState[target])
        issued = time.perf_counter()
        self.sequencer.command_inout(command)
        returned = time.perf_counter()
        finished = m.wait(
            lambda: m.arrived(SEQUENCER, "State", tango.DevState.MOVING) >= issued
            and m.get(SEQUENCER, "State") != tango.DevState.MOVING
            and (m.get(SEQUENCER, "OverallState") == want or bool(m.get(SEQUENCER, "LastError"))),
            self.step_timeout, f"{command} to reach {target}", [SEQUENCER], REFRESH_AFTER_T * self.transition + 0.5,
        )  # fmt: skip
        error = m.get(SEQUENCER, "LastError")
        if error or m.get(SEQUENCER, "OverallState") != want:
            raise RuntimeError(f"{command} failed: {error or 'OverallState ' + str(m.get(SEQUENCER, 'OverallState'))}")
        return {"command": command, "target": target, "issued": issued, "returned": returned, "finished": finished}

    def breakdown(self, raw: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """What this client saw of the EccServer devices during each step, through their change events.

        For each step: when the last device had accepted its command (its Transitioning turned true), when
        the first and the last reached the target (CoboState), and per device the time from accepted to
        target beyond one transition (the SOAP dispatch plus the EccServer poller noticing the end). Worked
        out after the sequence (an ECC server's event may reach this client a millisecond after the
        sequencer's own, which comes from another process: seen, by a fraction of a millisecond, after this
        client had already sent the next command).
        """
        from device_servers.daq.ecc_link import CoboState

        time.sleep(0.3)  # the last events in flight
        m = self.ecc_mirror
        out = []
        for k, st in enumerate(raw):
            issued, finished = st["issued"], st["finished"]
            end = raw[k + 1]["issued"] if k + 1 < len(raw) else float("inf")
            # The target differs from one step to the next, so its arrival is looked for until the next step ends.
            end_reached = raw[k + 1]["finished"] if k + 1 < len(raw) else float("inf")
            want = int(CoboState[st["target"]])
            accepted = {e: m.first_arrival(e, "Transitioning", True, issued, finished) for e in self.eccs}
            reached = {e: m.first_arrival(e, "CoboState", want, issued, end_reached) for e in self.eccs}
            missing = {
                e: " ".join(
                    what for what, t in (("Transitioning true", accepted[e]), (f"CoboState {st['target']}", reached[e])) if t is None
                )
                for e in self.eccs
                if accepted[e] is None or reached[e] is None
            }  # fmt: skip
            acc = [t for t in accepted.values() if t is not None] or [issued]
            rea = [t for t in reached.values() if t is not None] or [issued]
            lag = sorted(
                reached[e] - accepted[e] - self.transition
                for e in self.eccs
                if accepted[e] is not None and reached[e] is not None
            ) or [float("nan")]  # fmt: skip
            out.append({
                "command": st["command"],
                "target": st["target"],
                "seconds": finished - issued,
                "command_call_ms": (st["returned"] - issued) * 1e3,
                "all_accepted_s": max(acc) - issued,
                "first_reached_s": min(rea) - issued,
                "last_reached_s": max(rea) - issued,
                "sequencer_after_last_ms": (finished - max(rea)) * 1e3,
                "ecc_lag_beyond_transition_ms": {"median": statistics.median(lag) * 1e3, "max": lag[-1] * 1e3},
                "gap_before_next_ms": (end - finished) * 1e3 if k + 1 < len(raw) else 0.0,
                "events_not_seen": missing,
            })  # fmt: skip
        return out

    def dcs_sequence(self) -> dict[str, Any]:
        cpu_before = self.cpu()
        raw = [self.sequencer_step(command, target) for command, _, target in STEPS]
        cpu = cpu_delta(cpu_before, self.cpu())
        total = raw[-1]["finished"] - raw[0]["issued"]
        routers = self.routers_running()
        return {"total_s": total, "steps": self.breakdown(raw), "cpu_s": cpu, "routers_running_after": routers}

    def reset_to_idle(self) -> dict[str, Any]:
        raw = [self.sequencer_step(command, target) for command, target in RESETS]
        total = raw[-1]["finished"] - raw[0]["issued"]
        return {"total_s": total, "steps": self.breakdown(raw)}

    # ------------------------------------------------------------------ CPU used, per kind of process
    def routers_running(self) -> int:
        """How many data routers say RUNNING (their STATUS request): Start really started them."""
        import socket

        running = 0
        for i in range(self.n):
            port = self.fac.spec["simulators"][f"router{i}"]["port"]
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=3.0) as sock:
                    sock.sendall(b"STATUS\n")
                    reply = b""
                    while not reply.endswith(b"\n"):
                        chunk = sock.recv(1024)
                        if not chunk:
                            break
                        reply += chunk
                running += reply.decode().startswith("RUNNING")
            except OSError:
                pass
        return running

    def find_pids(self) -> None:
        groups = {"EccServer": [], "DaqSequencer": [], "ecc simulators": [], "data routers": [], "tango-db": []}
        for proc in self.fac.status().get("processes", []):
            name, pid = proc["name"], proc.get("pid")
            if not pid:
                continue
            if name.startswith("EccServer/"):
                groups["EccServer"].append(pid)
            elif name.startswith("DaqSequencer/"):
                groups["DaqSequencer"].append(pid)
            elif name.startswith("sim/ecc"):
                groups["ecc simulators"].append(pid)
            elif name.startswith("sim/router"):
                groups["data routers"].append(pid)
            elif name == "tango-db":
                groups["tango-db"].append(pid)
        self.pids = groups

    def cpu(self) -> dict[str, float]:
        """CPU seconds (user + system) used so far by each group of the facility's processes, and by this one."""
        tick = os.sysconf("SC_CLK_TCK")
        out = {}
        for group, pids in self.pids.items():
            total = 0.0
            for pid in pids:
                try:
                    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                    total += (int(fields[11]) + int(fields[12])) / tick
                except (OSError, IndexError, ValueError):
                    pass
            out[group] = total
        times = os.times()
        out["this benchmark"] = times.user + times.system
        out["wall"] = time.perf_counter()
        return out

    # ------------------------------------------------------------------ the serial baseline
    def serial_sequence(self) -> dict[str, Any]:
        """Each ECC server in turn, each transition waited for (CoboState at target, Transitioning false)."""
        from device_servers.daq.ecc_link import CoboState

        m = self.ecc_mirror
        per_step: dict[str, list[float]] = {}
        cpu_before = self.cpu()
        start = time.perf_counter()
        for _, operation, target in STEPS:
            want = int(CoboState[target])
            durations = per_step.setdefault(operation, [])
            for name in self.eccs:
                issued = time.perf_counter()
                m.proxies[name].command_inout(operation)
                done = m.wait(
                    lambda name=name, want=want: (m.get(name, "CoboState") == want and m.get(name, "Transitioning") is False)
                    or bool(m.get(name, "LastError")),
                    self.step_timeout, f"{name} {operation} -> {target}", [name], REFRESH_AFTER_T * self.transition,
                )  # fmt: skip
                if m.get(name, "LastError"):
                    raise RuntimeError(f"serial baseline: {name} {operation} failed: {m.get(name, 'LastError')}")
                durations.append(done - issued)
        total = time.perf_counter() - start
        return {
            "total_s": total,
            "routers_running_after": self.routers_running(),
            "cpu_s": cpu_delta(cpu_before, self.cpu()),
            "per_transition_s": {
                op: {"median": statistics.median(d), "max": max(d), "min": min(d), "sum": sum(d)}
                for op, d in per_step.items()
            },
        }


# --------------------------------------------------------------------- one size
def run_size(n: int, args: argparse.Namespace, con: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"cobos": n, "repeats": []}
    with common.BenchFacility(prefix=f"dcs-bench-daq{n}-", keep=args.keep) as fac:
        daq: Daq | None = None
        try:
            fac.write(facility_spec(fac, n, args.transition, args.ecc_servers, args.router_rate))
            con.print(f"[{n} CoBos] dcs up: {2 * n} simulators, {len(fac.spec['servers'])} servers ({fac.root})")
            up = fac.up(timeout=args.up_timeout)
            out["up_wall_s"] = up["wall_s"]
            daq = Daq(fac, n, args.transition)
            started = time.perf_counter()
            daq.prepare(timeout=args.up_timeout)
            out["prepare_s"] = time.perf_counter() - started
            out["selected_config_loop_s"] = daq.selected_config_loop_s
            con.print(
                f"[{n} CoBos] up in {up['wall_s']:.1f} s, ready in {out['prepare_s']:.1f} s more; load {loadavg()}"
            )
            for r in range(args.repeat):
                rep: dict[str, Any] = {}
                time.sleep(SETTLE_S)
                rep["loadavg_before_dcs"] = loadavg()
                rep["dcs"] = daq.dcs_sequence()
                con.print(f"[{n} CoBos] repeat {r + 1}: DCS DescribeAll -> Running {rep['dcs']['total_s']:.3f} s")
                rep["reset_after_dcs"] = daq.reset_to_idle()
                if not args.skip_serial:
                    time.sleep(SETTLE_S)
                    rep["loadavg_before_serial"] = loadavg()
                    rep["serial"] = daq.serial_sequence()
                    con.print(f"[{n} CoBos] repeat {r + 1}: serial baseline {rep['serial']['total_s']:.3f} s")
                    if r + 1 < args.repeat:
                        rep["reset_after_serial"] = daq.reset_to_idle()
                rep["event_fallback_reads"] = daq.seq_mirror.refreshes + daq.ecc_mirror.refreshes
                rep["values_only_a_direct_read_gave"] = daq.seq_mirror.refresh_changes + daq.ecc_mirror.refresh_changes
                rep["event_errors"] = daq.seq_mirror.event_errors + daq.ecc_mirror.event_errors
                out["repeats"].append(rep)
            out["graw_files_written"] = len(list((fac.root / "staging").glob("router*/*.graw")))
        finally:
            if daq is not None:
                daq.close()
            down_started = time.perf_counter()
        # leaving the block ran `dcs down` (and removed the directory unless --keep)
    out["down_s"] = time.perf_counter() - down_started
    ideal = len(STEPS) * args.transition
    dcs = statistics.median(r["dcs"]["total_s"] for r in out["repeats"])
    serial = statistics.median(r["serial"]["total_s"] for r in out["repeats"]) if not args.skip_serial else None
    out["summary"] = {
        "dcs_s": dcs,
        "dcs_s_all": [r["dcs"]["total_s"] for r in out["repeats"]],
        "serial_s": serial,
        "serial_s_all": [r["serial"]["total_s"] for r in out["repeats"] if "serial" in r],
        "ideal_s": ideal,
        "serial_ideal_s": n * ideal,
        "ratio_dcs_over_ideal": dcs / ideal,
        "within_goal": dcs / ideal <= GOAL_RATIO,
        "speedup_vs_serial": serial / dcs if serial is not None else None,
    }
    return out


def run(args: argparse.Namespace, con: Any) -> dict[str, Any]:
    os.environ.pop("DCS_DB_URL", None)  # the sequencer gets its sqlite file explicitly; never a shared database
    sizes = [s for s in dict.fromkeys([args.small, args.cobos]) if s > 0]
    data: dict[str, Any] = {
        "benchmark": "daq",
        "goal": {"ratio_dcs_over_ideal_max": GOAL_RATIO},
        "parameters": {
            "sizes": sizes,
            "transition_s": args.transition,
            "repeat": args.repeat,
            "ecc_servers": args.ecc_servers,
            "router_rate": args.router_rate,
            "data_router_devices": 0,
            "serial": not args.skip_serial,
        },  # fmt: skip
        "environment": common.environment(),
        "loadavg_before": loadavg(),
        "results": {},
    }
    started = time.perf_counter()
    for n in sizes:
        data["results"][str(n)] = run_size(n, args, con)
    data["loadavg_after"] = loadavg()
    data["wall_s"] = time.perf_counter() - started
    return data


def show(data: dict[str, Any], con: Any) -> None:
    p = data["parameters"]
    rows = []
    for n, r in data["results"].items():
        s = r["summary"]
        rows.append([
            n, s["dcs_s"], s["serial_s"], s["ideal_s"], f"{s['ratio_dcs_over_ideal']:.3f}",
            "yes" if s["within_goal"] else "no",
            f"{s['speedup_vs_serial']:.1f}x" if s["speedup_vs_serial"] is not None else "-",
        ])  # fmt: skip
    con.print(common.table(
        f"DAQ DescribeAll -> Running, {p['transition_s']:g} s per simulated transition, seconds "
        f"(median of {p['repeat']}; {p['ecc_servers']} EccServer process(es))",
        ["CoBos", "DCS sequencer", "serial baseline", "ideal (4 x T)", "DCS / ideal", f"≤ {GOAL_RATIO}", "speed-up vs serial"],
        rows,
    ))  # fmt: skip
    for n, r in data["results"].items():
        last = r["repeats"][-1]
        step_rows = [
            [st["command"], st["seconds"], st["command_call_ms"], st["all_accepted_s"], st["first_reached_s"],
             st["last_reached_s"], st["sequencer_after_last_ms"],
             f"{st['ecc_lag_beyond_transition_ms']['median']:.0f} / {st['ecc_lag_beyond_transition_ms']['max']:.0f}"]
            for st in last["dcs"]["steps"] + last["reset_after_dcs"]["steps"]
        ]  # fmt: skip
        con.print(common.table(
            f"{n} CoBos, sequencer steps (last repeat; the DCS time is the first four): s from sending the command; "
            "ECC times from this client's change events",
            ["command", "step s", "call ms", "all ECC accepted s", "first ECC at target s", "last ECC at target s",
             "sequencer done after last ms", "ECC lag beyond T ms median / max"],
            step_rows,
        ))  # fmt: skip
        gaps = sum(st["gap_before_next_ms"] for st in last["dcs"]["steps"])
        con.print(
            f"{n} CoBos: this client's own time between the DCS steps (part of the DCS time): {gaps:.1f} ms in all"
        )
        con.print(
            f"{n} CoBos: data routers RUNNING after StartRun {last['dcs']['routers_running_after']}/{n}"
            + (f", after the serial Start {last['serial']['routers_running_after']}/{n}" if "serial" in last else "")
        )
        cpu = dict(last["dcs"]["cpu_s"])
        wall = cpu.pop("wall")
        con.print(
            f"{n} CoBos, CPU s used during the DCS sequence ({wall:.2f} s wall, {os.cpu_count()} cores = "
            f"{(os.cpu_count() or 1) * wall:.1f} CPU s): " + ", ".join(f"{k} {v:.2f}" for k, v in cpu.items())
        )
        if "serial" in last:
            serial = last["serial"]["per_transition_s"]
            scpu = dict(last["serial"]["cpu_s"])
            swall = scpu.pop("wall")
            con.print(
                f"{n} CoBos, serial: per transition median "
                + ", ".join(f"{op} {v['median']:.3f} s (max {v['max']:.3f})" for op, v in serial.items())
                + f"; CPU s over its {swall:.0f} s: "
                + ", ".join(f"{k} {v:.1f}" for k, v in scpu.items())
            )
        con.print(
            f"{n} CoBos: reset to Idle after DCS {last['reset_after_dcs']['total_s']:.2f} s"
            f"; dcs up {r['up_wall_s']:.1f} s, ready {r['prepare_s']:.1f} s, down {r['down_s']:.1f} s"
            f"; .graw files {r['graw_files_written']}; fallback reads {last['event_fallback_reads']}"
            f" (values only they gave: {last['values_only_a_direct_read_gave'] or 'none'})"
            + (f"; event errors {last['event_errors'][:3]}" if last["event_errors"] else "")
            + f"; StartRun's SelectedConfig loop from a fresh client {r['selected_config_loop_s'] * 1e3:.0f} ms"
        )
        for st in last["dcs"]["steps"] + last["reset_after_dcs"]["steps"]:
            if st["events_not_seen"]:
                con.print(f"{n} CoBos, {st['command']}: no event seen from {st['events_not_seen']}")
    con.print(
        f"loadavg before {data['loadavg_before']}, after {data['loadavg_after']}; whole run {data['wall_s']:.0f} s"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=(
            "DAQ run control benchmark: time from DescribeAll to Running with DCS's DaqSequencer (every ECC "
            "server at once, on events) beside a serial baseline (one ECC server after another) in the same run."
        ),
        epilog=(
            "Each size gets its own facility in a temporary directory (ECC and data router simulators, one "
            "EccServer process, the DaqSequencer), on free ports of 127.0.0.1, with `dcs down` at the end. "
            "At the defaults the whole run takes about 3 to 4 minutes on 2 cores (the 32-CoBo serial baseline "
            "alone is 128 transitions)."
        ),
    )
    parser.add_argument(
        "--cobos", type=int, default=32, help="CoBos (= ECC servers = data routers) of the main row (default 32)"
    )
    parser.add_argument(
        "--small", type=int, default=4, help="CoBos of the quick sanity row run first (default 4; 0: none)"
    )
    parser.add_argument(
        "--transition", type=float, default=1.0, help="seconds per simulated ECC transition (default 1.0)"
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="DCS + serial runs per size, medians reported (default 1)"
    )
    parser.add_argument(
        "--ecc-servers",
        type=int,
        default=1,
        help="EccServer server processes the ECC server devices are spread over (default 1)",
    )
    parser.add_argument(
        "--router-rate", type=int, default=20000, help="bytes/s each data router writes while running (default 20000)"
    )
    parser.add_argument(
        "--skip-serial",
        action="store_true",
        help="DCS side only, no serial baseline (for exploring; no speed-up reported)",
    )
    parser.add_argument(
        "--up-timeout", type=float, default=120.0, help="dcs up --timeout and readiness waits, s (default 120)"
    )
    common.add_common_arguments(parser)
    args = parser.parse_args(argv)
    if args.cobos < 1 or args.small < 0 or args.transition <= 0 or args.repeat < 1 or args.ecc_servers < 1:
        parser.error("--cobos, --repeat and --ecc-servers must be >= 1, --small >= 0, --transition > 0")
    con = common.console()
    data = run(args, con)
    show(data, con)
    if not args.no_json:
        common.print_json(data)
    common.write_json(data, args.json_file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
