"""The base class of every DCS hardware device.

What every hardware device gets from :class:`DcsDevice`:

- a **poller thread** that owns the conversation with the hardware: it
  (re)connects the link with back-off, reads each polled attribute on its own
  period, caches the reading and pushes change and archive events. Tango
  request threads only ever read that cache, so a slow or dead piece of
  hardware never blocks a client;
- **State and Status** that say what is going on: INIT while connecting,
  ON when all is well, ALARM when some readings are unusable, UNKNOWN with the
  address and the error while the hardware cannot be reached; recovery is
  automatic when it returns. State and Status push change events;
- a **Heartbeat** counter, advanced by the poller once a second and pushed
  with events, so a supervisor can tell a stuck device from a quiet one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tango
from tango import AttrQuality, DevState
from tango.server import Device, attribute

from device_servers.common.link import Backoff, CommandRefused, HardwareLink, LinkError

log = logging.getLogger(__name__)

HEARTBEAT_PERIOD = 1.0


class ReplyError(Exception):
    """The hardware answered, but the answer cannot be used (garbage, an error code)."""


@dataclass
class Reading:
    """The last value read from the hardware, as clients will see it."""

    value: Any
    timestamp: float
    quality: AttrQuality = AttrQuality.ATTR_VALID
    error: str | None = None


@dataclass
class Poll:
    """One attribute the poller reads on its own period."""

    name: str
    period: float
    read: Callable[[], Any]
    empty: Any = 0.0  # sent with INVALID readings, where Tango wants a value of the right type
    next_due: float = field(default=0.0)


def device_error(reason: str, message: str, origin: str) -> tango.DevFailed:
    """A DevFailed whose description is ``message`` (the first thing clients show)."""
    try:
        tango.Except.throw_exception(reason, message, origin)
    except tango.DevFailed as exc:
        return exc
    raise AssertionError("unreachable")


class DcsDevice(Device):
    """Link supervision, polling, heartbeat and events for one piece of hardware.

    Subclasses implement :meth:`create_link` and register their polled
    attributes with :meth:`add_poll`; they may override :meth:`on_connected`
    (identify the hardware) and :meth:`begin_poll_cycle`.
    """

    def init_device(self) -> None:
        super().init_device()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._polls: dict[str, Poll] = {}
        self._readings: dict[str, Reading] = {}
        self._heartbeat = 0
        self._condition: tuple[DevState, str] | None = None
        self._identity = ""
        self.link: HardwareLink | None = None
        for name in ("State", "Status"):
            self.set_change_event(name, True, False)
            self.set_archive_event(name, True, False)
        self.set_change_event("Heartbeat", True, True)
        self.set_archive_event("Heartbeat", True, True)
        self.set_condition(DevState.INIT, "Starting")
        try:
            self.link = self.create_link()
        except Exception as exc:  # a bad property or protocol file: say so, keep serving
            log.exception("%s: set-up failed", self.get_name())
            self.set_condition(DevState.FAULT, f"{self.get_name()}: set-up failed: {exc}")
        if getattr(self, "_attributes_ready", False):  # Init on a running device
            self._start_poller()

    def initialize_dynamic_attributes(self) -> None:
        try:
            self.create_dynamic_attributes()
        except Exception as exc:  # keep serving, with a Status that says what is wrong
            log.exception("%s: cannot create attributes", self.get_name())
            detail = exc.args[0].desc if isinstance(exc, tango.DevFailed) else str(exc)
            self.set_condition(DevState.FAULT, f"{self.get_name()}: cannot create attributes: {detail}")
            if self.link is not None:
                self.link.close()
            self.link = None
            self._polls.clear()
        for name in self._polls:  # static attributes read by the poller push events like dynamic ones
            self.set_change_event(name, True, True)
            self.set_archive_event(name, True, True)
        # The poller starts only now, so that it never pushes an event for an attribute not yet made.
        self._attributes_ready = True
        self._start_poller()

    def _start_poller(self) -> None:
        self._thread = threading.Thread(
            target=self._poll_forever, name=f"poller {self.get_name()}", daemon=True
        )
        self._thread.start()

    def delete_device(self) -> None:
        self._stop.set()
        self._wake.set()
        thread = getattr(self, "_thread", None)
        if thread is not None:
            thread.join(timeout=5.0)
        if self.link is not None:
            self.link.close()
        super().delete_device()

    # ----------------------------------------------------------------- subclass API
    def create_link(self) -> HardwareLink | None:
        """The link to this device's hardware (None for a device without hardware)."""
        return None

    def on_connected(self) -> None:
        """Called in the poller thread right after the link connects."""

    def begin_poll_cycle(self) -> None:
        """Called in the poller thread before each batch of due polls."""

    def on_disconnected(self, reason: str) -> None:
        """Called in the poller thread when the link is lost or cannot be made."""

    def refine_condition(self, state: DevState, status: str) -> tuple[DevState, str]:
        """Last word on State and Status while the hardware answers (MOVING during a transition, say)."""
        return state, status

    def create_dynamic_attributes(self) -> None:
        """Add attributes known only at run time (from a protocol file, say)."""

    def add_poll(self, poll: Poll) -> None:
        """Have the poller read ``poll`` from now on; its attribute reads the cache."""
        self._polls[poll.name] = poll
        self._readings.setdefault(
            poll.name, Reading(poll.empty, time.time(), AttrQuality.ATTR_INVALID, "not read yet")
        )
        self._wake.set()

    def poll_soon(self, *names: str) -> None:
        """Re-read these attributes now (after a write, say) instead of at their next period."""
        for name in names:
            if name in self._polls:
                self._polls[name].next_due = 0.0
        self._wake.set()

    def publish(self, name: str, value: Any, quality: AttrQuality = AttrQuality.ATTR_VALID) -> None:
        """Set a value computed outside the poller (a command's outcome, say) and push its events.

        The attribute reads it with :meth:`polled`; call ``set_change_event(name, True, False)`` and
        ``set_archive_event(name, True, False)`` once when the device is made.
        """
        reading = Reading(value, time.time(), quality)
        previous = self._readings.get(name)
        self._readings[name] = reading
        if previous is not None and previous.value == value and previous.quality == quality:
            return
        self.push_change_event(name, value, reading.timestamp, quality)
        self.push_archive_event(name, value, reading.timestamp, quality)

    def polled(self, name: str) -> tuple[Any, float, AttrQuality]:
        """The last reading of ``name`` as (value, time, quality): what a static attribute's read returns."""
        reading = self._readings.get(name)
        if reading is None:  # the attribute outlived its definition (Init after a bad protocol file)
            raise device_error("DCS_NotPolled", f"{self.get_name()}: {name} is not served: {self.get_status()}", "read")
        return reading.value, reading.timestamp, reading.quality

    def read_polled(self, attr: tango.Attribute) -> None:
        """fget of dynamic polled attributes: the last reading, never a hardware call."""
        attr.set_value_date_quality(*self.polled(attr.get_name()))

    def hardware_call(self, operation: str, action: Callable[[], Any]) -> Any:
        """Run a request to the hardware from a Tango thread, with errors that say what failed."""
        name = self.get_name()
        link = self.link
        if link is None or not link.connected:
            where = link.address if link is not None else "no hardware link"
            raise device_error(
                "DCS_HardwareUnreachable",
                f"{name}: {operation} failed: no connection to {where} (the device retries by itself)",
                operation,
            )
        try:
            return action()
        except LinkError as exc:
            link.close()
            self._wake.set()
            raise device_error("DCS_HardwareUnreachable", f"{name}: {operation} failed: {exc}", operation) from exc
        except (ReplyError, CommandRefused) as exc:
            raise device_error("DCS_HardwareRefused", f"{name}: {operation} refused by the hardware: {exc}", operation) from exc

    def refusal(self, operation: str, why: str) -> tango.DevFailed:
        """The error for a request refused before anything was sent: names the device, the operation and why."""
        return device_error("DCS_Refused", f"{self.get_name()}: {operation} refused: {why}", operation)

    def set_condition(self, state: DevState, status: str) -> None:
        """Set State and Status together, pushing events only when they change."""
        if self._condition == (state, status):
            return
        self._condition = (state, status)
        self.set_state(state)
        self.set_status(status)
        for name, value in (("State", state), ("Status", status)):
            self.push_change_event(name, value)
            self.push_archive_event(name, value)

    # ----------------------------------------------------------------- attributes
    @attribute(
        dtype=int,
        doc="Advances once a second while the device's poller is alive; "
        "a supervisor that sees it stop knows the device is stuck.",
        abs_change="1",
        archive_abs_change="1",
    )
    def Heartbeat(self) -> int:
        return self._heartbeat

    # ----------------------------------------------------------------- the poller
    def _poll_forever(self) -> None:
        backoff = Backoff()
        next_heartbeat = time.monotonic()
        next_connect = 0.0
        while not self._stop.is_set():
            try:
                next_heartbeat, next_connect = self._poll_once(backoff, next_heartbeat, next_connect)
            except Exception as exc:  # never let the poller (and the heartbeat) die silently
                log.exception("%s: poller error", self.get_name())
                self.set_condition(DevState.FAULT, f"{self.get_name()}: internal error in the poller: {exc!r} (retrying)")
                self._wake.wait(1.0)
                self._wake.clear()

    def _poll_once(self, backoff: Backoff, next_heartbeat: float, next_connect: float) -> tuple[float, float]:
        """One turn of the poller: heartbeat, (re)connect, due reads, then sleep until the next thing to do."""
        now = time.monotonic()
        if now >= next_heartbeat:
            self._beat()
            next_heartbeat = max(next_heartbeat + HEARTBEAT_PERIOD, now)
        wake_at = next_heartbeat
        link = self.link
        if link is not None and not link.connected and now >= next_connect:
            try:
                self._connect(link)
                backoff.reset()
            except LinkError as exc:
                delay = backoff.next_delay()
                next_connect = now + delay
                self._hardware_lost(link, str(exc), delay)
        if link is None or link.connected:
            self._poll_due(now)
            if self._polls:
                wake_at = min(wake_at, min(p.next_due for p in self._polls.values()))
        else:
            wake_at = min(wake_at, next_connect)
        self._wake.wait(max(0.0, wake_at - time.monotonic()))
        self._wake.clear()
        return next_heartbeat, next_connect

    def _connect(self, link: HardwareLink) -> None:
        link.connect()
        try:
            self.on_connected()
        except (ReplyError, CommandRefused) as exc:
            link.close()
            raise LinkError(f"{link.address} answered, but not as expected: {exc}") from exc
        for poll in self._polls.values():
            poll.next_due = 0.0
        log.info("%s: connected to %s", self.get_name(), link.address)

    def _poll_due(self, now: float) -> None:
        due = [p for p in self._polls.values() if p.next_due <= now]
        if not due:
            return
        self.begin_poll_cycle()
        cycle: list[tuple[Poll, Reading]] = []
        for poll in due:
            # Keep to the period rather than drifting by each cycle's own duration; when behind (or
            # asked to read early) start the schedule afresh instead of catching up in a burst.
            scheduled = poll.next_due + poll.period
            poll.next_due = scheduled if scheduled > now else now + poll.period
            try:
                value = poll.read()
            except LinkError as exc:
                if self.link is not None:
                    self.link.close()
                    self._hardware_lost(self.link, str(exc), 0.0)
                return
            except (ReplyError, CommandRefused) as exc:
                cycle.append((poll, Reading(poll.empty, time.time(), AttrQuality.ATTR_INVALID, str(exc))))
            except Exception as exc:  # a bug in one reader must not stop the poller (and the heartbeat)
                log.exception("%s: reading %s failed", self.get_name(), poll.name)
                cycle.append((poll, Reading(poll.empty, time.time(), AttrQuality.ATTR_INVALID, f"internal error: {exc!r}")))
            else:
                cycle.append((poll, Reading(value, time.time())))
        # Published together after the whole cycle was read, so that a client never sees, say, a slew
        # finished (Slewing false) beside the position read before it ended.
        for poll, reading in cycle:
            self._publish(poll, reading)
        self.update_condition()

    def _publish(self, poll: Poll, reading: Reading) -> None:
        previous = self._readings.get(poll.name)
        self._readings[poll.name] = reading
        if previous is not None and previous.quality == reading.quality and _same(previous.value, reading.value):
            return  # Tango would filter it out anyway; not pushing saves most of a poll's cost
        try:
            self.push_change_event(poll.name, reading.value, reading.timestamp, reading.quality)
            self.push_archive_event(poll.name, reading.value, reading.timestamp, reading.quality)
        except tango.DevFailed as exc:
            log.warning("%s: event for %s not pushed: %s", self.get_name(), poll.name, exc.args[0].desc)

    def _beat(self) -> None:
        self._heartbeat += 1
        self.push_change_event("Heartbeat", self._heartbeat)
        self.push_archive_event("Heartbeat", self._heartbeat)

    def _hardware_lost(self, link: HardwareLink, reason: str, retry_in: float) -> None:
        stamp = time.time()
        for poll in self._polls.values():
            previous = self._readings.get(poll.name)
            if previous is None or previous.quality != AttrQuality.ATTR_INVALID:
                self._publish(poll, Reading(poll.empty, stamp, AttrQuality.ATTR_INVALID, reason))
        self.on_disconnected(reason)
        retry = f"retrying in {retry_in:.1f} s" if retry_in else "reconnecting"
        self.set_condition(
            DevState.UNKNOWN,
            f"{self.get_name()}: hardware at {link.address} unreachable: {reason} ({retry})",
        )

    def update_condition(self) -> None:
        """Recompute State and Status from the readings (the poller does this after each cycle)."""
        bad = [(n, r.error) for n, r in self._readings.items() if r.error is not None]
        where = f"{self.link.address}" if self.link is not None else "no hardware"
        identity = f" ({self._identity})" if self._identity else ""
        if not bad:
            self.set_condition(
                *self.refine_condition(DevState.ON, f"Connected to {where}{identity}; {len(self._polls)} attributes polled")
            )
            return
        shown = "; ".join(f"{n}: {e}" for n, e in bad[:3])
        more = f" (and {len(bad) - 3} more)" if len(bad) > 3 else ""
        self.set_condition(
            *self.refine_condition(
                DevState.ALARM, f"Connected to {where}{identity}; {len(bad)} attributes unreadable: {shown}{more}"
            )
        )


def _same(a: Any, b: Any) -> bool:
    """Equal values, also for spectra (lists or numpy arrays)."""
    if isinstance(a, (list, tuple, np.ndarray)) or isinstance(b, (list, tuple, np.ndarray)):
        return bool(np.array_equal(np.asarray(a), np.asarray(b)))
    return bool(a == b)
