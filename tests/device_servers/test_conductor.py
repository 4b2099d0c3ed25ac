"""The observatory conductor end to end: PLC and Alpaca simulators, every observatory device, real events."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import tango
import yaml

from db.app import RunStore
from device_servers.observatory.conductor import Mode
from tests.conftest import ROOT, Facility, free_port, wait_for
from tests.device_servers.test_alpaca_devices import AlpacaSimulator
from tests.device_servers.test_plc import PlcSimulator


class FastPlc(PlcSimulator):
    def start(self) -> FastPlc:  # a PLC cycle of 0.1 s, as a real PLC cycles in milliseconds
        import subprocess
        import sys

        from tests.conftest import project_env

        self.process = subprocess.Popen(
            [sys.executable, "-m", self.module, "--port", str(self.port), "--tick", "0.1"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=project_env(), cwd=ROOT,
        )  # fmt: skip
        assert self.process.stdout is not None and "listening" in self.process.stdout.readline()
        return self


@dataclass
class Site:
    facility: Facility
    plc: FastPlc
    alpaca: AlpacaSimulator

    def proxy(self, name: str) -> tango.DeviceProxy:
        return self.facility.proxy(name)

    @property
    def conductor(self) -> tango.DeviceProxy:
        return self.proxy("obs/conductor/1")

    def mode(self) -> Mode:
        return Mode(int(self.conductor.read_attribute("Mode").value))

    def shutter(self) -> int:
        return int(self.proxy("obs/dome/1").read_attribute("ShutterStatus").value)

    def log(self) -> list[str]:
        store = RunStore.open(f"sqlite:///{self.facility.state_dir / 'dcs.db'}")
        return [f"{e.action} {e.outcome}: {e.detail}" for e in store.operator_log(200)]


def site_facility(fac: Facility, plc_port: int, alpaca_port: int, rules: Path, start_plc: bool = True) -> None:
    name = fac.name

    def alpaca(cls: str, dev: str, number: int = 0) -> dict:
        return {dev: {"class": cls, "properties": {"Port": alpaca_port, "DeviceNumber": number, "PollPeriod": 0.5, "MovingPeriod": 0.1, "Timeout": 1.0}}}

    fac.write({"facility": "site", "servers": {
        "Plc/site": {"devices": {"obs/plc/1": {"class": "Plc", "properties": {"Port": plc_port, "PollPeriod": 0.1}}}},
        "Weather/site": {"devices": {"obs/weather/1": {"class": "Weather", "properties": {
            "Plc": name("obs/plc/1"), "RulesFile": str(rules), "EvaluatePeriod": 0.5}}}},
        "Mount/site": {"devices": alpaca("Mount", "obs/mount/1")},
        "Dome/site": {"devices": alpaca("Dome", "obs/dome/1")},
        "Camera/site": {"devices": alpaca("Camera", "obs/camera/vis")},
        "ObservatoryConductor/site": {"level": 2, "devices": {"obs/conductor/1": {"class": "ObservatoryConductor", "properties": {
            "Plc": name("obs/plc/1"), "Weather": name("obs/weather/1"), "Mount": name("obs/mount/1"),
            "Dome": name("obs/dome/1"), "Cameras": [name("obs/camera/vis")], "Night": "night",
            "ShutterCloseTimeout": 2.5, "CloseRetries": 1}}}},
    }})  # fmt: skip


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    spec = yaml.safe_load((ROOT / "facilities" / "weather_rules.yaml").read_text())
    spec["stale_after"] = 5
    for quantity in spec["quantities"].values():
        quantity["hold_off"] = 2
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.fixture
def site(facility_dir: Facility, rules: Path) -> Iterator[Site]:
    plc = FastPlc().start()
    alpaca = AlpacaSimulator(free_port()).start()
    try:
        site_facility(facility_dir, plc.port, alpaca.port, rules)
        facility_dir.dcs("up", str(facility_dir.file))
        s = Site(facility_dir, plc, alpaca)
        wait_for(lambda: s.mode() == Mode.SCHEDULER_READY, timeout=30, what="SCHEDULER_READY on a safe night")
        wait_for(lambda: s.shutter() == 0, timeout=15, what="the dome opened by the conductor")
        yield s
    finally:
        plc.kill()
        alpaca.kill()


def test_rain_closes_the_dome_and_parks_then_reopens(site: Site) -> None:
    site.plc.command("INJECT", device="weather", value_name="rain_rate", value=3.0)
    wait_for(lambda: site.shutter() in (1, 3), timeout=5, what="the dome closing")
    wait_for(lambda: site.shutter() == 1, timeout=10, what="closed, confirmed")
    wait_for(lambda: site.proxy("obs/mount/1").read_attribute("AtPark").value, timeout=15, what="mount parked")
    assert site.mode() == Mode.SCHEDULER_STANDBY
    assert "rain" in site.conductor.read_attribute("Reason").value
    wait_for(lambda: "make safe ok: shutter confirmed closed" in "\n".join(site.log()), timeout=5, what="closure logged")
    assert "make safe started ok: weather unsafe: rain" in "\n".join(site.log())
    site.plc.command("INJECT", device="weather", value_name="rain_rate", value=0.0)
    wait_for(lambda: site.mode() == Mode.SCHEDULER_READY, timeout=15, what="READY after the hold-off")
    wait_for(lambda: site.shutter() == 0, timeout=10, what="reopened")


def test_stuck_shutter_escalates_to_an_alarm(site: Site) -> None:
    site.alpaca.fault("dome/0", "shutter_stuck")
    site.plc.command("INJECT", device="weather", value_name="rain_rate", value=3.0)
    wait_for(lambda: site.conductor.read_attribute("SafetyAlarm").value, timeout=15, what="a safety alarm")
    assert "shutter NOT closed" in site.conductor.read_attribute("SafetyAlarm").value
    assert site.conductor.state() == tango.DevState.ALARM
    log = "\n".join(site.log())
    assert "make safe retry failed" in log and "make safe failed" in log


def test_mode_rules_refuse_clearly(site: Site) -> None:
    conductor = site.conductor
    with pytest.raises(tango.DevFailed, match="GoScheduler acts from REMOTE"):
        conductor.command_inout("GoScheduler")
    with pytest.raises(tango.DevFailed, match="nothing to bypass"):
        conductor.command_inout("BypassPlc")
    conductor.command_inout("GoRemote")
    wait_for(lambda: site.mode() == Mode.REMOTE, what="REMOTE")
    assert conductor.command_inout("ManualAllowed") is True
    conductor.command_inout("Lock")
    wait_for(lambda: site.mode() == Mode.STANDBY, what="STANDBY when locked")
    wait_for(lambda: site.shutter() == 1, timeout=10, what="closed by the lock")
    with pytest.raises(tango.DevFailed, match="LOCKED"):
        conductor.command_inout("GoScheduler")
    conductor.command_inout("Unlock")
    wait_for(lambda: site.mode() == Mode.SCHEDULER_READY, timeout=10, what="back to the scheduler")
    # Unsafe: the bypass is allowed, the PLC confirms it, and the site counts as safe.
    site.plc.command("INJECT", device="weather", value_name="rain_rate", value=3.0)
    wait_for(lambda: not site.conductor.read_attribute("Safe").value, timeout=5, what="unsafe")
    with pytest.raises(tango.DevFailed, match="UNSAFE"):
        conductor.command_inout("Lock")
    conductor.command_inout("BypassPlc")
    assert site.proxy("obs/plc/1").read_attribute("Bypass").value is True
    wait_for(lambda: conductor.read_attribute("Safe").value, timeout=5, what="safe under bypass")


def test_plc_lost_closes_and_conductor_waits_for_it(site: Site) -> None:
    site.plc.kill()
    wait_for(lambda: site.mode() == Mode.PASSIVE_NO_PLC, timeout=10, what="PASSIVE_NO_PLC")
    wait_for(lambda: site.shutter() == 1, timeout=10, what="closed when the PLC is lost")
    site.plc.start()
    wait_for(lambda: site.mode() == Mode.SCHEDULER_READY, timeout=20, what="back when the PLC returns")


def test_conductor_started_before_the_plc(facility_dir: Facility, rules: Path) -> None:
    plc = FastPlc()
    alpaca = AlpacaSimulator(free_port()).start()
    try:
        site_facility(facility_dir, plc.port, alpaca.port, rules)
        facility_dir.dcs("up", str(facility_dir.file))
        s = Site(facility_dir, plc, alpaca)
        wait_for(lambda: s.mode() == Mode.PASSIVE_NO_PLC, timeout=20, what="PASSIVE_NO_PLC without a PLC")
        plc.start()
        wait_for(lambda: s.mode() == Mode.SCHEDULER_READY, timeout=30, what="READY once the PLC answers")
        plc.command("SET_MODE", value="MANU")
        wait_for(lambda: s.mode() == Mode.PASSIVE, timeout=10, what="PASSIVE in MANU")
    finally:
        plc.kill()
        alpaca.kill()


def test_unsafe_with_the_dome_already_closed_still_parks(site: Site) -> None:
    site.conductor.command_inout("GoRemote")
    wait_for(lambda: site.mode() == Mode.REMOTE, what="REMOTE")
    site.proxy("obs/dome/1").command_inout("CloseShutter")
    wait_for(lambda: site.shutter() == 1, timeout=10, what="closed by hand")
    mount = site.proxy("obs/mount/1")
    if mount.read_attribute("AtPark").value:
        mount.command_inout("Unpark")
        wait_for(lambda: not mount.read_attribute("AtPark").value, timeout=10, what="unparked")
    site.plc.command("EMERGENCY_STOP", value=True)
    wait_for(lambda: mount.read_attribute("AtPark").value, timeout=15, what="parked on the emergency stop")
    assert "emergency stop" in site.conductor.read_attribute("Reason").value


def test_night_and_day_from_the_suns_altitude() -> None:
    from device_servers.observatory.conductor import sun_altitude

    spm = (31.0442, -115.4637, 2800.0)  # San Pedro Martir, UTC-8
    assert sun_altitude(*spm, when="2026-06-21T20:00:00") > 60  # local noon in June: Sun high
    assert sun_altitude(*spm, when="2026-06-21T08:00:00") < -30  # local midnight: well below -12
    assert -20 < sun_altitude(*spm, when="2026-12-21T14:00:00") < 15  # around sunrise (06:00 local) in December

