"""Mount, Dome and FilterWheel devices against the Alpaca simulator over real HTTP."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import requests
import tango

from tests.conftest import ROOT, Facility, Simulator, free_port, project_env, wait_for


class AlpacaSimulator(Simulator):
    module = "simulators.alpaca.server"
    options = ("--discovery-port", "0", "--slew-rate", "30", "--shutter-time", "1.0", "--filter-time", "0.2",
               "--readout-time", "0.2", "--dome-rate", "60")  # fmt: skip

    def start(self) -> AlpacaSimulator:
        self.process = subprocess.Popen(
            [sys.executable, "-m", self.module, "--port", str(self.port), *self.options],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=project_env(), cwd=ROOT,
        )  # fmt: skip
        assert self.process.stdout is not None
        assert "listening" in self.process.stdout.readline()
        return self

    def fault(self, device: str, fault: str) -> None:
        requests.put(f"http://127.0.0.1:{self.port}/simulator/fault", data={"device": device, "fault": fault}, timeout=3)


@pytest.fixture
def alpaca() -> Iterator[AlpacaSimulator]:
    sim = AlpacaSimulator(free_port()).start()
    yield sim
    sim.kill()


def _device(cls: str, name: str, port: int, number: int = 0) -> dict:
    return {name: {"class": cls, "properties": {"Port": port, "DeviceNumber": number, "PollPeriod": 0.5, "Timeout": 1.0}}}


@pytest.fixture
def observatory(facility_dir: Facility, alpaca: AlpacaSimulator) -> Facility:
    facility_dir.write({"facility": "alpaca", "servers": {
        "Mount/test": {"devices": _device("Mount", "obs/mount/1", alpaca.port)},
        "Dome/test": {"devices": _device("Dome", "obs/dome/1", alpaca.port)},
        "FilterWheel/test": {"devices": _device("FilterWheel", "obs/filterwheel/vis", alpaca.port)},
    }})  # fmt: skip
    facility_dir.dcs("up", str(facility_dir.file))
    for name in ("obs/mount/1", "obs/dome/1", "obs/filterwheel/vis"):
        proxy = facility_dir.proxy(name)
        wait_for(lambda proxy=proxy: proxy.read_attribute("Connected").value, what=f"{name} connected")
    return facility_dir


def test_mount_slews_and_parks(observatory: Facility) -> None:
    mount = observatory.proxy("obs/mount/1")
    if mount.read_attribute("AtPark").value:
        mount.command_inout("Unpark")
        wait_for(lambda: not mount.read_attribute("AtPark").value, what="unparked")
    with pytest.raises(tango.DevFailed, match="tracking is off"):
        mount.command_inout("SlewToCoordinates", [0.0, 0.0])  # ASCOM: equatorial slews need tracking
    mount.write_attribute("Tracking", True)
    lst = mount.read_attribute("SiderealTime").value
    target_ra, target_dec = (lst + 2.0) % 24, 70.0  # east of the meridian, far enough for a slew of seconds
    mount.command_inout("SlewToCoordinates", [target_ra, target_dec])
    wait_for(lambda: mount.state() == tango.DevState.MOVING, timeout=5, what="MOVING")
    wait_for(lambda: not mount.read_attribute("Slewing").value, timeout=20, what="slew done")
    assert abs(mount.read_attribute("Declination").value - target_dec) < 0.05
    assert mount.read_attribute("Altitude").value > 0
    assert -12 <= mount.read_attribute("HourAngle").value <= 12
    mount.command_inout("Park")
    wait_for(lambda: mount.read_attribute("AtPark").value, timeout=20, what="parked")
    wait_for(lambda: mount.state() == tango.DevState.STANDBY, timeout=5, what="STANDBY when parked")
    with pytest.raises(tango.DevFailed, match="parked"):
        mount.command_inout("SlewToCoordinates", [target_ra, target_dec])


def test_dome_shutter_cycle_and_stuck_shutter(observatory: Facility, alpaca: AlpacaSimulator) -> None:
    dome = observatory.proxy("obs/dome/1")
    seen: list[int] = []
    event_id = dome.subscribe_event(
        "ShutterStatus", tango.EventType.CHANGE_EVENT, lambda e: seen.append(int(e.attr_value.value)) if not e.err else None
    )
    try:
        dome.command_inout("OpenShutter")
        wait_for(lambda: int(dome.read_attribute("ShutterStatus").value) == 0, timeout=10, what="open")
        assert dome.state() == tango.DevState.OPEN
        dome.command_inout("CloseShutter")
        wait_for(lambda: int(dome.read_attribute("ShutterStatus").value) == 1, timeout=10, what="closed")
        assert dome.state() == tango.DevState.CLOSE
    finally:
        dome.unsubscribe_event(event_id)
    assert 2 in seen and 0 in seen and 3 in seen and seen[-1] == 1, seen  # opening, open, closing, closed

    alpaca.fault("dome/0", "shutter_stuck")
    dome.command_inout("OpenShutter")
    wait_for(lambda: int(dome.read_attribute("ShutterStatus").value) in (2, 4), timeout=5, what="opening or error")
    dome.command_inout("CloseShutter")
    time.sleep(2.5)  # more than the shutter's stroke
    assert int(dome.read_attribute("ShutterStatus").value) != 1, "a stuck shutter must not read closed"


def test_filter_wheel_moves_through_minus_one(observatory: Facility) -> None:
    wheel = observatory.proxy("obs/filterwheel/vis")
    wait_for(lambda: len(wheel.read_attribute("Names").value) > 1, what="filter names")
    names = list(wheel.read_attribute("Names").value)
    target = names[-1]
    positions: list[int] = []
    event_id = wheel.subscribe_event(
        "Position", tango.EventType.CHANGE_EVENT, lambda e: positions.append(e.attr_value.value) if not e.err else None
    )
    try:
        wheel.command_inout("SetFilter", target)
        wait_for(lambda: wheel.read_attribute("Filter").value == target, timeout=10, what=f"filter {target}")
    finally:
        wheel.unsubscribe_event(event_id)
    assert -1 in positions
    with pytest.raises(tango.DevFailed, match="no filter 'Nope'"):
        wheel.command_inout("SetFilter", "Nope")


def test_silent_mount_is_unknown_and_does_not_hold_up_the_dome(observatory: Facility, alpaca: AlpacaSimulator) -> None:
    alpaca.fault("telescope/0", "mount_silent")
    mount, dome = observatory.proxy("obs/mount/1"), observatory.proxy("obs/dome/1")
    wait_for(lambda: mount.state() == tango.DevState.UNKNOWN, timeout=10, what="UNKNOWN for a silent mount")
    assert "did not answer" in mount.status()
    dome.command_inout("OpenShutter")
    wait_for(lambda: int(dome.read_attribute("ShutterStatus").value) == 0, timeout=10, what="dome still works")
    alpaca.fault("telescope/0", "none")
    wait_for(lambda: mount.state() != tango.DevState.UNKNOWN, timeout=15, what="mount back")


def test_exposure_writes_a_fits_file_with_the_header(facility_dir: Facility, alpaca: AlpacaSimulator, tmp_path) -> None:
    import numpy as np
    from astropy.io import fits

    images = tmp_path / "images"
    camera = _device("Camera", "obs/camera/vis", alpaca.port)
    camera["obs/camera/vis"]["properties"].update(
        {"FilterWheel": facility_dir.name("obs/filterwheel/vis"), "Mount": facility_dir.name("obs/mount/1"),
         "Weather": facility_dir.name("obs/weather/1"), "DataDir": str(images)}
    )  # fmt: skip
    facility_dir.write({"facility": "camera", "servers": {
        "Mount/test": {"devices": _device("Mount", "obs/mount/1", alpaca.port)},
        "FilterWheel/test": {"devices": _device("FilterWheel", "obs/filterwheel/vis", alpaca.port)},
        "Camera/test": {"devices": camera},
    }})  # fmt: skip
    facility_dir.dcs("up", str(facility_dir.file))
    cam = facility_dir.proxy("obs/camera/vis")
    wait_for(lambda: cam.read_attribute("Connected").value and cam.state() == tango.DevState.ON, what="camera idle")
    wheel = facility_dir.proxy("obs/filterwheel/vis")
    wait_for(lambda: wheel.read_attribute("Filter").value not in ("", "moving"), what="filter known")
    filter_name = wheel.read_attribute("Filter").value

    cam.command_inout("StartExposure", '{"duration": 0.5, "object": "GRB 261121A", "request_id": 12, "sequence_id": 34}')
    wait_for(lambda: cam.state() == tango.DevState.RUNNING, timeout=5, what="RUNNING while exposing")
    wait_for(lambda: cam.read_attribute("LastImageFile").value, timeout=20, what="a FITS file")
    path = cam.read_attribute("LastImageFile").value
    assert not path.startswith("ERROR"), path
    with fits.open(path) as hdul:
        header, data = hdul[0].header, hdul[0].data
    assert header["EXPTIME"] == 0.5 and header["OBJECT"] == "GRB 261121A"
    assert header["REQID"] == "12" and header["SEQID"] == "34"
    assert header["FILTER"] == filter_name
    assert {"RA", "DEC", "ALT", "AZ", "SITELAT", "SITELONG", "OBSERVAT", "DATE-OBS", "WXSAFE", "WEATHER"} <= set(header)
    assert data.ndim == 2 and data.max() > 5 * np.median(data), "stars stand out of the background"

    alpaca.fault("camera/0", "camera_error")
    wait_for(lambda: cam.state() == tango.DevState.FAULT, timeout=10, what="FAULT on a camera error")
    with pytest.raises(tango.DevFailed, match="Alpaca error"):
        cam.command_inout("StartExposure", "1")
