"""Safety: from rain onset in the PLC simulator to CloseShutter sent, and to the shutter confirmed closed.

The issue's safety benchmark, over ``--runs`` rain events (default 20),
reported as median and worst. Goals: the dome's CloseShutter within 1 s of
the rain (pyobs reacts in about 10-15 s), and the shutter closed within the
mechanism's own time + 1 s.

The site (written into a temporary directory, run with the real CLI,
``python -m clients.cli --state-dir DIR up FILE`` on free ports of
127.0.0.1, `dcs down` in a ``finally``), the observatory half of
facilities/demo.yaml:

- the PLC simulator (``simulators.plc.server --tick 0.1``: a realistic but
  fast PLC cycle) and the Alpaca simulator (``simulators.alpaca.server
  --shutter-time 2.1``), both logging at INFO;
- Plc ``obs/plc/1`` (``PollPeriod``: one facility per ``--poll-periods``
  value, default 0.1 s, the PLC cycle, then 0.25 s, demo.yaml's), Weather
  ``obs/weather/1`` (a copy of facilities/weather_rules.yaml with every
  ``hold_off`` at ``--hold-off`` s, so runs can repeat), Mount, Dome, two
  Cameras and two FilterWheels on the Alpaca simulator (demo.yaml's
  properties: Alpaca PollPeriod 1 s, MovingPeriod 0.2 s), and the
  ObservatoryConductor ``obs/conductor/1`` (Night=night,
  ShutterCloseTimeout 15 s, its operator log a sqlite file of its own).

Each run: wait until the conductor is SCHEDULER_READY, the weather safe and
the dome open (ShutterStatus 0), then a quiet moment of random length (so
rain falls at every phase of the PLC cycle and the Plc poll), then:

t0   the bench sends ``INJECT weather rain_rate <r>`` to the PLC simulator
     (rain onset: the PLC's next cycle reports it);
t1   the Alpaca simulator executes the dome's ``closeshutter`` PUT: its own
     INFO log line ``dome/0: closing shutter`` (millisecond time stamp, no
     hop added; ``--proxy`` also runs the dome's HTTP through a timestamping
     proxy, bench/safety_proxy.py, and reports both and the hop's cost);
t2   the shutter closed: (a) the Dome device's ShutterStatus=Closed change
     event (its time stamp: when the device read Closed, "mechanism done
     as DCS sees it"), and (b) the conductor's "make safe ok: shutter
     confirmed closed" operator-log entry ("DCS confirmed"; its State
     leaving MOVING is recorded too).

Then ``rain_rate 0`` and a wait for the conductor to reopen the dome.
Between t0 and t1 the breakdown comes from time stamps the devices put on
their own events and log entries: the PLC cycle that first reported rain
(the PLC's time stamp on the Plc attribute), the Plc poll that published it
(arrival of that change event here), the Weather's IsSafe=False (its time
stamp), the conductor's "make safe started" operator-log entry (its
decision), and t1. Reported, never asserted.

    python bench/bench_safety.py [--runs 20] [--tick 0.1] [--poll-periods 0.1 0.25] [--shutter-time 2.1]
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import math
import os
import random
import re
import socket
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import common
import yaml

sys.path.insert(0, str(common.ROOT))  # the project's packages (db, device_servers), run from anywhere

PLC, WEATHER, DOME, MOUNT, CONDUCTOR = "obs/plc/1", "obs/weather/1", "obs/dome/1", "obs/mount/1", "obs/conductor/1"
RAIN_ATTRS = ("DRD11_digital", "WXT520_RainRate")  # the rain sensors the Plc publishes (rules: DRD11 first)
GOAL_COMMAND_S = 1.0  # rain -> CloseShutter at the dome
GOAL_MARGIN_S = 1.0  # closed within the mechanism's time + this
MODE_READY = 6  # Mode.SCHEDULER_READY
SHUTTER_OPEN, SHUTTER_CLOSED, SHUTTER_CLOSING = 0, 1, 3
LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) (\w+) ([\w.]+): (.*)$")
CLOSE_TIMEOUT_S = 25.0  # rain -> conductor done (confirmed or alarm); the conductor itself gives up after 2 x 15 s
REOPEN_TIMEOUT_S = 25.0


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def stats(values: list[float]) -> dict[str, Any]:
    values = [v for v in values if v is not None]
    if not values:
        return {"n": 0, "median": None, "worst": None, "best": None}
    return {"n": len(values), "median": statistics.median(values), "worst": max(values), "best": min(values)}


# --------------------------------------------------------------------- change events, recorded
def _plain(value: Any) -> Any:
    import numpy
    import tango

    if isinstance(value, (tango.DevState, str)) or value is None:
        return value
    if isinstance(value, (bool, numpy.bool_)):
        return bool(value)
    if isinstance(value, (float, numpy.floating)):
        return float(value)
    try:
        return int(value)
    except (TypeError, ValueError):
        return value


class Recorder:
    """Every change event of some attributes: (arrival here, the device's time stamp, value), and the latest value."""

    def __init__(self, fac: common.BenchFacility) -> None:
        self.fac = fac
        self.changed = threading.Condition()
        self.history: dict[tuple[str, str], list[tuple[float, float, Any]]] = {}
        self.latest: dict[tuple[str, str], Any] = {}
        self.errors: list[str] = []
        self.refreshes = 0
        self.refresh_changes: list[str] = []
        self.proxies: dict[str, Any] = {}
        self.subscriptions: list[tuple[Any, int]] = []

    def proxy(self, device: str) -> Any:
        if device not in self.proxies:
            self.proxies[device] = self.fac.proxy(device, timeout_ms=5000)
        return self.proxies[device]

    def subscribe(self, device: str, attrs: tuple[str, ...]) -> None:
        import tango

        proxy = self.proxy(device)
        for attr in attrs:
            event_id = proxy.subscribe_event(
                attr, tango.EventType.CHANGE_EVENT, functools.partial(self._event, device, attr.lower())
            )
            self.subscriptions.append((proxy, event_id))

    def unsubscribe(self) -> None:
        for proxy, event_id in self.subscriptions:
            try:
                proxy.unsubscribe_event(event_id)
            except Exception:
                pass
        self.subscriptions.clear()

    def _event(self, device: str, attr: str, event: Any) -> None:
        arrived = time.time()
        with self.changed:
            if event.err:
                self.errors.append(f"{arrived:.3f} {device}/{attr}: {event.errors[0].desc.strip()[:160]}")
            else:
                value = None if event.attr_value is None else _plain(event.attr_value.value)
                stamp = event.attr_value.time.totime() if event.attr_value is not None else arrived
                self.history.setdefault((device, attr), []).append((arrived, stamp, value))
                self.latest[(device, attr)] = value
            self.changed.notify_all()

    def get(self, device: str, attr: str) -> Any:
        return self.latest.get((device, attr.lower()))

    def refresh(self, wanted: list[tuple[str, str]]) -> None:
        """Direct reads (a fallback should an event not come); they set the latest value, not the history.

        A read that finds a value other than the last event's is counted in ``refresh_changes`` (an event
        that did not arrive, or arrived while reading: read the list, not just its length).
        """
        self.refreshes += 1
        for device, attr in wanted:
            try:
                value = self.proxy(device).state() if attr == "State" else self.proxy(device).read_attribute(attr).value
            except Exception:
                continue
            value = _plain(value)
            with self.changed:
                key = (device, attr.lower())
                if key in self.latest and self.latest[key] != value:
                    self.refresh_changes.append(f"{time.time():.3f} {device}/{attr}: {self.latest[key]!r} -> {value!r}")
                self.latest[key] = value
                self.changed.notify_all()

    def wait(self, done: Callable[[], bool], timeout: float, what: str, refresh: list[tuple[str, str]]) -> float:
        """Wait until ``done()`` (called with the lock held); time.time() when seen. Reads directly every 2 s."""
        deadline = time.monotonic() + timeout
        next_refresh = time.monotonic() + 2.0
        while True:
            with self.changed:
                while not done():
                    now = time.monotonic()
                    if now >= deadline:
                        raise TimeoutError(
                            f"timed out after {timeout:g} s waiting for {what}; errors {self.errors[-3:]}"
                        )
                    if now >= next_refresh:
                        break
                    self.changed.wait(min(deadline, next_refresh) - now)
                else:
                    return time.time()
            self.refresh(refresh)
            next_refresh = time.monotonic() + 2.0

    def events(self, device: str, attr: str, start: float, end: float = float("inf")) -> list[tuple[float, float, Any]]:
        """Events that arrived in [start, end)."""
        with self.changed:
            return [e for e in self.history.get((device, attr.lower()), []) if start <= e[0] < end]

    def first(
        self, device: str, attr: str, start: float, end: float, match: Callable[[Any], bool]
    ) -> tuple[float, float, Any] | None:
        for event in self.events(device, attr, start, end):
            if match(event[2]):
                return event
        return None


# --------------------------------------------------------------------- the PLC simulator's socket
class PlcClient:
    """One kept-open connection to the PLC simulator (JSON over TCP, one line each way)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    def command(self, name: str, **arguments: Any) -> tuple[float, float, dict[str, Any]]:
        """(time.time() just before sending, time.time() at the reply, reply)."""
        line = (json.dumps({"command": [{"name": name, **arguments}]}) + "\n").encode()
        sent = time.time()
        self.sock.sendall(line)
        while b"\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the PLC simulator closed the connection")
            self.buffer += chunk
        replied = time.time()
        reply, self.buffer = self.buffer.split(b"\n", 1)
        answer = json.loads(reply)[0]
        if answer.get("name") == "ERROR":
            raise RuntimeError(f"PLC simulator refused {name}: {answer.get('message')}")
        return sent, replied, answer

    def rain(self, rate: float) -> tuple[float, float, dict[str, Any]]:
        return self.command("INJECT", device="weather", value_name="rain_rate", value=rate)

    def close(self) -> None:
        self.sock.close()


# --------------------------------------------------------------------- logs
def log_lines(path: Path) -> list[tuple[float, str, str]]:
    """(time.time() of the record, logger, message) of a simulator log (Python logging's default asctime: local time, ms)."""
    out = []
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return out
    for line in text.splitlines():
        match = LOG_TIME.match(line)
        if match:
            moment = dt.datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            out.append((moment, match.group(3), match.group(4)))
    return out


def operator_log(url: str) -> list[tuple[float, str, str, str]]:
    """(time.time(), action, outcome, detail) of the conductor's operator log, oldest first."""
    from db.app import RunStore

    store = RunStore.open(url)
    try:
        entries = store.operator_log(100000)
    finally:
        store.close()
    out = []
    for e in entries:
        moment = e.time if e.time.tzinfo is not None else e.time.replace(tzinfo=dt.UTC)
        out.append((moment.timestamp(), e.action, e.outcome, e.detail))
    return sorted(out)


def first_in(
    items: list[tuple[float, ...]], start: float, end: float, match: Callable[[tuple[float, ...]], bool]
) -> float | None:
    for item in items:
        if start <= item[0] < end and match(item):
            return item[0]
    return None


# --------------------------------------------------------------------- the facility
def rules_copy(fac: common.BenchFacility, hold_off: float) -> Path:
    spec = yaml.safe_load((common.ROOT / "facilities" / "weather_rules.yaml").read_text())
    for quantity in spec["quantities"].values():
        quantity["hold_off"] = hold_off
    path = fac.root / "weather_rules.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def facility_spec(
    fac: common.BenchFacility, args: argparse.Namespace, poll_period: float, plc_port: int, alpaca_port: int,
    dome_port: int,
) -> dict[str, Any]:  # fmt: skip
    rules = rules_copy(fac, args.hold_off)
    alpaca_props = {"PollPeriod": 1.0, "MovingPeriod": 0.2, "Timeout": 2.0}  # the class defaults demo.yaml uses

    def alpaca(cls: str, port: int, number: int, **extra: Any) -> dict[str, Any]:
        return {"class": cls, "properties": {"Port": port, "DeviceNumber": number, **alpaca_props, **extra}}

    return {
        "facility": "bench_safety",
        "simulators": {
            "plc": {
                "module": "simulators.plc.server",
                "args": ["--port", plc_port, "--tick", args.tick, "--seed", args.seed, "--log-level", "INFO"],
                "port": plc_port,
            },
            "alpaca": {
                "module": "simulators.alpaca.server",
                "args": ["--port", alpaca_port, "--discovery-port", 0, "--shutter-time", args.shutter_time,
                         "--log-level", "INFO"],
                "port": alpaca_port,
            },  # fmt: skip
        },
        "servers": {
            "Plc/site": {"level": 1, "devices": {PLC: {"class": "Plc", "properties": {"Port": plc_port, "PollPeriod": poll_period}}}},
            "Weather/site": {"level": 1, "devices": {WEATHER: {"class": "Weather", "properties": {"RulesFile": str(rules)}}}},
            "Mount/site": {"level": 1, "devices": {MOUNT: alpaca("Mount", alpaca_port, 0)}},
            "Dome/site": {"level": 1, "devices": {DOME: alpaca("Dome", dome_port, 0)}},
            "FilterWheel/site": {"level": 1, "devices": {
                "obs/filterwheel/vis": alpaca("FilterWheel", alpaca_port, 0),
                "obs/filterwheel/nir": alpaca("FilterWheel", alpaca_port, 1),
            }},
            "Camera/site": {"level": 1, "devices": {
                "obs/camera/vis": alpaca("Camera", alpaca_port, 0, Instrument="DDRAGO", FilterWheel="obs/filterwheel/vis"),
                "obs/camera/nir": alpaca("Camera", alpaca_port, 1, Instrument="CAGIRE", FilterWheel="obs/filterwheel/nir"),
            }},
            "ObservatoryConductor/site": {"level": 2, "devices": {CONDUCTOR: {"class": "ObservatoryConductor", "properties": {
                "Night": "night", "ShutterCloseTimeout": 15, "Database": operator_db_url(fac),
            }}}},
        },
    }  # fmt: skip


def operator_db_url(fac: common.BenchFacility) -> str:
    return f"sqlite:///{fac.state_dir / 'dcs.db'}"


def find_log(fac: common.BenchFacility, simulator: str) -> Path:
    """The supervisor's log of a facility simulator (process ``sim/<name>``, file ``sim.<name>.log``)."""
    path = fac.state_dir / "log" / f"sim.{simulator}.log"
    if not path.exists():
        raise RuntimeError(f"no log for simulator {simulator}: {path} does not exist")
    return path


# --------------------------------------------------------------------- one configuration
class Site:
    """A running site: the recorder, the PLC socket, the runs."""

    def __init__(self, fac: common.BenchFacility, args: argparse.Namespace, plc_port: int) -> None:
        import tango

        self.fac = fac
        self.args = args
        self.rec = Recorder(fac)
        self.plc = PlcClient(plc_port)
        self.moving = tango.DevState.MOVING
        self.ready_refresh = [(CONDUCTOR, "Mode"), (CONDUCTOR, "State"), (DOME, "ShutterStatus"), (WEATHER, "IsSafe")]

    def subscribe(self) -> None:
        self.rec.subscribe(PLC, RAIN_ATTRS)
        self.rec.subscribe(WEATHER, ("IsSafe",))
        self.rec.subscribe(CONDUCTOR, ("Mode", "State", "Safe"))
        self.rec.subscribe(DOME, ("ShutterStatus",))

    def close(self) -> None:
        self.rec.unsubscribe()
        self.plc.close()

    def _ready(self) -> bool:
        r = self.rec
        return (
            r.get(CONDUCTOR, "Mode") == MODE_READY and r.get(DOME, "ShutterStatus") == SHUTTER_OPEN
            and r.get(WEATHER, "IsSafe") is True and r.get(CONDUCTOR, "State") not in (None, self.moving)
        )  # fmt: skip

    def wait_ready(self, timeout: float) -> float:
        return self.rec.wait(self._ready, timeout, "SCHEDULER_READY, weather safe, dome open", self.ready_refresh)

    def run_once(self, rng: random.Random) -> dict[str, Any]:
        """One rain event; the raw moments (time.time()); the analysis comes later, from events and logs."""
        rec = self.rec
        ready = self.wait_ready(REOPEN_TIMEOUT_S)
        time.sleep(self.args.settle + rng.uniform(0.0, self.args.jitter))
        t0, t0_reply, _ = self.plc.rain(self.args.rain)

        def confirmed() -> bool:  # the conductor went MOVING (making safe) and left it, and the dome reads Closed
            states = [e[2] for e in rec.history.get((CONDUCTOR, "state"), []) if e[0] >= t0]
            if self.moving not in states:
                return False
            after = states[len(states) - 1 - states[::-1].index(self.moving) :]
            done = any(s != self.moving for s in after)
            shut = any(e[2] == SHUTTER_CLOSED and e[0] >= t0 for e in rec.history.get((DOME, "shutterstatus"), []))
            return done and shut

        error = None
        try:
            seen_closed = rec.wait(confirmed, CLOSE_TIMEOUT_S, "the conductor to confirm the closure", [])
        except TimeoutError as exc:
            error, seen_closed = str(exc), None
        time.sleep(0.1)  # the operator-log entry is written just before the conductor leaves MOVING
        t_clear, _, _ = self.plc.rain(0.0)

        def reopened() -> bool:
            return self._ready() and any(
                e[2] == SHUTTER_OPEN for e in rec.history.get((DOME, "shutterstatus"), []) if e[0] >= t_clear
            )

        reopen = rec.wait(reopened, REOPEN_TIMEOUT_S, "the reopen after the rain", self.ready_refresh)
        return {
            "ready_seen": ready, "t0": t0, "inject_reply": t0_reply, "closed_seen": seen_closed, "t_clear": t_clear,
            "reopen_seen": reopen, "error": error, "loadavg": loadavg(),
        }  # fmt: skip


def analyse(
    site: Site, tick: float, raws: list[dict[str, Any]], alpaca_log: list[tuple[float, str, str]], plc_log: list[tuple[float, str, str]],
    oplog: list[tuple[float, str, str, str]], shutter_time: float, proxy: Any,
) -> list[dict[str, Any]]:  # fmt: skip
    """Per run: every moment relative to t0 (s)."""
    rec = site.rec
    out = []
    for raw in raws:
        t0, end = raw["t0"], raw["t_clear"]

        def rel(t: float | None, t0: float = t0) -> float | None:
            return None if t is None else t - t0

        # PLC cycle and Plc poll: the first rainy reading of either rain sensor
        rainy = []
        for attr, wet in (("DRD11_digital", lambda v: v == 0), ("WXT520_RainRate", lambda v: v is not None and v > 0)):
            event = rec.first(PLC, attr, t0, end, wet)
            if event is not None:
                rainy.append(event)
        plc_event = min(rainy) if rainy else None
        # The first cycle after t0: the PLC simulator cycles on a fixed grid, so it is the last dry cycle the Plc
        # read (the PLC's own time stamp) plus whole ticks. With a Plc poll slower than the cycle, the first rainy
        # cycle is often one the Plc never reads (it reads the latest cycle at each poll), so it cannot be seen.
        dry = [
            e[1] for a, wet in (("DRD11_digital", 0), ("WXT520_RainRate", None))
            for e in rec.events(PLC, a, t0 - 3.0, t0 + 2.0)
            if e[1] < t0 + 0.5 and (e[2] == 1 if wet == 0 else e[2] == 0)
        ]  # fmt: skip
        first_cycle = None
        if dry:
            last_dry = max(dry)
            first_cycle = last_dry + tick * max(1, math.ceil((t0 - last_dry) / tick - 1e-9))
            if plc_event is not None and plc_event[1] < first_cycle:  # the grid moved (a late cycle): trust the PLC
                first_cycle = plc_event[1]
        weather = rec.first(WEATHER, "IsSafe", t0, end, lambda v: v is False)
        decided = first_in(oplog, t0 - 0.002, end, lambda e: e[1] == "make safe started")
        sim_closing = first_in(alpaca_log, t0 - 0.002, end, lambda e: e[2] == "dome/0: closing shutter")
        sim_closed = first_in(alpaca_log, t0 - 0.002, end + 5, lambda e: e[2] == "dome/0: shutter closed")
        sim_inject = first_in(
            plc_log,
            t0 - 0.002,
            end,
            lambda e: e[2].startswith("inject weather rain_rate") and not e[2].endswith("= 0.0"),
        )
        dome_closing = rec.first(DOME, "ShutterStatus", t0, end + 5, lambda v: v == SHUTTER_CLOSING)
        dome_closed = rec.first(DOME, "ShutterStatus", t0, end + 5, lambda v: v == SHUTTER_CLOSED)
        confirmed = first_in(oplog, t0, end + 5, lambda e: e[1] == "make safe" and e[2] == "ok")
        state_events = rec.events(CONDUCTOR, "State", t0, end + 5)
        moving = next((e for e in state_events if e[2] == site.moving), None)
        left_moving = next(
            (e for e in state_events if moving is not None and e[0] > moving[0] and e[2] != site.moving), None
        )
        mode_standby = rec.first(CONDUCTOR, "Mode", t0, end, lambda v: v == 5)
        reopened = rec.first(DOME, "ShutterStatus", end, float("inf"), lambda v: v == SHUTTER_OPEN)
        proxy_put = None
        if proxy is not None:
            proxy_put = next((t for t in proxy.arrivals("PUT /api/v1/dome/0/closeshutter") if t0 <= t < end), None)
        t1 = sim_closing
        t2_dome = dome_closed[1] if dome_closed else None
        t2_dcs = confirmed
        run = {
            "t0_unix": t0,
            "error": raw["error"],
            "loadavg": raw["loadavg"],
            "inject_round_trip_ms": (raw["inject_reply"] - t0) * 1e3,
            "plc_sim_inject_logged_s": rel(sim_inject),
            "plc_first_rainy_cycle_s": rel(first_cycle),  # inferred from the PLC's grid (see above)
            "plc_cycle_reported_rain_s": rel(plc_event[1]) if plc_event else None,  # the cycle the Plc read first
            "plc_event_arrived_s": rel(plc_event[0]) if plc_event else None,  # here: the Plc device's poll published it
            "plc_event_attribute": None,
            "weather_unsafe_s": rel(weather[1]) if weather else None,  # the Weather's time stamp on IsSafe=False
            "weather_unsafe_arrived_s": rel(weather[0]) if weather else None,
            "conductor_decided_s": rel(decided),  # operator log "make safe started"
            "conductor_standby_s": rel(mode_standby[1]) if mode_standby else None,
            "conductor_moving_s": rel(moving[1]) if moving else None,
            "t1_close_command_s": rel(t1),  # the Alpaca simulator executes CloseShutter (its log)
            "t1_proxy_s": rel(proxy_put),
            "dome_closing_s": rel(dome_closing[1]) if dome_closing else None,
            "mechanism_end_s": rel(t1 + shutter_time) if t1 is not None else None,  # the simulator's physics
            "sim_logged_closed_s": rel(sim_closed),  # at the first request after the end (a Dome poll)
            "t2_dome_closed_s": rel(t2_dome),  # Dome device read Closed (event time stamp)
            "t2_dome_closed_arrived_s": rel(dome_closed[0]) if dome_closed else None,
            "t2_confirmed_s": rel(t2_dcs),  # conductor: "make safe ok: shutter confirmed closed"
            "conductor_left_moving_s": rel(left_moving[1]) if left_moving else None,
            "reopen_s_after_clear": (reopened[1] - end) if reopened else None,
        }
        if plc_event is not None:
            run["plc_event_attribute"] = next(a for a in RAIN_ATTRS if plc_event in rec.events(PLC, a, t0, end))
        out.append(run)
    return out


def breakdown(run: dict[str, Any]) -> dict[str, float | None]:
    """Consecutive segments from t0 to t1 and from t1 to t2 (s); None where a moment is missing."""

    def seg(a: str | None, b: str) -> float | None:
        start = 0.0 if a is None else run[a]
        return None if start is None or run[b] is None else run[b] - start

    return {
        "plc_cycle": seg(None, "plc_first_rainy_cycle_s"),
        "plc_poll": seg("plc_first_rainy_cycle_s", "plc_event_arrived_s"),
        "weather": seg("plc_event_arrived_s", "weather_unsafe_s"),
        "conductor_decision": seg("weather_unsafe_s", "conductor_decided_s"),
        "conductor_to_dome": seg("conductor_decided_s", "t1_close_command_s"),
        "mechanism": seg("t1_close_command_s", "mechanism_end_s"),
        "dome_sees_closed": seg("mechanism_end_s", "t2_dome_closed_s"),
        "conductor_confirms": seg("t2_dome_closed_s", "t2_confirmed_s"),
    }


SEGMENT_DOC = {
    "plc_cycle": "rain injected -> the first PLC cycle after it (the PLC's fixed cycle grid, from its time stamps)",
    "plc_poll": "that cycle -> the Plc device's poll publishes rain (change event arrival at the bench; a Plc poll "
    "slower than the cycle reads a later cycle)",
    "weather": "Plc event -> Weather IsSafe=False (Weather's time stamp; includes the event hop Plc -> Weather)",
    "conductor_decision": "IsSafe=False -> conductor logs 'make safe started' (event hop + its evaluation)",
    "conductor_to_dome": "conductor decision -> Alpaca simulator executes closeshutter (operator-log write, "
    "worker hand-off, new DeviceProxy, Dome command, HTTP PUT)",
    "mechanism": "the shutter stroke (the simulator's --shutter-time)",
    "dome_sees_closed": "mechanism end -> Dome device reads Closed (its MovingPeriod poll)",
    "conductor_confirms": "Dome reads Closed -> conductor logs 'shutter confirmed closed' (event hop + its 50 ms "
    "sleep loop + operator-log write)",
}


def references(site: Site, fac: common.BenchFacility, n: int = 15) -> dict[str, Any]:
    """What some steps on the path cost when timed alone, from this process (scale for the breakdown)."""
    import tango

    from db.app import RunStore

    out: dict[str, Any] = {}
    times = []
    for _ in range(n):
        started = time.perf_counter()
        proxy = tango.DeviceProxy(fac.name(DOME))  # what the conductor's _send does for every action
        proxy.set_timeout_millis(3000)
        proxy.command_inout("State")
        times.append(time.perf_counter() - started)
    out["new_deviceproxy_plus_command_ms"] = stats([t * 1e3 for t in times])
    store = RunStore.open(f"sqlite:///{fac.root / 'scratch-oplog.db'}")
    try:
        times = []
        for i in range(n):
            started = time.perf_counter()
            store.log("bench", "", "make safe started", "bench/safety", "ok", f"scratch entry {i}")
            times.append(time.perf_counter() - started)
    finally:
        store.close()
    out["operator_log_write_ms"] = stats([t * 1e3 for t in times])
    return out


def run_config(args: argparse.Namespace, poll_period: float, budget_s: float, con: Any) -> dict[str, Any]:
    started = time.monotonic()
    label = f"PLC tick {args.tick:g} s, Plc poll {poll_period:g} s"
    out: dict[str, Any] = {"label": label, "tick_s": args.tick, "plc_poll_period_s": poll_period, "runs": []}
    proxy = None
    with common.BenchFacility(prefix="dcs-bench-safety-", keep=args.keep) as fac:
        site: Site | None = None
        try:
            plc_port, alpaca_port = common.free_port(), common.free_port()
            while alpaca_port == plc_port:
                alpaca_port = common.free_port()
            dome_port = alpaca_port
            if args.proxy:
                from safety_proxy import TimestampProxy

                proxy = TimestampProxy(alpaca_port)
                dome_port = proxy.port
            fac.write(facility_spec(fac, args, poll_period, plc_port, alpaca_port, dome_port))
            up = fac.up(timeout=args.up_timeout)
            out["up_wall_s"] = up["wall_s"]
            site = Site(fac, args, plc_port)
            site.subscribe()
            up_done = time.time()
            out["ready_after_up_s"] = site.wait_ready(args.up_timeout) - up_done
            con.print(f"[{label}] up in {up['wall_s']:.1f} s, conductor SCHEDULER_READY with the dome open; "
                      f"load {loadavg()} ({fac.root})")  # fmt: skip
            rng = random.Random(args.seed)
            raws = []
            per_run = None
            for i in range(args.runs):
                left = budget_s - (time.monotonic() - started)
                if per_run is not None and left < per_run * 1.3 + 5:
                    con.print(f"[{label}] stopping after {i} runs: {left:.0f} s left of this configuration's budget")
                    break
                run_started = time.monotonic()
                try:
                    raws.append(site.run_once(rng))
                except (TimeoutError, OSError, RuntimeError) as exc:  # the site is not back to ready: stop here
                    out["aborted"] = f"run {i + 1}: {exc}"
                    con.print(f"[{label}] aborted at run {i + 1}: {exc}")
                    break
                per_run = time.monotonic() - run_started
                if raws[-1]["error"]:
                    con.print(f"[{label}] run {i + 1}: {raws[-1]['error']}")
                if args.verbose:
                    con.print(f"[{label}] run {i + 1} done in {per_run:.1f} s")
            time.sleep(0.3)  # last log lines and operator-log entries
            alpaca_log = log_lines(find_log(fac, "alpaca"))
            plc_log = log_lines(find_log(fac, "plc"))
            oplog = operator_log(operator_db_url(fac))
            out["runs"] = analyse(site, args.tick, raws, alpaca_log, plc_log, oplog, args.shutter_time, proxy)
            out["references"] = references(site, fac)
            if proxy is not None:
                from safety_proxy import added_latency

                out["proxy"] = added_latency(proxy.port, alpaca_port)
                out["proxy"]["requests_forwarded"] = proxy.requests
            out["event_errors"] = site.rec.errors[:20]
            out["fallback_reads"] = site.rec.refreshes
            out["values_only_a_direct_read_gave"] = site.rec.refresh_changes[:20]
            out["sim_plc_late_cycles"] = sum(1 for _, _, m in plc_log if "PLC cycle late" in m)
        finally:
            if site is not None:
                site.close()
            if proxy is not None:
                proxy.close()
            down_started = time.perf_counter()
    out["down_s"] = time.perf_counter() - down_started
    out["wall_s"] = time.monotonic() - started
    out["summary"] = summarise(out["runs"], args.shutter_time, proxy is not None)
    return out


def summarise(runs: list[dict[str, Any]], shutter_time: float, with_proxy: bool) -> dict[str, Any]:
    good = [r for r in runs if not r["error"]]

    def col(key: str) -> list[float]:
        return [r[key] for r in good if r[key] is not None]

    command = stats(col("t1_close_command_s"))
    dome = stats(col("t2_dome_closed_s"))
    confirmed = stats(col("t2_confirmed_s"))
    over_dome = stats([v - shutter_time for v in col("t2_dome_closed_s")])
    over_confirmed = stats([v - shutter_time for v in col("t2_confirmed_s")])
    segments = {
        name: stats([breakdown(r)[name] for r in good if breakdown(r)[name] is not None]) for name in SEGMENT_DOC
    }
    missing = sum(1 for r in good if r["t1_close_command_s"] is None or r["t2_confirmed_s"] is None)
    # "worst" holds only if every run completed with every moment seen: a run that never got there fails it
    all_seen = bool(runs) and len(good) == len(runs) and missing == 0
    # Where the Plc read the first rainy cycle itself, the inferred first cycle must match it (within jitter).
    check = [
        (r["plc_cycle_reported_rain_s"] - r["plc_first_rainy_cycle_s"]) * 1e3 for r in good
        if r["plc_cycle_reported_rain_s"] is not None and r["plc_first_rainy_cycle_s"] is not None
    ]  # fmt: skip
    summary: dict[str, Any] = {
        "runs": len(runs),
        "plc_cycle_read_minus_first_rainy_cycle_ms": stats(check),
        "runs_ok": len(good),
        "runs_missing_a_moment": missing,
        "command_s": command,
        "closed_dome_s": dome,
        "closed_confirmed_s": confirmed,
        "closed_dome_minus_mechanism_s": over_dome,
        "closed_confirmed_minus_mechanism_s": over_confirmed,
        "breakdown_s": segments,
        "inject_round_trip_ms": stats([r["inject_round_trip_ms"] for r in runs]),
        "reopen_after_clear_s": stats(col("reopen_s_after_clear")),
        "goal_command_met": {
            "median": command["median"] is not None and command["median"] <= GOAL_COMMAND_S,
            "worst": command["worst"] is not None and command["worst"] <= GOAL_COMMAND_S and all_seen,
        },
        "goal_closed_met": {
            "median": over_confirmed["median"] is not None and over_confirmed["median"] <= GOAL_MARGIN_S,
            "worst": over_confirmed["worst"] is not None and over_confirmed["worst"] <= GOAL_MARGIN_S and all_seen,
        },
    }
    if with_proxy:
        diffs = [
            r["t1_close_command_s"] - r["t1_proxy_s"]
            for r in good
            if r["t1_proxy_s"] is not None and r["t1_close_command_s"] is not None
        ]
        summary["t1_proxy_s"] = stats(col("t1_proxy_s"))
        summary["t1_log_minus_proxy_ms"] = stats([d * 1e3 for d in diffs])
    return summary


# --------------------------------------------------------------------- output
def f3(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def show(data: dict[str, Any], con: Any) -> None:
    p = data["parameters"]
    rows = []
    for c in data["configs"]:
        s = c["summary"]
        rows.append([
            c["label"], f"{s['runs_ok']}/{s['runs']}",
            s["command_s"]["median"], s["command_s"]["worst"],
            s["closed_dome_s"]["median"], s["closed_dome_s"]["worst"],
            s["closed_confirmed_s"]["median"], s["closed_confirmed_s"]["worst"],
            s["closed_confirmed_minus_mechanism_s"]["median"], s["closed_confirmed_minus_mechanism_s"]["worst"],
            "yes" if s["goal_command_met"]["worst"] else ("median only" if s["goal_command_met"]["median"] else "no"),
            "yes" if s["goal_closed_met"]["worst"] else ("median only" if s["goal_closed_met"]["median"] else "no"),
        ])  # fmt: skip
    con.print(common.table(
        f"Rain -> dome, s from the INJECT (median / worst of {p['runs']}; shutter stroke {p['shutter_time_s']:g} s; "
        f"goals: command ≤ {GOAL_COMMAND_S:g} s, closed ≤ stroke + {GOAL_MARGIN_S:g} s)",
        ["configuration", "runs ok", "CloseShutter med", "worst", "Dome reads Closed med", "worst",
         "conductor confirmed med", "worst", "confirmed − stroke med", "worst", "command goal", "closed goal"],
        rows,
    ))  # fmt: skip
    for c in data["configs"]:
        s = c["summary"]
        seg_rows = [
            [name, v["median"] * 1e3 if v["median"] is not None else None, v["worst"] * 1e3 if v["worst"] is not None else None,
             v["best"] * 1e3 if v["best"] is not None else None, SEGMENT_DOC[name]]
            for name, v in s["breakdown_s"].items()
        ]  # fmt: skip
        con.print(common.table(
            f"{c['label']}: where the time goes, ms (each segment's median / worst / best over the runs; "
            "the medians need not add up to the total's)",
            ["segment", "median", "worst", "best", "from -> to"], seg_rows,
        ))  # fmt: skip
        ref = c.get("references", {})
        con.print(
            f"{c['label']}: Dome reads Closed − stroke median {f3(s['closed_dome_minus_mechanism_s']['median'])} s "
            f"(worst {f3(s['closed_dome_minus_mechanism_s']['worst'])}); INJECT round trip median "
            f"{f3(s['inject_round_trip_ms']['median'])} ms; reopen after the rain cleared median "
            f"{f3(s['reopen_after_clear_s']['median'])} s" + (f"; ABORTED {c['aborted']}" if c.get("aborted") else "")
        )
        chk = s["plc_cycle_read_minus_first_rainy_cycle_ms"]
        con.print(
            f"{c['label']}: the PLC cycle the Plc read first with rain − the first rainy cycle (inferred from the grid): "
            f"median {f3(chk['median'])} ms, worst {f3(chk['worst'])}, best {f3(chk['best'])} (≈ 0: the Plc read the "
            "first rainy cycle itself; multiples of the tick: cycles it never read)"
        )
        if ref:
            con.print(
                f"{c['label']}: alone, from this process: new DeviceProxy + one command to the Dome "
                f"{ref['new_deviceproxy_plus_command_ms']['median']:.1f} ms median (worst "
                f"{ref['new_deviceproxy_plus_command_ms']['worst']:.1f}); one operator-log write (sqlite) "
                f"{ref['operator_log_write_ms']['median']:.1f} ms median (worst {ref['operator_log_write_ms']['worst']:.1f})"
            )
        if "proxy" in c:
            px = c["proxy"]
            con.print(
                f"{c['label']}: proxy adds {px['added_ms_median']:.3f} ms per dome request (median round trip "
                f"{px['via_proxy_ms_median']:.3f} via, {px['direct_ms_median']:.3f} direct); simulator log − proxy "
                f"arrival for CloseShutter: median {f3(s['t1_log_minus_proxy_ms']['median'])} ms, worst "
                f"{f3(s['t1_log_minus_proxy_ms']['worst'])} ms (the log is truncated to the ms)"
            )
        con.print(
            f"{c['label']}: dcs up {c.get('up_wall_s', 0):.1f} s, down {c['down_s']:.1f} s, whole configuration "
            f"{c['wall_s']:.0f} s; direct reads {c.get('fallback_reads')} (values only they gave: "
            f"{c.get('values_only_a_direct_read_gave') or 'none'}); event errors {len(c.get('event_errors', []))}; "
            f"late PLC cycles logged {c.get('sim_plc_late_cycles')}"
        )
    con.print(
        f"loadavg before {data['loadavg_before']}, after {data['loadavg_after']}; whole run {data['wall_s']:.0f} s"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=(
            "Safety benchmark: from rain onset in the PLC simulator to the dome's CloseShutter at the Alpaca "
            "simulator, and to the shutter confirmed closed, over N runs (median and worst). Goals: command "
            f"≤ {GOAL_COMMAND_S:g} s (pyobs: about 10-15 s); closed ≤ shutter stroke + {GOAL_MARGIN_S:g} s."
        ),
        epilog=(
            "One site per --poll-periods value, each in a temporary directory (PLC and Alpaca simulators, Plc, "
            "Weather, Mount, Dome, 2 Cameras, 2 FilterWheels, ObservatoryConductor), free ports of 127.0.0.1, "
            "`dcs down` at the end. At the defaults about 5 minutes on 2 cores; --time-limit bounds it (runs "
            "not started in time are left out and said so)."
        ),
    )
    parser.add_argument("--runs", type=int, default=20, help="rain events per configuration (default 20)")
    parser.add_argument("--tick", type=float, default=0.1, help="PLC simulator cycle, s (default 0.1)")
    parser.add_argument(
        "--poll-periods", type=float, nargs="+", default=[0.1, 0.25],
        help="Plc device PollPeriod of each configuration, s (default: 0.1, the PLC cycle, then 0.25, demo.yaml's)",
    )  # fmt: skip
    parser.add_argument(
        "--shutter-time", type=float, default=2.1,
        help="the Alpaca simulator's shutter stroke, s (default 2.1: not a multiple of the Dome's 0.2 s MovingPeriod, "
        "whose polls are anchored at the command; see bench/README.md)",
    )  # fmt: skip
    parser.add_argument("--hold-off", type=float, default=1.0, help="every weather rule's hold_off, s (default 1)")
    parser.add_argument("--rain", type=float, default=5.0, help="rain_rate injected, mm/h (default 5)")
    parser.add_argument(
        "--settle", type=float, default=0.2, help="quiet time before each rain once the site is ready, s (default 0.2)"
    )
    parser.add_argument(
        "--jitter", type=float, default=None,
        help="plus a uniform random 0..J s, so rain falls at every phase of the PLC cycle and Plc poll "
        "(default: the longest of tick and poll periods)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=1, help="random seed (jitter, PLC weather) (default 1)")
    parser.add_argument(
        "--proxy", action="store_true",
        help="also put a timestamping TCP proxy (bench/safety_proxy.py) between the Dome device and the Alpaca "
        "simulator: t1 as DCS sent it, and what the hop costs",
    )  # fmt: skip
    parser.add_argument(
        "--time-limit",
        type=float,
        default=340.0,
        help="whole run budget, s, split over the configurations (default 340)",
    )
    parser.add_argument("--up-timeout", type=float, default=90.0, help="dcs up --timeout and first readiness, s")
    parser.add_argument("--verbose", action="store_true", help="a line per run")
    common.add_common_arguments(parser)
    args = parser.parse_args(argv)
    if args.runs < 1 or args.tick <= 0 or args.shutter_time <= 0 or min(args.poll_periods) <= 0:
        parser.error("--runs >= 1; --tick, --shutter-time and --poll-periods > 0")
    if args.jitter is None:
        args.jitter = max([args.tick, *args.poll_periods])
    os.environ.pop("DCS_DB_URL", None)  # the conductor gets its sqlite file explicitly; never a shared database
    con = common.console()
    data: dict[str, Any] = {
        "benchmark": "safety",
        "goal": {"command_s_max": GOAL_COMMAND_S, "closed_minus_mechanism_s_max": GOAL_MARGIN_S},
        "parameters": {
            "runs": args.runs,
            "tick_s": args.tick,
            "plc_poll_periods_s": args.poll_periods,
            "shutter_time_s": args.shutter_time,
            "hold_off_s": args.hold_off,
            "rain_mm_h": args.rain,
            "settle_s": args.settle,
            "jitter_s": args.jitter,
            "seed": args.seed,
            "proxy": args.proxy,
            "alpaca_poll_s": 1.0,
            "alpaca_moving_poll_s": 0.2,
            "weather_evaluate_period_s": 1.0,
            "conductor": {"Night": "night", "ShutterCloseTimeout": 15, "CloseRetries": 1},
        },  # fmt: skip
        "environment": common.environment(),
        "loadavg_before": loadavg(),
        "configs": [],
    }
    started = time.monotonic()
    for i, period in enumerate(args.poll_periods):
        budget = (args.time_limit - (time.monotonic() - started)) / (len(args.poll_periods) - i)
        data["configs"].append(run_config(args, period, budget, con))
    data["loadavg_after"] = loadavg()
    data["wall_s"] = time.monotonic() - started
    show(data, con)
    if not args.no_json:
        common.print_json(data)
    common.write_json(data, args.json_file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
