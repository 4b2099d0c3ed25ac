"""The ECC servers of a DAQ as one group: their states mirrored from events, transitions in order.

The run sequencer drives every ECC server through this class. It never
polls: each server's CoboState, Transitioning and LastError arrive as change
events into a mirror, and waiting for a transition is waiting on a
condition variable that the event callbacks notify.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import IntEnum

import tango

from device_servers.daq.ecc_link import STEPS, CoboState

WATCHED = ("CoboState", "Transitioning", "LastError", "SelectedConfig", "State")


class OverallState(IntEnum):
    """What the system-wide run control shows."""

    Idle = 0
    Described = 1
    Prepared = 2
    Ready = 3
    Running = 4
    Mixed = 5
    Error = 6


FROM_COBO = {
    CoboState.Idle: OverallState.Idle,
    CoboState.Described: OverallState.Described,
    CoboState.Prepared: OverallState.Prepared,
    CoboState.Ready: OverallState.Ready,
    CoboState.Running: OverallState.Running,
}


class SequenceError(Exception):
    """A step of a sequence failed; the message names the device and the cause."""


@dataclass
class EccMirror:
    """The last known values of one ECC server device, from its events."""

    name: str
    cobo: CoboState | None = None
    transitioning: bool = False
    last_error: str = ""
    reachable: bool = False
    problem: str = "no event yet"
    selected_config: str = ""


class EccGroup:
    """Every ECC server of the DAQ; MuTAnT servers listed separately for the ordering rules."""

    def __init__(self, names: Iterable[str], mutants: Iterable[str], on_change: Callable[[], None]) -> None:
        self.names = list(names)
        self.mutants = [n for n in mutants if n in self.names]
        self.cobos = [n for n in self.names if n not in self.mutants]
        self.mirrors = {n: EccMirror(n) for n in self.names}
        self.changed = threading.Condition()
        self._on_change = on_change
        self._proxies: dict[str, tango.DeviceProxy] = {}
        self._subscriptions: list[tuple[tango.DeviceProxy, int]] = []
        self._pool = ThreadPoolExecutor(max_workers=max(4, len(self.names)), thread_name_prefix="ecc-call")

    # ------------------------------------------------------------------ events
    def subscribe(self) -> None:
        """Subscribe to every server's events; a server not yet up is retried by Tango itself."""
        for name in self.names:
            proxy = tango.DeviceProxy(name)
            proxy.set_timeout_millis(5000)
            self._proxies[name] = proxy
            for attr in WATCHED:
                event_id = proxy.subscribe_event(
                    attr, tango.EventType.CHANGE_EVENT, lambda event, n=name: self._event(n, event), stateless=True
                )
                self._subscriptions.append((proxy, event_id))

    def unsubscribe(self) -> None:
        for proxy, event_id in self._subscriptions:
            try:
                proxy.unsubscribe_event(event_id)
            except tango.DevFailed:
                pass
        self._subscriptions.clear()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _event(self, name: str, event: tango.EventData) -> None:
        mirror = self.mirrors[name]
        attr = event.attr_name.rsplit("/", 1)[-1].lower()
        with self.changed:
            if event.err:
                mirror.reachable = False
                mirror.problem = event.errors[0].desc.strip()
            else:
                value = event.attr_value.value
                invalid = event.attr_value.quality == tango.AttrQuality.ATTR_INVALID
                if attr == "cobostate":
                    mirror.cobo = None if invalid else CoboState(int(value))
                    mirror.reachable = not invalid
                    mirror.problem = "" if not invalid else "its ECC server does not answer"
                elif attr == "transitioning" and not invalid:
                    mirror.transitioning = bool(value)
                elif attr == "lasterror" and not invalid:
                    mirror.last_error = value or ""
                elif attr == "selectedconfig" and not invalid:
                    mirror.selected_config = value or ""
                elif attr == "state" and value == tango.DevState.UNKNOWN:
                    mirror.reachable = False
                    mirror.problem = "its ECC server does not answer"
            self.changed.notify_all()
        self._on_change()

    # ------------------------------------------------------------------ state
    def overall(self) -> tuple[OverallState, str]:
        """The system-wide state and why (for Mixed and Error, which server is where)."""
        with self.changed:
            mirrors = list(self.mirrors.values())
        broken = [m for m in mirrors if not m.reachable or m.last_error]
        if broken:
            return OverallState.Error, "; ".join(f"{m.name}: {m.last_error or m.problem}" for m in broken)
        states = {m.cobo for m in mirrors}
        if len(states) == 1:
            only = states.pop()
            if only in FROM_COBO:
                return FROM_COBO[only], ""
        return OverallState.Mixed, ", ".join(f"{m.name} {m.cobo.name if m.cobo else '?'}" for m in mirrors)

    def transitioning(self) -> bool:
        with self.changed:
            return any(m.transitioning for m in self.mirrors.values())

    # ------------------------------------------------------------------ transitions
    def run(self, operation: str, target: CoboState, order: list[list[str]], timeout: float) -> None:
        """Ask each group in turn, every server of a group at once, and wait for all to reach ``target``."""
        for group in order:
            if group:
                self._run_group(operation, target, group, timeout)

    def _run_group(self, operation: str, target: CoboState, group: list[str], timeout: float) -> None:
        futures = {name: self._pool.submit(self._proxies[name].command_inout, operation) for name in group}
        refused = []
        for name, future in futures.items():
            try:
                future.result()
            except tango.DevFailed as exc:
                refused.append(f"{name}: {exc.args[0].desc.strip()}")
        if refused:
            raise SequenceError(f"{operation} refused: " + "; ".join(refused))
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                failed = [m for n in group if (m := self.mirrors[n]).last_error or not m.reachable]
                if failed:
                    raise SequenceError(
                        f"{operation} failed: " + "; ".join(f"{m.name}: {m.last_error or m.problem}" for m in failed)
                    )
                if all(self.mirrors[n].cobo == target and not self.mirrors[n].transitioning for n in group):
                    return
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    late = [n for n in group if self.mirrors[n].cobo != target or self.mirrors[n].transitioning]
                    raise SequenceError(f"{operation}: {', '.join(late)} did not reach {target.name} within {timeout:g} s")
                self.changed.wait(remaining)


def ordering(operation: str, cobos: list[str], mutants: list[str]) -> list[list[str]]:
    """The MuTAnT rules: CoBo servers first for describe, configure and start; MuTAnT first for prepare and stop."""
    if operation in ("Prepare", "Stop"):
        return [mutants, cobos]
    if operation in ("Describe", "Configure", "Start"):
        return [cobos, mutants]
    return [cobos + mutants]


def target_of(operation: str) -> CoboState:
    return STEPS[operation][1]
