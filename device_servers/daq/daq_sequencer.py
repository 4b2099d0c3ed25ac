"""DaqSequencer (``daq/sequencer/1``): run control for the whole DAQ.

The system-wide buttons of the old web DAQ (Describe all, Prepare all,
Configure all, Start, Stop, Reset all) as commands that return at once: the
sequence runs in a worker thread, every ECC server of a step at the same
time, with the MuTAnT ordering rules, waiting on events. Runs, their
numbers and the operator log live in the application database.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import tango
from tango import AttrWriteType, DevState
from tango.server import attribute, command, device_property

from db.app import RunStore, database_url
from db.app.models import RUN_CLASSES
from db.app.store import NoActiveExperimentError, StoreError
from device_servers.common.device import DcsDevice, Poll
from device_servers.common.serve import serve
from device_servers.daq.ecc_group import EccGroup, OverallState, SequenceError, ordering, target_of
from device_servers.daq.ecc_link import CoboState

log = logging.getLogger(__name__)

# Which overall state each system-wide command starts from.
STARTS_FROM = {
    "Describe": OverallState.Idle,
    "Prepare": OverallState.Described,
    "Configure": OverallState.Prepared,
    "Start": OverallState.Ready,
    "Stop": OverallState.Running,
}


class DaqSequencer(DcsDevice):
    """Run control over every ECC server and data router of the DAQ."""

    EccServers = device_property(dtype=(str,), doc="ECC server devices, e.g. daq/ecc/0")
    MutantServers = device_property(dtype=(str,), default_value=[], doc="Those of EccServers that drive the MuTAnT")
    DataRouters = device_property(
        dtype=(str,), default_value=[], doc="Data router devices, each optionally followed by its ECC server device"
    )
    Database = device_property(dtype=str, default_value="", doc="Application database URL (empty: DCS_DB_URL or var/dcs.db)")
    TransitionTimeout = device_property(dtype=float, default_value=60.0, doc="Longest wait for one transition (s)")
    RouterTimeout = device_property(dtype=float, default_value=60.0, doc="Longest wait for a router's file work (s)")

    def init_device(self) -> None:
        self._busy: str | None = None
        self._lock = threading.Lock()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="daq-sequence")
        self._title = ""
        self._run_class = "Testing"
        self.group: EccGroup | None = None
        for name in ("OverallState", "RunNumber", "RunTitle", "RunClass", "RunStart", "LastError"):
            self.set_change_event(name, True, False)
            self.set_archive_event(name, True, False)
        super().init_device()

    def delete_device(self) -> None:
        if self.group is not None:
            self.group.unsubscribe()
        self._worker.shutdown(wait=False, cancel_futures=True)
        super().delete_device()

    def create_link(self) -> None:
        url = self.Database or database_url(os.environ.get("DCS_STATE_DIR", "var"))
        self.store = RunStore.open(url)
        self.routers = [line.split()[0] for line in self.DataRouters]
        self.router_ecc = {line.split()[0]: (line.split()[1:] or [""])[0] for line in self.DataRouters}
        self._show_run(self._latest_run())
        self.publish("LastError", "")
        self.publish("RunTitle", self._title)
        self.publish("RunClass", self._run_class)
        self.group = EccGroup(self.EccServers, self.MutantServers, on_change=self._ecc_changed)
        self.publish("OverallState", int(OverallState.Error))
        self.group.subscribe()
        self.add_poll(Poll("RunDuration", 1.0, read=self._duration, empty=""))
        self.add_poll(Poll("Experiment", 2.0, read=self._experiment, empty=""))
        return None

    # ------------------------------------------------------------------ attributes
    @attribute(dtype=OverallState, doc="Idle ... Running when every ECC server agrees; Mixed; Error")
    def OverallState(self) -> tuple[Any, float, Any]:
        return self.polled("OverallState")

    @attribute(dtype=int, doc="The current (or last) run number; -1 before the first run")
    def RunNumber(self) -> tuple[Any, float, Any]:
        return self.polled("RunNumber")

    @attribute(dtype=str, access=AttrWriteType.READ_WRITE, doc="Title of the current or next run")
    def RunTitle(self) -> tuple[Any, float, Any]:
        return self.polled("RunTitle")

    @RunTitle.write
    def RunTitle(self, title: str) -> None:
        self._title = title
        self._update_current(title=title)
        self.publish("RunTitle", title)

    @attribute(dtype=str, access=AttrWriteType.READ_WRITE, doc=f"Class of the current or next run: {', '.join(RUN_CLASSES)}")
    def RunClass(self) -> tuple[Any, float, Any]:
        return self.polled("RunClass")

    @RunClass.write
    def RunClass(self, run_class: str) -> None:
        if run_class not in RUN_CLASSES:
            raise self.refusal("RunClass", f"{run_class!r} is not one of {', '.join(RUN_CLASSES)}")
        self._run_class = run_class
        self._update_current(run_class=run_class)
        self.publish("RunClass", run_class)

    @attribute(dtype=str, doc="Start of the current or last run (UTC, ISO 8601)")
    def RunStart(self) -> tuple[Any, float, Any]:
        return self.polled("RunStart")

    @attribute(dtype=str, doc="Duration of the current (live) or last run, HH:MM:SS")
    def RunDuration(self) -> tuple[Any, float, Any]:
        return self.polled("RunDuration")

    @attribute(dtype=str, doc="The active experiment")
    def Experiment(self) -> tuple[Any, float, Any]:
        return self.polled("Experiment")

    @attribute(dtype=str, doc="Why the last sequence failed (empty after a success)")
    def LastError(self) -> tuple[Any, float, Any]:
        return self.polled("LastError")

    # ------------------------------------------------------------------ commands
    @command(doc_in="Describe every ECC server (CoBo servers first, then the MuTAnT)")
    def DescribeAll(self) -> None:
        self._system_step("Describe")

    @command(doc_in="Prepare every ECC server (MuTAnT first)")
    def PrepareAll(self) -> None:
        self._system_step("Prepare")

    @command(doc_in="Configure every ECC server (CoBo servers first)")
    def ConfigureAll(self) -> None:
        self._system_step("Configure")

    @command(doc_in="Start a new run: refused while any router's staging directory holds data")
    def StartRun(self) -> None:
        self._require("StartRun", OverallState.Ready)
        experiment = self.store.active_experiment()
        if experiment is None:
            raise self.refusal("StartRun", "no active experiment (choose one with `dcs daq experiment NAME`)")
        dirty = self._dirty_routers()
        if dirty:
            raise self.refusal("StartRun", f"staging not clean on {', '.join(dirty)} (organize or remove the .graw files first)")
        self._launch("StartRun", self._start_run)

    @command(doc_in="Stop the run: every ECC server (MuTAnT first), then file the data on every router")
    def StopRun(self) -> None:
        self._require("StopRun", OverallState.Running)
        self._launch("StopRun", self._stop_run)

    @command(doc_in="One step back on every ECC server (Ready -> Prepared -> Described -> Idle)")
    def ResetAll(self) -> None:
        state = self._overall_or_refuse("ResetAll")
        if state not in (OverallState.Described, OverallState.Prepared, OverallState.Ready, OverallState.Running):
            raise self.refusal("ResetAll", f"nothing to reset from {state.name}")
        target = CoboState(CoboState[state.name] - 1)  # one step back on every server, all at once
        group = self._group()
        self._launch("ResetAll", lambda: group.run("Reset", target, [group.names], self.TransitionTimeout))

    # ------------------------------------------------------------------ sequences
    def _system_step(self, operation: str) -> None:
        self._require(f"{operation}All", STARTS_FROM[operation])
        group = self._group()
        order = ordering(operation, group.cobos, group.mutants)
        self._launch(f"{operation}All", lambda: group.run(operation, target_of(operation), order, self.TransitionTimeout))

    def _start_run(self) -> str:
        group = self._group()
        config_sets = {name: self._selected_config(name) for name in group.names}
        run = self.store.start_run(self._title, self._run_class, config_sets)
        self._show_run(run)
        try:
            group.run("Start", CoboState.Running, ordering("Start", group.cobos, group.mutants), self.TransitionTimeout)
        except SequenceError:
            self._show_run(self.store.stop_run(run.number, state="aborted"))
            raise
        return f"run {run.number} ({run.experiment}) started"

    def _stop_run(self) -> str:
        group = self._group()
        run = self.store.current_run()
        try:
            group.run("Stop", CoboState.Ready, ordering("Stop", group.cobos, group.mutants), self.TransitionTimeout)
        finally:
            if run is not None:  # the record is closed whatever the ECC servers did: no run is lost
                run = self.store.stop_run(run.number)
                self._show_run(run)
        if run is None:
            return "stopped (no run record was open)"
        problems = self._file_run(run.experiment, run.number, run.config_sets)
        if problems:
            raise SequenceError(f"run {run.number} stopped, but filing its data failed: " + "; ".join(problems))
        return f"run {run.number} stopped; data filed on {len(self.routers)} routers"

    def _file_run(self, experiment: str, number: int, config_sets: dict[str, Any]) -> list[str]:
        """OrganizeFiles and BackupConfigs on every router at once; the problems, if any."""

        def file_one(router: str) -> str | None:
            proxy = tango.DeviceProxy(router)
            proxy.set_timeout_millis(int(self.RouterTimeout * 1000))
            try:
                proxy.command_inout("OrganizeFiles", [experiment, str(number)])
                config = config_sets.get(self.router_ecc.get(router) or next(iter(config_sets), ""), {})
                if config:
                    name = f"{config['describe']}/{config['prepare']}/{config['configure']}"
                    proxy.command_inout("BackupConfigs", [experiment, str(number), name])
            except tango.DevFailed as exc:
                return f"{router}: {exc.args[0].desc.strip()}"
            return None

        with ThreadPoolExecutor(max_workers=max(1, len(self.routers))) as pool:
            return [p for p in pool.map(file_one, self.routers) if p]

    def _launch(self, action: str, sequence: Callable[[], Any]) -> None:
        who = self._who()
        with self._lock:
            if self._busy is not None:
                raise self.refusal(action, f"{self._busy} is still running")
            self._busy = action
        self.publish("LastError", "")
        self.update_condition()
        self._worker.submit(self._run_sequence, action, sequence, who)

    def _run_sequence(self, action: str, sequence: Callable[[], Any], who: tuple[str, str]) -> None:
        outcome, detail = "ok", ""
        try:
            detail = sequence() or ""
        except (SequenceError, StoreError) as exc:
            outcome, detail = "failed", str(exc)
            self.publish("LastError", detail)
        except Exception as exc:  # report, never die silently
            log.exception("%s: %s failed", self.get_name(), action)
            outcome, detail = "failed", f"{action}: internal error {exc!r}"
            self.publish("LastError", detail)
        finally:
            with self._lock:
                self._busy = None
            try:
                self.store.log(who[0], who[1], action, self.get_name(), outcome, detail)
            except StoreError:
                log.exception("%s: operator log not written", self.get_name())
            self._ecc_changed()

    # ------------------------------------------------------------------ helpers
    def _group(self) -> EccGroup:
        assert self.group is not None
        return self.group

    def _overall_or_refuse(self, action: str) -> OverallState:
        if self.group is None:
            raise self.refusal(action, self.get_status())
        if self._busy is not None:
            raise self.refusal(action, f"{self._busy} is still running")
        state, why = self.group.overall()
        if state == OverallState.Error:
            raise self.refusal(action, f"the DAQ is in Error: {why}")
        if state == OverallState.Mixed:
            raise self.refusal(action, f"the ECC servers are in different states ({why}); use per-server controls")
        return state

    def _require(self, action: str, needed: OverallState) -> None:
        state = self._overall_or_refuse(action)
        if state != needed:
            raise self.refusal(action, f"the DAQ is {state.name}; {action} needs {needed.name}")

    def _dirty_routers(self) -> list[str]:
        """Routers whose staging directory holds data (or cannot be told), all asked at once."""

        def check(router: str) -> str | None:
            try:
                proxy = tango.DeviceProxy(router)
                proxy.set_timeout_millis(3000)
                value = proxy.read_attribute("StagingClean")
                if value.quality == tango.AttrQuality.ATTR_INVALID:
                    return f"{router} (unknown: {proxy.status()})"
                return None if value.value else router
            except tango.DevFailed as exc:
                return f"{router} ({exc.args[0].desc.strip()})"

        if not self.routers:
            return []
        with ThreadPoolExecutor(max_workers=len(self.routers)) as pool:
            return [r for r in pool.map(check, self.routers) if r]

    def _selected_config(self, ecc: str) -> dict[str, str]:
        parts = self._group().mirrors[ecc].selected_config.split("/")  # from events: no call on the Start path
        return dict(zip(("describe", "prepare", "configure"), parts, strict=False))

    def _ecc_changed(self) -> None:
        if self.group is None:
            return
        state, _ = self.group.overall()
        self.publish("OverallState", int(state))
        self.update_condition()

    def _show_run(self, run: Any) -> None:
        self._run = run
        self.publish("RunNumber", run.number if run else -1)
        self.publish("RunStart", run.start_time.isoformat(timespec="seconds") if run else "")
        if run is not None and run.state == "running":
            self._title, self._run_class = run.title, run.run_class
            self.publish("RunTitle", self._title)
            self.publish("RunClass", self._run_class)

    def _update_current(self, **changes: str) -> None:
        run = self.store.current_run()
        if run is not None:
            self._run = self.store.update_run(run.number, **changes)

    def _duration(self) -> str:
        run = self._run
        if run is None:
            return ""
        end = run.stop_time or dt.datetime.now(dt.UTC)
        seconds = int((end - run.start_time).total_seconds())
        return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"

    def _latest_run(self) -> Any:
        try:
            return self.store.latest_run()
        except NoActiveExperimentError:
            return None

    def _experiment(self) -> str:
        experiment = self.store.active_experiment()
        name = experiment.name if experiment else ""
        if name != self.polled("Experiment")[0]:  # another experiment: show its runs, not the last one's
            self._show_run(self._latest_run())
        return name

    def _who(self) -> tuple[str, str]:
        try:
            client = self.get_client_ident()
            return f"pid {client.client_pid}", client.client_ip
        except Exception:  # no client (an internal call)
            return "unknown", ""

    def refine_condition(self, state: DevState, status: str) -> tuple[DevState, str]:
        if self.group is None:
            return state, status
        if self._busy is not None:
            return DevState.MOVING, f"{self._busy} in progress"
        overall, why = self.group.overall()
        error = self.polled("LastError")[0]
        if error:
            return DevState.FAULT, f"last action failed: {error}"
        run = self._run
        running = f"; run {run.number} running" if run is not None and run.state == "running" else ""
        if overall == OverallState.Error:
            return DevState.FAULT, f"Error: {why}"
        if overall == OverallState.Mixed:
            return DevState.ALARM, f"Mixed: {why}"
        return (DevState.RUNNING if overall == OverallState.Running else DevState.ON), f"{overall.name}{running}"



def main(args: list[str] | None = None) -> None:
    """Console script ``DaqSequencer <instance>``."""
    serve((DaqSequencer,), "DaqSequencer", args)


if __name__ == "__main__":
    main()
