"""ObservatoryConductor (``obs/conductor/1``): the seed's Majordome, above all keeping the site safe.

Modes (seed 1.5 and 1.10.2): STARTING, PASSIVE_NO_PLC (the PLC does not
answer), PASSIVE (the PLC is not in AUTO: the site is run by hand),
STANDBY, REMOTE (an operator drives the instruments) and SCHEDULER, whose
sub-state is READY (safe, night, unlocked: open) or STANDBY (closed,
waiting). ``Locked`` holds the observatory in STANDBY; ``Bypass`` makes the
conductor ignore the weather (only while it is unsafe, as the seed asks).

Safety: when the weather turns unsafe (and is not bypassed), the PLC is
lost or the emergency stop is pressed, every open-shutter exposure is
aborted and the dome closed and the mount parked at the same time. Closure
is confirmed by reading ShutterStatus back; if it is not closed within
``ShutterCloseTimeout`` the close is sent again, and after that
``SafetyAlarm`` is raised (State ALARM) for an operator. Every change of
mode and every safety action goes to the operator log with its reason.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from enum import IntEnum
from typing import Any

import tango
from tango import DevState
from tango.server import attribute, command, device_property

from db.app import RunStore, database_url
from db.app.store import StoreError
from device_servers.common.device import DcsDevice, Poll
from device_servers.common.serve import serve
from device_servers.observatory.dome import ShutterStatus

log = logging.getLogger(__name__)


class Mode(IntEnum):
    STARTING = 0
    PASSIVE_NO_PLC = 1
    PASSIVE = 2
    STANDBY = 3
    REMOTE = 4
    SCHEDULER_STANDBY = 5
    SCHEDULER_READY = 6


SCHEDULER = (Mode.SCHEDULER_STANDBY, Mode.SCHEDULER_READY)


class ObservatoryConductor(DcsDevice):
    """Runs the observatory and keeps it safe."""

    Plc = device_property(dtype=str, default_value="obs/plc/1")
    Weather = device_property(dtype=str, default_value="obs/weather/1")
    Mount = device_property(dtype=str, default_value="obs/mount/1")
    Dome = device_property(dtype=str, default_value="obs/dome/1")
    Cameras = device_property(dtype=(str,), default_value=["obs/camera/vis", "obs/camera/nir"])
    ShutterCloseTimeout = device_property(dtype=float, default_value=15.0, doc="Expected closing time + margin (s)")
    CloseRetries = device_property(dtype=int, default_value=1, doc="CloseShutter sent again this many times")
    PlcBypassTimeout = device_property(dtype=float, default_value=5.0, doc="Wait for the PLC to confirm a bypass (s)")
    Night = device_property(dtype=str, default_value="auto", doc="auto (Sun altitude), night or day (tests, demos)")
    NightSunAltitude = device_property(dtype=float, default_value=-12.0, doc="Night when the Sun is below this (deg)")
    SiteLatitude = device_property(dtype=float, default_value=31.0442)
    SiteLongitude = device_property(dtype=float, default_value=-115.4637)
    SiteHeight = device_property(dtype=float, default_value=2800.0)
    Database = device_property(dtype=str, default_value="", doc="Application database (operator log); empty: var/dcs.db")

    def init_device(self) -> None:
        self._mode = Mode.STARTING
        self._locked = False
        self._bypass = False
        self._safe = False
        self._night = False
        self._night_checked = 0.0
        self._why = "starting"
        self._closing = False  # a make-safe sequence runs
        self._made_safe = False  # the current unsafe episode has had its make-safe
        self._opening = False
        self._inputs: dict[str, Any] = {}
        self._lock = threading.RLock()
        self._worker = ThreadPoolExecutor(max_workers=2, thread_name_prefix="conductor")  # make-safe and open
        self._actions = ThreadPoolExecutor(max_workers=8, thread_name_prefix="conductor-send")
        self._subscriptions: list[tuple[tango.DeviceProxy, int]] = []
        for name in ("Mode", "Safe", "Locked", "Bypass", "IsNight", "Reason", "SafetyAlarm"):
            self.set_change_event(name, True, False)
            self.set_archive_event(name, True, False)
        super().init_device()

    def delete_device(self) -> None:
        for proxy, event_id in self._subscriptions:
            try:
                proxy.unsubscribe_event(event_id)
            except tango.DevFailed:
                pass
        self._worker.shutdown(wait=False, cancel_futures=True)
        self._actions.shutdown(wait=False, cancel_futures=True)
        super().delete_device()

    def create_link(self) -> None:
        self.store = RunStore.open(self.Database or database_url(os.environ.get("DCS_STATE_DIR", "var")))
        self.publish("SafetyAlarm", "")
        self._publish_flags()
        for device, attr in (
            (self.Plc, "State"), (self.Plc, "Mode"), (self.Plc, "EmergencyStop"),
            (self.Weather, "IsSafe"), (self.Weather, "UnsafeReasons"), (self.Dome, "ShutterStatus"),
        ):  # fmt: skip
            proxy = tango.DeviceProxy(device)
            event_id = proxy.subscribe_event(
                attr, tango.EventType.CHANGE_EVENT, lambda e, k=f"{device}/{attr}": self._input(k, e), stateless=True
            )
            self._subscriptions.append((proxy, event_id))
        self.add_poll(Poll("Reason", 0.5, read=self._evaluate, empty=""))
        return None

    # ------------------------------------------------------------------ attributes
    @attribute(dtype=Mode, doc="STARTING, PASSIVE_NO_PLC, PASSIVE, STANDBY, REMOTE, SCHEDULER_STANDBY, SCHEDULER_READY")
    def Mode(self) -> tuple[Any, float, Any]:
        return self.polled("Mode")

    @attribute(dtype=bool, doc="Safe: the PLC answers, no emergency stop, and the weather is safe (or bypassed)")
    def Safe(self) -> tuple[Any, float, Any]:
        return self.polled("Safe")

    @attribute(dtype=bool, doc="Held in STANDBY by an operator (Lock/Unlock)")
    def Locked(self) -> tuple[Any, float, Any]:
        return self.polled("Locked")

    @attribute(dtype=bool, doc="The weather is ignored (BypassPlc/StopBypass)")
    def Bypass(self) -> tuple[Any, float, Any]:
        return self.polled("Bypass")

    @attribute(dtype=bool, doc="Night: the Sun below NightSunAltitude")
    def IsNight(self) -> tuple[Any, float, Any]:
        return self.polled("IsNight")

    @attribute(dtype=str, doc="Why the conductor is in its mode")
    def Reason(self) -> tuple[Any, float, Any]:
        return self.polled("Reason")

    @attribute(dtype=str, doc="Set when the site could not be made safe (shutter not closed): an operator must act")
    def SafetyAlarm(self) -> tuple[Any, float, Any]:
        return self.polled("SafetyAlarm")

    # ------------------------------------------------------------------ the control page (seed 1.10.2)
    @command(doc_in="Ignore the weather (only while it is UNSAFE); the PLC must confirm the bypass")
    def BypassPlc(self) -> None:
        if self._weather_safe():
            raise self.refusal("BypassPlc", "the weather is SAFE: there is nothing to bypass (use Lock to close)")
        self._set_plc_bypass(True)
        with self._lock:
            self._bypass = True
        self._log("BypassPlc", "ok", "weather safety bypassed by an operator")
        self.poll_soon("Reason")

    @command(doc_in="Take the weather into account again")
    def StopBypass(self) -> None:
        if not self._bypass:
            raise self.refusal("StopBypass", "no bypass is active")
        self._set_plc_bypass(False)
        with self._lock:
            self._bypass = False
        self._log("StopBypass", "ok", "weather safety active again")
        self.poll_soon("Reason")

    @command(doc_in="Close the observatory and hold it in STANDBY (only while SAFE)")
    def Lock(self) -> None:
        if not self._safe:
            raise self.refusal("Lock", f"the site is UNSAFE ({self._why}): it is already being kept closed")
        if self._mode not in (*SCHEDULER, Mode.REMOTE):
            raise self.refusal("Lock", f"mode {self._mode.name}: Lock acts from SCHEDULER or REMOTE")
        with self._lock:
            self._locked = True
        self._log("Lock", "ok", "observatory locked by an operator")
        self.poll_soon("Reason")

    @command(doc_in="End the lock (the scheduler may then open again by itself)")
    def Unlock(self) -> None:
        if not self._locked:
            raise self.refusal("Unlock", "the observatory is not locked")
        with self._lock:
            self._locked = False
        self._log("Unlock", "ok", "lock removed by an operator")
        self.poll_soon("Reason")

    @command(doc_in="Hand the instruments to an operator (unlocked, from SCHEDULER)")
    def GoRemote(self) -> None:
        if self._locked:
            raise self.refusal("GoRemote", "the observatory is LOCKED (Unlock first)")
        if self._mode not in SCHEDULER:
            raise self.refusal("GoRemote", f"mode {self._mode.name}: GoRemote acts from SCHEDULER_STANDBY or SCHEDULER_READY")
        self._change_mode(Mode.REMOTE, "an operator took the instruments")

    @command(doc_in="Give the observatory back to the scheduler (unlocked, SAFE, from REMOTE)")
    def GoScheduler(self) -> None:
        if self._locked:
            raise self.refusal("GoScheduler", "the observatory is LOCKED (Unlock first)")
        if not self._safe:
            raise self.refusal("GoScheduler", f"the site is UNSAFE ({self._why})")
        if self._mode != Mode.REMOTE:
            raise self.refusal("GoScheduler", f"mode {self._mode.name}: GoScheduler acts from REMOTE")
        self._change_mode(Mode.SCHEDULER_STANDBY, "handed back to the scheduler")

    @command(dtype_out=bool, doc_out="True when manual instrument commands are allowed now")
    def ManualAllowed(self) -> bool:
        return self._mode == Mode.REMOTE and not self._closing

    # ------------------------------------------------------------------ inputs and decisions
    def _input(self, key: str, event: tango.EventData) -> None:
        value: Any = None if event.err else event.attr_value.value
        with self._lock:
            self._inputs[key] = value
        self.poll_soon("Reason")  # decide now: safety must not wait for the next period

    def _weather_safe(self) -> bool:
        return bool(self._inputs.get(f"{self.Weather}/IsSafe"))

    def _evaluate(self) -> str:
        """One decision: safety first, then the mode; returns the reason shown."""
        with self._lock:
            inputs = dict(self._inputs)
        plc_state = inputs.get(f"{self.Plc}/State")
        plc_up = plc_state in (DevState.ON, DevState.ALARM)
        e_stop = bool(inputs.get(f"{self.Plc}/EmergencyStop"))
        weather_safe = bool(inputs.get(f"{self.Weather}/IsSafe"))
        reasons = [] if weather_safe else list(inputs.get(f"{self.Weather}/UnsafeReasons") or ["weather unknown"])
        if not plc_up:
            why = "the PLC does not answer"
        elif e_stop:
            why = "emergency stop pressed"
        elif not weather_safe and not self._bypass:
            why = "weather unsafe: " + "; ".join(reasons)
        else:
            why = ""
        self._safe, self._why = not why, why or "safe"
        if not why:
            self._made_safe = False  # the next unsafe episode makes safe again, whatever the shutter reads
        if self._bypass and weather_safe:  # the seed: the bypass only ever covers an unsafe PLC
            self._bypass = False
            self._log("StopBypass", "ok", "weather safe again: bypass ended by itself")
        self._update_night()
        if why:
            self._make_safe(why)
        self._decide_mode(plc_up, inputs.get(f"{self.Plc}/Mode"))
        self._publish_flags()
        return self._why if why else f"{self._mode.name}: safe, {'night' if self._night else 'day'}"

    def _decide_mode(self, plc_up: bool, plc_mode: str | None) -> None:
        mode = self._mode
        if not plc_up:
            target = Mode.PASSIVE_NO_PLC
        elif plc_mode != "AUTO":
            target = Mode.PASSIVE
        elif self._locked:
            target = Mode.STANDBY
        elif mode == Mode.REMOTE:
            target = Mode.REMOTE
        elif self._safe and self._night:
            target = Mode.SCHEDULER_READY
        else:
            target = Mode.SCHEDULER_STANDBY
        if target != mode:
            self._change_mode(target, self._why if not self._safe else f"{'night' if self._night else 'day'}, safe")
            if target == Mode.STANDBY and not self._closing:  # the seed: LOCK closes, then holds STANDBY
                self._closing = True
                self._worker.submit(self._close_everything, "locked by an operator")
        if target == Mode.SCHEDULER_READY and not self._closing:
            self._open_if_closed()

    def _change_mode(self, mode: Mode, why: str) -> None:
        previous, self._mode = self._mode, mode
        self.publish("Mode", int(mode))
        self._log("mode", "ok", f"{previous.name} -> {mode.name}: {why}")
        self.update_condition()

    # ------------------------------------------------------------------ making safe
    def _make_safe(self, why: str) -> None:
        """Once per unsafe episode (and again if the shutter is found open during it)."""
        shutter = self._inputs.get(f"{self.Dome}/ShutterStatus")
        closed = shutter is not None and int(shutter) == ShutterStatus.Closed
        if self._closing or (self._made_safe and closed):
            return
        self._closing = self._made_safe = True
        self._worker.submit(self._close_everything, why)  # first the action, then the paperwork
        self._log("make safe started", "ok", why)

    def _close_everything(self, why: str) -> None:
        """Abort exposures, close the dome and park the mount at the same time; confirm the closure."""
        try:
            actions = [(self.Dome, "CloseShutter"), (self.Mount, "Park")] + [(c, "AbortExposure") for c in self.Cameras]
            for action in actions:  # all at once; each failure is logged by _send; a slow one holds up nothing
                self._actions.submit(self._send, *action)
            for attempt in range(self.CloseRetries + 1):
                if self._wait_closed(self.ShutterCloseTimeout):
                    self.publish("SafetyAlarm", "")
                    self._log("make safe", "ok", f"shutter confirmed closed ({why})")
                    return
                if attempt < self.CloseRetries:
                    self._log("make safe retry", "failed", f"shutter not closed after {self.ShutterCloseTimeout:g} s: CloseShutter again")
                    self._send(self.Dome, "CloseShutter")
            alarm = f"shutter NOT closed {self.ShutterCloseTimeout * (self.CloseRetries + 1):g} s after {why}: check the dome now"
            self.publish("SafetyAlarm", alarm)
            self._log("make safe", "failed", alarm)
        finally:
            self._closing = False
            self.poll_soon("Reason")

    def _send(self, device: str, command_name: str) -> None:
        try:
            proxy = tango.DeviceProxy(device)
            proxy.set_timeout_millis(3000)
            if command_name == "AbortExposure" and int(proxy.read_attribute("CameraState").value) not in (1, 2):
                return  # nothing exposing on this camera
            proxy.command_inout(command_name)
        except tango.DevFailed as exc:
            self._log(f"{command_name} {device}", "failed", exc.args[0].desc.strip())

    def _wait_closed(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            shutter = self._inputs.get(f"{self.Dome}/ShutterStatus")
            if shutter is not None and int(shutter) == ShutterStatus.Closed:
                return True
            time.sleep(0.05)
        return False

    def _open_if_closed(self) -> None:
        shutter = self._inputs.get(f"{self.Dome}/ShutterStatus")
        if self._opening or shutter is None or int(shutter) != ShutterStatus.Closed:
            return
        self._opening = True

        def open_dome() -> None:
            try:
                self._send(self.Dome, "OpenShutter")
                self._log("open", "ok", "SCHEDULER_READY: safe night, dome opening")
            finally:
                self._opening = False

        self._worker.submit(open_dome)

    def _set_plc_bypass(self, on: bool) -> None:
        """Send the bypass to the PLC and wait until the PLC reports it (the seed: else 'PLC KO')."""
        try:
            plc = tango.DeviceProxy(self.Plc)
            plc.set_timeout_millis(3000)
            plc.command_inout("SetBypass", on)
            deadline = time.monotonic() + self.PlcBypassTimeout
            while plc.read_attribute("Bypass").value != on:
                if time.monotonic() > deadline:
                    raise self.refusal("BypassPlc", f"PLC KO: the PLC did not confirm the bypass within {self.PlcBypassTimeout:g} s")
                time.sleep(0.1)
        except tango.DevFailed as exc:
            if exc.args[0].reason == "DCS_Refused":
                raise
            raise self.refusal("BypassPlc" if on else "StopBypass", f"PLC KO: {exc.args[0].desc.strip()}") from exc

    def _update_night(self) -> None:
        if self.Night in ("night", "day"):
            self._night = self.Night == "night"
            return
        if time.monotonic() - self._night_checked < 60 and self._night_checked:
            return
        altitude = sun_altitude(self.SiteLatitude, self.SiteLongitude, self.SiteHeight)
        self._night = altitude < self.NightSunAltitude
        self._night_checked = time.monotonic()

    def _publish_flags(self) -> None:
        self.publish("Mode", int(self._mode))
        self.publish("Safe", self._safe)
        self.publish("Locked", self._locked)
        self.publish("Bypass", self._bypass)
        self.publish("IsNight", self._night)

    def _log(self, action: str, outcome: str, detail: str) -> None:
        log.info("%s: %s %s: %s", self.get_name(), action, outcome, detail)
        try:
            self.store.log("conductor", "", action, self.get_name(), outcome, detail)
        except StoreError:
            log.exception("operator log not written")

    def refine_condition(self, state: DevState, status: str) -> tuple[DevState, str]:
        if state not in (DevState.ON, DevState.ALARM):
            return state, status
        alarm = self.polled("SafetyAlarm")[0] if "SafetyAlarm" in self._readings else ""
        text = f"{self._mode.name}{', LOCKED' if self._locked else ''}{', BYPASS' if self._bypass else ''}; {self._why}"
        if alarm:
            return DevState.ALARM, f"SAFETY ALARM: {alarm}; {text}"
        if self._closing:
            return DevState.MOVING, f"making safe: {text}"
        return (DevState.ON if self._safe else DevState.CLOSE), text


def sun_altitude(latitude: float, longitude: float, height: float, when: str | None = None) -> float:
    """The Sun's altitude (deg) at the site, now or at ``when`` (ISO, UTC), with astropy."""
    from astropy import units as u
    from astropy.coordinates import AltAz, EarthLocation, get_sun
    from astropy.time import Time

    moment = Time(when, scale="utc") if when else Time.now()
    site = EarthLocation(lat=latitude * u.deg, lon=longitude * u.deg, height=height * u.m)
    return float(get_sun(moment).transform_to(AltAz(obstime=moment, location=site)).alt.deg)


def main(args: list[str] | None = None) -> None:
    """Console script ``ObservatoryConductor <instance>``."""
    serve((ObservatoryConductor,), "ObservatoryConductor", args)


if __name__ == "__main__":
    main()
