"""EccServer: one GET ECC server and the data sources (CoBos, MuTAnT) behind it.

Transitions never block the device: a command checks that the step is
allowed, returns at once, and the SOAP call runs in a worker thread; the
poller follows GetState (faster while a transition runs) and pushes
``CoboState`` and ``Transitioning`` change events, which is what the run
sequencer waits on.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import tango
from tango import AttrWriteType, DevState
from tango.server import attribute, command, device_property

from device_servers.common.device import DcsDevice, Poll, ReplyError
from device_servers.common.link import LinkError
from device_servers.common.serve import serve
from device_servers.daq.ecc_link import (
    BACK,
    STEPS,
    CoboState,
    ConfigSet,
    DataLink,
    EccLink,
    EccState,
    Transition,
    data_link_set,
)

log = logging.getLogger(__name__)

IDLE_PERIOD = 0.5
TRANSITION_PERIOD = 0.1
TANGO_STATE = {
    CoboState.Off: DevState.OFF,
    CoboState.Idle: DevState.STANDBY,
    CoboState.Described: DevState.ON,
    CoboState.Prepared: DevState.ON,
    CoboState.Ready: DevState.ON,
    CoboState.Running: DevState.RUNNING,
    CoboState.Paused: DevState.ON,
}


class EccServer(DcsDevice):
    """A GET ECC server (getEccSoapServer) driven over SOAP."""

    Host = device_property(dtype=str, default_value="127.0.0.1", doc="ECC server host")
    Port = device_property(dtype=int, default_value=8083, doc="ECC server SOAP port")
    Timeout = device_property(dtype=float, default_value=3.0, doc="HTTP timeout per SOAP call (s)")
    DataLinks = device_property(
        dtype=(str,), default_value=[], doc="One line per data source: SOURCE ROUTER IP PORT [TYPE]"
    )

    def init_device(self) -> None:
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ecc-transition")
        self._pending: str | None = None  # a transition asked for whose SOAP call has not returned
        self._cycle_state: EccState | None = None
        self._selected = ""
        self._acknowledged = ""  # an error the operator reset; the server may go on reporting it
        self._server_error = ""  # the error GetState reports now, if any
        self._lock = threading.Lock()
        for name in ("SelectedConfig", "AvailableConfigs", "DataSources", "Online", "LastError"):
            self.set_change_event(name, True, False)
            self.set_archive_event(name, True, False)
        super().init_device()
        self.publish("LastError", "")
        self.publish("Online", False)
        self.publish("AvailableConfigs", [])

    def delete_device(self) -> None:
        self._worker.shutdown(wait=False, cancel_futures=True)
        super().delete_device()

    def create_link(self) -> EccLink:
        self.links = [DataLink.parse(line) for line in self.DataLinks]
        self.publish("DataSources", [link.source for link in self.links])
        self.add_poll(Poll("CoboState", IDLE_PERIOD, read=lambda: int(self._state().state), empty=0))
        self.add_poll(Poll("Transitioning", IDLE_PERIOD, read=self._transitioning, empty=False))
        return EccLink(self.Host, self.Port, self.Timeout)

    # ------------------------------------------------------------------ attributes
    @attribute(dtype=CoboState, doc="The CoBo state machine of this ECC server's data sources")
    def CoboState(self) -> tuple[Any, float, Any]:
        return self.polled("CoboState")

    @attribute(dtype=bool, doc="True while a transition runs (asked for, or Transition != 0 on the server)")
    def Transitioning(self) -> tuple[Any, float, Any]:
        return self.polled("Transitioning")

    @attribute(
        dtype=str,
        access=AttrWriteType.READ_WRITE,
        memorized=True,
        hw_memorized=True,
        doc="The config set for Describe/Prepare/Configure: describe/prepare/configure",
    )
    def SelectedConfig(self) -> str:
        return self._selected

    @SelectedConfig.write
    def SelectedConfig(self, name: str) -> None:
        self._select(name, check_available=False)

    @attribute(dtype=(str,), max_dim_x=4096, doc="Config sets the server offers (describe/prepare/configure)")
    def AvailableConfigs(self) -> tuple[Any, float, Any]:
        return self.polled("AvailableConfigs")

    @attribute(dtype=(str,), max_dim_x=256, doc="Data sources behind this server, e.g. CoBo[0]")
    def DataSources(self) -> tuple[Any, float, Any]:
        return self.polled("DataSources")

    @attribute(dtype=bool, doc="The ECC server answers")
    def Online(self) -> tuple[Any, float, Any]:
        return self.polled("Online")

    @attribute(dtype=str, doc="The last error reported by the ECC server or a refused transition")
    def LastError(self) -> tuple[Any, float, Any]:
        return self.polled("LastError")

    # ------------------------------------------------------------------ commands
    @command(doc_in="Idle -> Described, with the selected config")
    def Describe(self) -> None:
        self._step("Describe")

    @command(doc_in="Described -> Prepared")
    def Prepare(self) -> None:
        self._step("Prepare")

    @command(doc_in="Prepared -> Ready; sends the data links")
    def Configure(self) -> None:
        self._step("Configure")

    @command(doc_in="Ready -> Running")
    def Start(self) -> None:
        self._step("Start")

    @command(doc_in="Running -> Ready")
    def Stop(self) -> None:
        self._step("Stop")

    @command(doc_in="One step back (Ready -> Prepared -> Described -> Idle, Running -> Ready); acknowledges LastError")
    def Reset(self) -> None:
        state = self._current()
        operation = "Stop" if state == CoboState.Running else BACK.get(state)
        if operation is None:
            error = self.polled("LastError")[0]
            if error:  # nothing to step back from: the reset acknowledges the error
                self._acknowledged = self._server_error or error
                self.publish("LastError", "")
                self.update_condition()
                return
            raise self.refusal("Reset", f"nothing to reset from {state.name}")
        self._begin(operation, "Reset")

    @command(doc_in="Ask the server again for the config sets it offers")
    def RefreshConfigs(self) -> None:
        configs = self.hardware_call("RefreshConfigs", lambda: self._link().get_config_ids())
        self.publish("AvailableConfigs", [c.name for c in configs])

    @command(dtype_in=str, doc_in="describe/prepare/configure, one of AvailableConfigs")
    def SelectConfig(self, name: str) -> None:
        self._select(name, check_available=True)
        # Memorize it as Tango does for a written memorized attribute (a proxy to ourselves would deadlock).
        database = tango.Util.instance().get_database()
        database.put_device_attribute_property(self.get_name(), {"SelectedConfig": {"__value": [self._selected]}})

    # ------------------------------------------------------------------ the work
    def on_connected(self) -> None:
        self.publish("Online", True)
        try:
            self.publish("AvailableConfigs", [c.name for c in self._link().get_config_ids()])
        except ReplyError as exc:
            self.publish("LastError", str(exc))

    def on_disconnected(self, reason: str) -> None:
        self.publish("Online", False)

    def begin_poll_cycle(self) -> None:
        self._cycle_state = None

    def _link(self) -> EccLink:
        assert isinstance(self.link, EccLink)
        return self.link

    def _state(self) -> EccState:
        """GetState, once per poll cycle; an error the server reports becomes LastError."""
        if self._cycle_state is None:
            self._cycle_state = self._link().get_state()
            if self._cycle_state.error_code != 0:
                error = f"ECC server error {self._cycle_state.error_code}: {self._cycle_state.error_message}"
                self._server_error = error
                if error != self._acknowledged:  # the server repeats its last error until the next call
                    self.publish("LastError", error)
        return self._cycle_state

    def _transitioning(self) -> bool:
        busy = self._pending is not None or self._state().transition != 0
        period = TRANSITION_PERIOD if busy else IDLE_PERIOD
        for name in ("CoboState", "Transitioning"):
            self._polls[name].period = period
        return busy

    def _current(self) -> CoboState:
        value, _, quality = self.polled("CoboState")
        if quality == tango.AttrQuality.ATTR_INVALID or self.link is None or not self.link.connected:
            raise self.refusal("command", f"the ECC server at {self.Host}:{self.Port} does not answer; {self.get_status()}")
        return CoboState(value)

    def _step(self, operation: str) -> None:
        state = self._current()
        source, target = STEPS[operation]
        if state == target:
            raise self.refusal(operation, f"the ECC server is already {target.name}")
        if state != source:
            hint = _hint(state, source)
            raise self.refusal(operation, f"cannot go from {state.name} to {target.name}{hint}")
        self._begin(operation, operation)

    def _begin(self, operation: str, asked: str) -> None:
        with self._lock:
            if self._pending is not None or self.polled("Transitioning")[0]:
                raise self.refusal(asked, f"a transition is already running ({self._pending or 'on the server'}); wait for it")
            config: ConfigSet | None = None
            if operation in ("Describe", "Prepare", "Configure"):
                if not self._selected:
                    raise self.refusal(asked, "no config selected (choose one with `dcs daq select-config`)")
                config = ConfigSet.parse(self._selected)
            table = data_link_set(self.links) if operation == "Configure" else ""
            self._pending = operation
        self.publish("LastError", "")
        self.publish("Transitioning", True)
        for name in ("CoboState", "Transitioning"):  # follow closely from the first check on
            self._polls[name].period = TRANSITION_PERIOD
        self.update_condition()
        self._worker.submit(self._run_transition, operation, config, table)

    def _run_transition(self, operation: str, config: ConfigSet | None, table: str) -> None:
        try:
            self._link().transition(operation, config, table)
            log.info("%s: %s accepted", self.get_name(), operation)
        except ReplyError as exc:
            self.publish("LastError", str(exc))
        except LinkError as exc:
            self.publish("LastError", f"{operation} failed: {exc}")
            if self.link is not None:
                self.link.close()
        except Exception as exc:  # the worker must report everything, never die silently
            log.exception("%s: %s failed", self.get_name(), operation)
            self.publish("LastError", f"{operation} failed: {exc!r}")
        finally:
            self._pending = None
            self.poll_soon("CoboState", "Transitioning")

    def _select(self, name: str, check_available: bool) -> None:
        try:
            config = ConfigSet.parse(name)
        except ValueError as exc:
            raise self.refusal("SelectConfig", str(exc)) from exc
        available = self.polled("AvailableConfigs")[0]
        if check_available and available and config.name not in list(available):
            raise self.refusal(
                "SelectConfig", f"{config.name} is not among the {len(available)} config sets the server offers (RefreshConfigs?)"
            )
        self._selected = config.name
        self.push_change_event("SelectedConfig", self._selected)
        self.push_archive_event("SelectedConfig", self._selected)

    def refine_condition(self, state: DevState, status: str) -> tuple[DevState, str]:
        value, _, quality = self.polled("CoboState")
        if quality == tango.AttrQuality.ATTR_INVALID:
            return state, status
        cobo = CoboState(value)
        where = f"ECC server {self.Host}:{self.Port}"
        config = f", config {self._selected}" if self._selected else ", no config selected"
        if self.polled("Transitioning")[0]:
            doing = self._pending or "transition"
            return DevState.MOVING, f"{where}: {cobo.name}, {doing} in progress{config}"
        error = self.polled("LastError")[0]
        if error:
            return DevState.FAULT, f"{where}: {cobo.name}; {error}"
        if state == DevState.ALARM:
            return state, status
        return TANGO_STATE[cobo], f"{where}: {cobo.name}{config}"



def _hint(state: CoboState, needed: CoboState) -> str:
    for operation, (source, target) in STEPS.items():
        if source == state and target.value <= needed.value:
            return f" ({operation} first)"
    return f" (it must be {needed.name})"


__all__ = ["EccServer", "CoboState", "Transition"]


def main(args: list[str] | None = None) -> None:
    """Console script ``EccServer <instance>``."""
    serve((EccServer,), "EccServer", args)


if __name__ == "__main__":
    main()
