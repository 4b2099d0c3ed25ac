"""`dcs obs ...` as an operator runs it: the CLI as a subprocess against a real observatory.

One site per test module, as in tests/device_servers/test_conductor.py, but
with the PLC and Alpaca simulators declared in the facility file (so that
`dcs obs sim` finds them in the running facility's plan): the PLC cycling
every 0.1 s, fast Alpaca motions, weather rules with short hold-offs. Every
test starts from the same baseline: SCHEDULER_READY on a safe night, the
dome open, nothing injected.
"""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import tango
import yaml

from db.app import RunStore
from tests.conftest import ROOT, Facility, free_port, wait_for

SHUTTER = {"Open": 0, "Closed": 1, "Opening": 2, "Closing": 3, "Error": 4}
MODES = ["STARTING", "PASSIVE_NO_PLC", "PASSIVE", "STANDBY", "REMOTE", "SCHEDULER_STANDBY", "SCHEDULER_READY"]
ALPACA_OPTIONS = ["--discovery-port", 0, "--slew-rate", 30, "--shutter-time", 1.0, "--filter-time", 0.2,
                  "--readout-time", 0.2, "--dome-rate", 60]  # fmt: skip


@dataclass
class ObsSite:
    facility: Facility
    plc_port: int
    alpaca_port: int

    def dcs(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return self.facility.dcs(*args, check=False, timeout=timeout)

    def obs(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return self.dcs("obs", *args, timeout=timeout)

    def ok(self, *args: str) -> subprocess.CompletedProcess[str]:
        done = self.obs(*args)
        assert done.returncode == 0, (
            f"dcs obs {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
        )
        return done

    def proxy(self, name: str) -> tango.DeviceProxy:
        return self.facility.proxy(name)

    def mode(self) -> str:
        return MODES[int(self.proxy("obs/conductor/1").read_attribute("Mode").value)]

    def shutter(self) -> int:
        return int(self.proxy("obs/dome/1").read_attribute("ShutterStatus").value)

    def plc(self, name: str, **arguments: object) -> dict[str, Any]:
        """A command straight to the PLC simulator (test set-up, not the CLI under test)."""
        with socket.create_connection(("127.0.0.1", self.plc_port), timeout=3) as sock:
            sock.sendall((json.dumps({"command": [{"name": name, **arguments}]}) + "\n").encode())
            data = b""
            while not data.endswith(b"\n"):
                data += sock.recv(65536)
        return json.loads(data)[0]

    def log(self) -> list[str]:
        store = RunStore.open(f"sqlite:///{self.facility.state_dir / 'dcs.db'}")
        return [f"{e.action} {e.outcome}: {e.detail}" for e in store.operator_log(500)]


def site_spec(fac: Facility, plc_port: int, alpaca_port: int, rules: Path) -> dict[str, Any]:
    name = fac.name

    def alpaca(cls: str, dev: str, number: int = 0, **more: object) -> dict:
        props = {"Port": alpaca_port, "DeviceNumber": number, "PollPeriod": 0.5, "MovingPeriod": 0.1, "Timeout": 1.0}
        return {dev: {"class": cls, "properties": {**props, **more}}}

    return {"facility": "obs-cli", "simulators": {
        "plc": {"module": "simulators.plc.server", "args": ["--port", plc_port, "--tick", 0.1], "port": plc_port},
        "alpaca": {"module": "simulators.alpaca.server", "args": ["--port", alpaca_port, *ALPACA_OPTIONS],
                   "port": alpaca_port},
    }, "servers": {
        "Plc/site": {"devices": {"obs/plc/1": {"class": "Plc", "properties": {"Port": plc_port, "PollPeriod": 0.1}}}},
        "Weather/site": {"devices": {"obs/weather/1": {"class": "Weather", "properties": {
            "Plc": name("obs/plc/1"), "RulesFile": str(rules), "EvaluatePeriod": 0.5}}}},
        "Mount/site": {"devices": alpaca("Mount", "obs/mount/1")},
        "Dome/site": {"devices": alpaca("Dome", "obs/dome/1")},
        "FilterWheel/site": {"devices": alpaca("FilterWheel", "obs/filterwheel/vis")},
        "Camera/site": {"devices": alpaca("Camera", "obs/camera/vis", FilterWheel=name("obs/filterwheel/vis"),
                                          Mount=name("obs/mount/1"), Weather=name("obs/weather/1"))},
        "ObservatoryConductor/site": {"level": 2, "devices": {"obs/conductor/1": {"class": "ObservatoryConductor",
            "properties": {
                "Plc": name("obs/plc/1"), "Weather": name("obs/weather/1"), "Mount": name("obs/mount/1"),
                "Dome": name("obs/dome/1"), "Cameras": [name("obs/camera/vis")], "Night": "night",
                "ShutterCloseTimeout": 2.5, "CloseRetries": 1}}}},
    }}  # fmt: skip


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ObsSite]:
    root = tmp_path_factory.mktemp("obs")
    rules = yaml.safe_load((ROOT / "facilities" / "weather_rules.yaml").read_text())
    rules["stale_after"] = 5
    for quantity in rules["quantities"].values():
        quantity["hold_off"] = 1
    (root / "rules.yaml").write_text(yaml.safe_dump(rules))
    facility = Facility(root, f"127.0.0.1:{free_port()}", root / "facility.yaml")
    s = ObsSite(facility, free_port(), free_port())
    try:
        facility.write(site_spec(facility, s.plc_port, s.alpaca_port, root / "rules.yaml"))
        facility.dcs("up", str(facility.file))
        wait_for(lambda: s.mode() == "SCHEDULER_READY", timeout=30, what="SCHEDULER_READY on a safe night")
        wait_for(lambda: s.shutter() == SHUTTER["Open"], timeout=15, what="the dome opened by the conductor")
        yield s
    finally:
        facility.dcs("down", check=False, timeout=90)


@pytest.fixture
def obs(site: ObsSite) -> ObsSite:
    """The site back at its baseline: nothing injected, unlocked, no bypass, SCHEDULER_READY, dome open."""
    site.plc("STOP_SCENARIO")
    site.plc("INJECT", device="weather", value_name="rain_rate", value=0.0)  # rain_rate does not drift: null keeps it
    conductor = site.proxy("obs/conductor/1")
    for flag, command in (("Bypass", "StopBypass"), ("Locked", "Unlock")):
        if conductor.read_attribute(flag).value:
            conductor.command_inout(command)
    if site.mode() == "REMOTE":
        wait_for(lambda: conductor.read_attribute("Safe").value, timeout=15, what="safe again")
        conductor.command_inout("GoScheduler")
    wait_for(lambda: site.mode() == "SCHEDULER_READY", timeout=20, what="back to SCHEDULER_READY")
    wait_for(lambda: site.shutter() == SHUTTER["Open"], timeout=15, what="the dome open again")
    return site


def test_status_shows_the_whole_site(obs: ObsSite) -> None:
    data = json.loads(obs.ok("status", "--json").stdout)
    conductor = data["conductor"]
    assert conductor["mode"] == "SCHEDULER_READY" and conductor["safe"] is True and conductor["locked"] is False
    assert conductor["night"] is True and conductor["manual_allowed"] is False and not conductor["safety_alarm"]
    weather = data["weather"]
    assert weather["is_safe"] is True and set(weather["quantities"]) == {"rain", "humidity", "wind", "clouds"}
    rain = weather["quantities"]["rain"]
    assert rain == {
        "value": 0.0,
        "unit": "mm/h",
        "interpretation": "no rain",
        "source": "DRD11_digital",
        "unsafe": False,
    }
    assert weather["quantities"]["humidity"]["unit"] == "%" and 0 < weather["quantities"]["humidity"]["value"] < 100
    assert data["plc"]["mode"] == "AUTO" and data["plc"]["ups"] == "ok" and data["plc"]["emergency_stop"] is False
    assert data["dome"]["shutter"] == "Open" and data["dome"]["connected"] is True
    assert data["mount"]["connected"] is True and isinstance(data["mount"]["hour_angle"], float)
    assert [c["device"] for c in data["cameras"]] == ["obs/camera/vis"]
    assert data["cameras"][0]["camera_state"] == "Idle" and data["cameras"][0]["filter_wheel"] == "obs/filterwheel/vis"
    assert data["filter_wheels"][0]["names"][:2] == ["g", "r"]

    text = obs.ok("status").stdout
    for expected in ("SCHEDULER_READY", "no rain", "DRD11_digital", "AUTO", "Open", "obs/camera/vis"):
        assert expected in text


def test_mode_changes_and_refusals(obs: ObsSite) -> None:
    refused = obs.obs("scheduler")
    assert refused.returncode == 1
    assert "GoScheduler refused: mode SCHEDULER_READY: GoScheduler acts from REMOTE" in refused.stderr
    refused = obs.obs("bypass", "--yes")
    assert refused.returncode == 1 and "nothing to bypass" in refused.stderr
    assert "add --yes" in obs.obs("bypass").stderr  # not confirmed: nothing sent

    assert "GoRemote done: mode REMOTE" in obs.ok("remote").stdout
    assert obs.obs("remote").returncode == 1
    locked = json.loads(obs.ok("lock", "--json").stdout)
    assert locked["ok"] and locked["conductor"]["mode"] == "STANDBY" and locked["conductor"]["locked"] is True
    refused = obs.obs("scheduler", "--json")
    assert refused.returncode == 1 and json.loads(refused.stdout)["ok"] is False and "LOCKED" in refused.stderr
    obs.ok("unlock")
    wait_for(lambda: obs.mode() == "SCHEDULER_READY", timeout=10, what="the scheduler again once unlocked")
    obs.ok("remote")
    assert "GoScheduler done: mode SCHEDULER_" in obs.ok("scheduler").stdout


def test_manual_actions_need_remote(obs: ObsSite) -> None:
    from astropy.io import fits

    refused = obs.obs("dome", "azimuth", "90")
    assert refused.returncode == 1
    assert (
        "dome azimuth 90 refused: the conductor is in SCHEDULER_READY; manual commands need REMOTE (dcs obs remote)"
        in refused.stderr
    )
    assert "manual commands need REMOTE" in obs.obs("camera", "vis", "expose", "0.2").stderr
    assert "manual commands need REMOTE" in obs.obs("mount", "unpark").stderr
    assert "manual commands need REMOTE" in obs.obs("filter", "vis", "r").stderr

    obs.ok("remote")
    moved = json.loads(obs.ok("dome", "azimuth", "90", "--json").stdout)
    assert moved["ok"] and abs(moved["values"]["Azimuth"] - 90) < 0.5
    assert abs(obs.proxy("obs/dome/1").read_attribute("Azimuth").value - 90) < 0.5

    obs.ok("mount", "unpark")
    sidereal = obs.proxy("obs/mount/1").read_attribute("SiderealTime").value
    ra = (sidereal + 0.2) % 24  # just east of the meridian, high in the sky
    slewed = obs.ok("mount", "slew", f"{ra:.4f}", "20", "--json")
    values = json.loads(slewed.stdout)["values"]
    assert abs(values["RightAscension"] - ra) < 0.01 and abs(values["Declination"] - 20) < 0.01, slewed.stdout
    assert values["Slewing"] is False and values["Tracking"] is True

    exposed = json.loads(obs.ok("camera", "vis", "expose", "0.2", "--filter", "r", "--object", "M42", "--json").stdout)
    path = Path(exposed["file"])
    assert path.suffix == ".fits" and path.is_file() and str(obs.facility.state_dir) in str(path)
    with fits.open(path) as hdul:
        assert hdul[0].header["OBJECT"] == "M42" and hdul[0].header["FILTER"] == "r"
        assert hdul[0].header["EXPTIME"] == pytest.approx(0.2)
    followed = obs.ok("camera", "vis", "expose", "0.2")  # not a terminal: a line per change, then the file
    assert "image written" in followed.stdout and ".fits" in followed.stdout

    # Closing and stopping are allowed in any mode; the rest is refused again after handing back.
    obs.ok("scheduler")
    wait_for(lambda: obs.mode() == "SCHEDULER_READY", timeout=10, what="SCHEDULER_READY")
    assert "manual commands need REMOTE" in obs.obs("mount", "slew", "1", "20").stderr
    obs.ok("mount", "stop")
    parked = obs.ok("mount", "park")
    assert "done" in parked.stdout and obs.proxy("obs/mount/1").read_attribute("AtPark").value


def test_dome_close_is_allowed_in_any_mode(obs: ObsSite) -> None:
    sent = obs.ok("dome", "close", "--no-wait")  # SCHEDULER_READY: allowed (the conductor opens it again)
    assert "sent" in sent.stdout
    wait_for(lambda: obs.shutter() == SHUTTER["Open"], timeout=15, what="reopened by the conductor")
    obs.ok("lock")  # STANDBY, locked: every other manual command is refused
    assert "manual commands need REMOTE (the observatory is locked" in obs.obs("dome", "open").stderr
    closed = obs.ok("dome", "close")
    assert "done" in closed.stdout and "Closed" in closed.stdout
    assert obs.shutter() == SHUTTER["Closed"]
    obs.ok("unlock")
    wait_for(lambda: obs.shutter() == SHUTTER["Open"], timeout=15, what="opened by the conductor once unlocked")


def test_injected_rain_makes_the_conductor_close_the_dome(obs: ObsSite) -> None:
    injected = obs.ok("sim", "plc", "inject", "weather", "rain_rate", "5")
    assert "weather rain_rate pinned at 5" in injected.stdout
    wait_for(lambda: obs.shutter() == SHUTTER["Closed"], timeout=15, what="the dome closed by the conductor")
    data = json.loads(obs.ok("status", "--json").stdout)
    assert data["weather"]["is_safe"] is False and data["weather"]["quantities"]["rain"]["unsafe"] is True
    assert data["conductor"]["safe"] is False and "rain" in data["conductor"]["reason"]
    assert data["conductor"]["mode"] == "SCHEDULER_STANDBY"
    obs.ok("remote")  # allowed while UNSAFE (seed 1.10.2); opening is not
    refused = obs.obs("dome", "open")
    assert refused.returncode == 1 and "dome open refused: the site is UNSAFE (weather unsafe: rain" in refused.stderr
    bypassed = obs.obs("bypass", "--yes", "--json")  # unsafe: the bypass is allowed now; then undone
    assert bypassed.returncode == 0 and json.loads(bypassed.stdout)["conductor"]["bypass"] is True
    obs.ok("stop-bypass")
    dry = json.loads(obs.ok("sim", "plc", "inject", "weather", "rain_rate", "0", "--json").stdout)
    assert dry["ok"] and dry["reply"]["value"] == 0
    wait_for(
        lambda: obs.proxy("obs/conductor/1").read_attribute("Safe").value, timeout=15, what="safe after the hold-off"
    )
    obs.ok("scheduler")
    wait_for(lambda: obs.shutter() == SHUTTER["Open"], timeout=15, what="reopened by the scheduler once dry")
    released = obs.ok("sim", "plc", "inject", "weather", "humidity", "null")
    assert "humidity released" in released.stdout


def test_played_rain_scenario_closes_and_reopens(obs: ObsSite) -> None:
    before = sum("make safe started ok: weather unsafe: rain" in line for line in obs.log())
    played = obs.ok("sim", "plc", "play", "rain")
    assert "scenario rain" in played.stdout
    playing = json.loads(obs.ok("sim", "plc", "scenario", "--json").stdout)
    assert playing["reply"]["scenario"] == "rain"
    wait_for(
        lambda: sum("make safe started ok: weather unsafe: rain" in line for line in obs.log()) > before,
        timeout=15, what="the conductor making the site safe from the scenario's rain",
    )  # fmt: skip
    wait_for(lambda: obs.shutter() == SHUTTER["Open"], timeout=20, what="reopened after the rain and the hold-off")
    assert "scenario stopped" in obs.ok("sim", "plc", "stop").stdout


def test_simulator_commands_refuse_what_is_not_a_simulator(obs: ObsSite, tmp_path: Path) -> None:
    nowhere = obs.dcs("--state-dir", str(tmp_path / "none"), "obs", "sim", "plc", "stop")
    assert nowhere.returncode == 1 and "refused: no facility is running" in nowhere.stderr
    assert "never to real hardware" in nowhere.stderr
    wrong = obs.obs("sim", "plc", "stop", "--port", str(obs.alpaca_port))  # an HTTP server, not the PLC simulator
    assert wrong.returncode == 1 and "refused" in wrong.stderr
    bad = obs.obs("sim", "plc", "inject", "weather", "rainfall", "5")
    assert bad.returncode == 1 and "weather has no quantity 'rainfall'" in bad.stderr

    faulted = json.loads(obs.ok("sim", "alpaca", "fault", "camera/0", "camera_error", "--json").stdout)
    assert faulted["faults"]["camera/0"] == "camera_error"
    cleared = obs.ok("sim", "alpaca", "fault", "camera/0", "none")
    assert "cleared" in cleared.stdout
    unknown = obs.obs("sim", "alpaca", "fault", "dome/0", "melted")
    assert unknown.returncode == 1 and "no fault 'melted'" in unknown.stderr
