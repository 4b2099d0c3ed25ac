"""Conformance of the Alpaca simulator, driven through alpyca exactly as DCS's device servers drive hardware.

One simulator per module (a real subprocess, free ports, fast timings).
Each test first brings the devices it uses to the state it needs, so the
tests hold in any order and under pytest-xdist. Positions are checked
against an independent astropy transform (TETE at the site → AltAz, IERS
downloads off as in the simulator).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import alpaca.discovery
import astropy.units as u
import numpy as np
import pytest
from alpaca import management
from alpaca.camera import Camera, CameraStates
from alpaca.dome import Dome, ShutterState
from alpaca.exceptions import (
    InvalidOperationException,
    InvalidValueException,
    NotConnectedException,
    NotImplementedException,
    ParkedException,
)
from alpaca.filterwheel import FilterWheel
from alpaca.telescope import Telescope, TelescopeAxes
from astropy.coordinates import TETE, AltAz, EarthLocation, SkyCoord
from astropy.time import Time
from astropy.utils import iers

from tests.simulators.test_alpaca_simulator import (
    FILTER_TIME,
    READOUT_TIME,
    SHUTTER_TIME,
    AlpacaSimulator,
    connected,
    open_dome,
    wait_until,
)

SLEW_TIMEOUT = 10.0  # s; slews here cover at most ~180 deg at 60 deg/s
POSITION_TOLERANCE = 0.02  # deg between the simulator's Alt/Az and the independent transform


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AlpacaSimulator]:
    simulator = AlpacaSimulator(tmp_path_factory.mktemp("alpaca")).start()
    yield simulator
    simulator.kill()


@pytest.fixture
def mount(sim: AlpacaSimulator) -> Telescope:
    """The mount connected, unparked, still and tracking."""
    telescope = connected(Telescope(sim.address, 0))
    if telescope.AtPark:
        telescope.Unpark()
    telescope.AbortSlew()
    telescope.Tracking = True
    return telescope


@pytest.fixture
def dome(sim: AlpacaSimulator) -> Dome:
    device = connected(Dome(sim.address, 0))
    device.AbortSlew()
    return device


def expected_altaz(telescope: Telescope, ra: float, dec: float) -> tuple[float, float]:
    """Alt/Az of topocentric apparent (ra, dec) now at the mount's site, computed here, not by the simulator."""
    site = EarthLocation.from_geodetic(
        telescope.SiteLongitude * u.deg, telescope.SiteLatitude * u.deg, telescope.SiteElevation * u.m
    )
    now = Time.now()
    with iers.conf.set_temp("auto_download", False):
        sky = SkyCoord(ra=ra * u.hourangle, dec=dec * u.deg, frame=TETE(obstime=now, location=site))
        horizontal = sky.transform_to(AltAz(obstime=now, location=site))
    return float(horizontal.alt.deg), float(horizontal.az.deg)


def assert_pointing(telescope: Telescope, alt: float, az: float) -> None:
    assert abs(telescope.Altitude - alt) < POSITION_TOLERANCE, (telescope.Altitude, alt)
    daz = (telescope.Azimuth - az + 180.0) % 360.0 - 180.0
    assert abs(daz) * math.cos(math.radians(alt)) < POSITION_TOLERANCE, (telescope.Azimuth, az)


def high_target(telescope: Telescope, hour_angle: float, zenith_distance: float) -> tuple[float, float]:
    """(RA h, Dec deg) on the given hour angle, ``zenith_distance`` deg from the zenith towards the equator."""
    ra = (telescope.SiderealTime - hour_angle) % 24.0
    return ra, telescope.SiteLatitude - math.copysign(zenith_distance, telescope.SiteLatitude)


def wait_slewed(telescope: Telescope) -> float:
    """Wait for the end of a slew that has just started; return its duration."""
    started = time.monotonic()
    assert telescope.Slewing is True
    wait_until(lambda: not telescope.Slewing, SLEW_TIMEOUT, "the slew to end", poll=0.1)
    return time.monotonic() - started


# -- management, discovery, connection ---------------------------------------------------------


def test_management_api(sim: AlpacaSimulator) -> None:
    assert management.apiversions(sim.address) == [1]
    assert management.description(sim.address)["ServerName"] == "DCS Alpaca simulator"
    devices = {(d["DeviceType"], d["DeviceNumber"]) for d in management.configureddevices(sim.address)}
    assert devices == {
        ("Telescope", 0), ("Dome", 0), ("Camera", 0), ("Camera", 1), ("FilterWheel", 0), ("FilterWheel", 1),
    }  # fmt: skip


def test_discovery_with_alpyca(sim: AlpacaSimulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """alpyca's search_ipv4 has no port argument; its module-level ``port`` is what it broadcasts to."""
    monkeypatch.setattr(alpaca.discovery, "port", sim.discovery_port)
    assert sim.address in alpaca.discovery.search_ipv4(numquery=1, timeout=0.3)


@pytest.mark.parametrize(
    ("kind", "number", "interface_version"),
    [(Telescope, 0, 4), (Dome, 0, 3), (Camera, 0, 4), (Camera, 1, 4), (FilterWheel, 0, 3), (FilterWheel, 1, 3)],
)
def test_connect_and_disconnect(sim: AlpacaSimulator, kind: type, number: int, interface_version: int) -> None:
    device = kind(sim.address, number)
    assert device.InterfaceVersion == interface_version  # Platform 7: alpyca uses the real Connect/Disconnect
    device.Connected = False
    with pytest.raises(NotConnectedException):
        device.DeviceState  # noqa: B018
    device.Connect()
    assert device.Connecting is True
    wait_until(lambda: not device.Connecting, 3, "Connect to complete")
    assert device.Connected is True
    assert any(item["Name"] == "TimeStamp" for item in device.DeviceState)
    device.Disconnect()
    wait_until(lambda: not device.Connecting, 3, "Disconnect to complete")
    assert device.Connected is False
    device.Connected = True


# -- every member the spec lists ------------------------------------------------------------------


def read_common(device: Telescope | Dome | Camera | FilterWheel) -> None:
    assert device.Connected is True
    assert device.Connecting is False
    assert device.Description and device.Name and device.DriverVersion
    assert device.DriverInfo
    assert device.InterfaceVersion >= 3
    assert device.SupportedActions == []
    with pytest.raises(NotImplementedException):
        device.Action("nothing")


def test_read_telescope_members(mount: Telescope) -> None:
    read_common(mount)
    mount.TargetRightAscension, mount.TargetDeclination = 5.5, -10.25
    assert (mount.TargetRightAscension, mount.TargetDeclination) == (5.5, -10.25)
    assert isinstance(mount.AtHome, bool) and isinstance(mount.AtPark, bool) and mount.Slewing is False
    assert mount.Tracking is True
    assert 0.0 <= mount.RightAscension < 24.0 and -90.0 <= mount.Declination <= 90.0
    assert -90.0 <= mount.Altitude <= 90.0 and 0.0 <= mount.Azimuth < 360.0
    assert 0.0 <= mount.SiderealTime < 24.0
    assert mount.SideOfPier in (0, 1)
    assert mount.CanPark and mount.CanFindHome and mount.CanSlewAsync and mount.CanUnpark and mount.CanSync
    assert mount.EquatorialSystem == 1 and mount.AlignmentMode == 2 and mount.DoesRefraction is False
    assert mount.CanMoveAxis(TelescopeAxes.axisPrimary) is False
    assert mount.UTCDate.tzinfo is not None


def test_read_dome_members(dome: Dome) -> None:
    read_common(dome)
    assert 0.0 <= dome.Azimuth < 360.0 and 0.0 <= dome.Altitude <= 90.0
    assert isinstance(dome.AtHome, bool) and isinstance(dome.AtPark, bool) and dome.Slewing is False
    assert dome.ShutterStatus in set(ShutterState)
    assert dome.Slaved is False
    assert dome.CanSetShutter and dome.CanSetAzimuth and dome.CanPark and dome.CanFindHome


@pytest.mark.parametrize(("number", "size"), [(0, 256), (1, 128)])
def test_read_camera_members(sim: AlpacaSimulator, number: int, size: int) -> None:
    camera = connected(Camera(sim.address, number))
    read_common(camera)
    camera.AbortExposure()
    camera.StartExposure(0.05, False)
    wait_until(lambda: camera.ImageReady, 5, "image ready")
    assert camera.CameraState == CameraStates.cameraIdle and camera.PercentCompleted == 100
    assert (camera.CameraXSize, camera.CameraYSize, camera.NumX, camera.NumY) == (size, size, size, size)
    assert (camera.BinX, camera.BinY) == (1, 1)
    assert isinstance(camera.CCDTemperature, float) and isinstance(camera.SetCCDTemperature, float)
    assert isinstance(camera.CoolerOn, bool) and 0.0 <= camera.CoolerPower <= 100.0
    assert camera.LastExposureDuration == pytest.approx(0.05)
    assert camera.LastExposureStartTime
    assert np.array(camera.ImageArray).shape == (size, size)


def test_read_filter_wheel_members(sim: AlpacaSimulator) -> None:
    for number in (0, 1):
        wheel = connected(FilterWheel(sim.address, number))
        read_common(wheel)
        names, offsets = wheel.Names, wheel.FocusOffsets
        assert names and len(names) == len(offsets) and all(isinstance(offset, int) for offset in offsets)
        assert -1 <= wheel.Position < len(names)


# -- mount -----------------------------------------------------------------------------------------


def hour_angle(telescope: Telescope) -> float:
    return (telescope.SiderealTime - telescope.RightAscension + 12.0) % 24.0 - 12.0


def test_slew_to_coordinates(mount: Telescope) -> None:
    target_ha = -1.5 if hour_angle(mount) > 0.0 else 1.5  # at least 22 deg away: Slewing for 0.7 s or more
    ra, dec = high_target(mount, hour_angle=target_ha, zenith_distance=25.0)
    mount.SlewToCoordinatesAsync(ra, dec)
    assert (mount.TargetRightAscension, mount.TargetDeclination) == (ra, dec)
    assert wait_slewed(mount) > 0.2
    assert abs(mount.RightAscension - ra) < 1e-6 and abs(mount.Declination - dec) < 1e-6
    assert_pointing(mount, *expected_altaz(mount, ra, dec))
    assert hour_angle(mount) == pytest.approx(target_ha, abs=0.01)
    # Tracking holds RA/Dec while the hour angle grows with sidereal time.
    time.sleep(1.0)
    assert abs(mount.RightAscension - ra) < 1e-6
    assert_pointing(mount, *expected_altaz(mount, ra, dec))


def test_slew_to_altaz_without_tracking(mount: Telescope) -> None:
    mount.Tracking = False
    mount.SlewToAltAzAsync(120.0, 50.0)
    wait_slewed(mount)
    assert_pointing(mount, 50.0, 120.0)
    assert_pointing(mount, *expected_altaz(mount, mount.RightAscension, mount.Declination))
    ra_before = mount.RightAscension
    time.sleep(1.0)  # standing still: Alt/Az fixed, RA drifting with sidereal time (~0.00028 h/s)
    assert_pointing(mount, 50.0, 120.0)
    assert (mount.RightAscension - ra_before) % 24.0 == pytest.approx(1.0027 / 3600.0, abs=0.0001)


def test_abort_slew_and_sync(mount: Telescope) -> None:
    mount.SlewToCoordinatesAsync(*high_target(mount, hour_angle=-1.0, zenith_distance=0.0))
    wait_until(lambda: not mount.Slewing, SLEW_TIMEOUT, "the slew to the start")
    start_dec = mount.Declination
    ra, dec = high_target(mount, hour_angle=2.0, zenith_distance=40.0)
    mount.SlewToCoordinatesAsync(ra, dec)  # 45 deg in HA: 0.75 s
    time.sleep(0.3)
    mount.AbortSlew()
    assert mount.Slewing is False
    stopped = mount.Declination
    assert stopped != pytest.approx(dec, abs=0.1) and stopped != pytest.approx(start_dec, abs=0.1)
    time.sleep(0.3)
    assert mount.Declination == pytest.approx(stopped, abs=1e-9)
    sync_ra = (mount.RightAscension + 0.01) % 24.0
    mount.SyncToCoordinates(sync_ra, stopped + 0.1)
    assert mount.RightAscension == pytest.approx(sync_ra, abs=1e-9)
    assert mount.Declination == pytest.approx(stopped + 0.1, abs=1e-9)


def test_park_unpark_find_home(mount: Telescope) -> None:
    mount.SlewToCoordinatesAsync(*high_target(mount, hour_angle=-1.0, zenith_distance=10.0))
    wait_until(lambda: not mount.Slewing, SLEW_TIMEOUT, "a slew away from the park position")
    mount.Park()
    assert mount.AtPark is False  # not there yet
    wait_slewed(mount)
    assert mount.AtPark is True and mount.Tracking is False
    assert_pointing(mount, 60.0, 180.0)  # on the meridian, 30 deg from the zenith (northern site)
    with pytest.raises(ParkedException):
        mount.SlewToCoordinatesAsync(*high_target(mount, 0.5, 20.0))
    with pytest.raises(ParkedException):
        mount.Tracking = True
    with pytest.raises(ParkedException):
        mount.FindHome()
    mount.Unpark()
    assert mount.AtPark is False
    mount.FindHome()
    wait_slewed(mount)
    assert mount.AtHome is True and mount.AtPark is False
    assert_pointing(mount, mount.SiteLatitude, 0.0)  # the celestial pole
    mount.Tracking = True
    mount.SlewToCoordinatesAsync(*high_target(mount, 0.5, 20.0))
    assert mount.AtHome is False
    wait_slewed(mount)


def test_mount_refusals(mount: Telescope) -> None:
    for ra, dec in ((24.0, 10.0), (-0.1, 10.0), (5.0, 90.5), (math.nan, 0.0)):
        with pytest.raises(InvalidValueException):
            mount.SlewToCoordinatesAsync(ra, dec)
    below = (mount.SiderealTime + 12.0) % 24.0, -mount.SiteLatitude  # opposite the zenith
    with pytest.raises(InvalidValueException):
        mount.SlewToCoordinatesAsync(*below)
    with pytest.raises(InvalidOperationException):
        mount.SlewToAltAzAsync(90.0, 45.0)  # tracking is on
    mount.Tracking = False
    with pytest.raises(InvalidValueException):
        mount.SlewToAltAzAsync(90.0, -5.0)
    with pytest.raises(InvalidOperationException):
        mount.SlewToCoordinatesAsync(*high_target(mount, 0.5, 20.0))  # tracking is off
    with pytest.raises(NotImplementedException):
        mount.MoveAxis(TelescopeAxes.axisPrimary, 1.0)
    assert mount.Slewing is False


def test_not_connected(sim: AlpacaSimulator) -> None:
    camera = Camera(sim.address, 1)
    camera.Connected = False
    with pytest.raises(NotConnectedException):
        camera.CameraState  # noqa: B018
    with pytest.raises(NotConnectedException):
        camera.StartExposure(1.0, True)
    camera.Connected = True
    dome = Dome(sim.address, 0)
    dome.Connected = False
    with pytest.raises(NotConnectedException):
        dome.OpenShutter()
    dome.Connected = True


# -- dome ------------------------------------------------------------------------------------------


def test_shutter_open_close_cycle(dome: Dome) -> None:
    dome.CloseShutter()
    wait_until(lambda: dome.ShutterStatus == ShutterState.shutterClosed, 3 * SHUTTER_TIME + 2, "shutter closed")
    seen: list[ShutterState] = []

    def observe(final: ShutterState) -> bool:
        status = dome.ShutterStatus
        if not seen or seen[-1] != status:
            seen.append(status)
        return status == final

    dome.OpenShutter()
    wait_until(lambda: observe(ShutterState.shutterOpen), SHUTTER_TIME + 2, "shutter open")
    dome.CloseShutter()
    wait_until(lambda: observe(ShutterState.shutterClosed), SHUTTER_TIME + 2, "shutter closed")
    assert seen == [
        ShutterState.shutterOpening, ShutterState.shutterOpen, ShutterState.shutterClosing, ShutterState.shutterClosed,
    ]  # fmt: skip


def test_abort_slew_stops_the_shutter(dome: Dome) -> None:
    open_dome(dome)
    dome.CloseShutter()
    time.sleep(SHUTTER_TIME / 3)
    dome.AbortSlew()
    assert dome.ShutterStatus == ShutterState.shutterError  # stopped part-way
    time.sleep(SHUTTER_TIME)
    assert dome.ShutterStatus == ShutterState.shutterError
    dome.CloseShutter()
    wait_until(lambda: dome.ShutterStatus == ShutterState.shutterClosed, SHUTTER_TIME + 2, "shutter closed")


def test_dome_azimuth_park_and_home(dome: Dome) -> None:
    dome.SlewToAzimuth(100.0)
    assert dome.Slewing is True
    wait_until(lambda: not dome.Slewing, 10, "dome slew")
    assert dome.Azimuth == pytest.approx(100.0) and dome.AtPark is False and dome.AtHome is False
    dome.SlewToAzimuth(300.0)  # the short way: through north, 160 deg
    time.sleep(0.3)
    assert 300.0 < dome.Azimuth or dome.Azimuth < 100.0
    wait_until(lambda: not dome.Slewing, 10, "dome slew")
    dome.FindHome()
    wait_until(lambda: not dome.Slewing, 10, "dome homing")
    assert dome.AtHome is True and dome.Azimuth == pytest.approx(0.0)
    dome.Park()
    wait_until(lambda: not dome.Slewing, 10, "dome parking")
    assert dome.AtPark is True and dome.AtHome is False and dome.Azimuth == pytest.approx(180.0)
    with pytest.raises(InvalidValueException):
        dome.SlewToAzimuth(360.0)


# -- cameras ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("number", "size"), [(0, 256), (1, 128)])
def test_exposure(sim: AlpacaSimulator, number: int, size: int) -> None:
    camera = connected(Camera(sim.address, number))
    camera.AbortExposure()
    before = datetime.now(UTC)
    camera.StartExposure(0.6, True)
    states, percents = set(), []
    while not camera.ImageReady:
        state = camera.CameraState
        states.add(state)
        if state == CameraStates.cameraExposing:
            percents.append(camera.PercentCompleted)
        time.sleep(0.05)
    assert {CameraStates.cameraExposing, CameraStates.cameraReading} <= states
    assert percents == sorted(percents) and 0 <= percents[0] < 50 and len(set(percents)) > 2
    assert camera.CameraState == CameraStates.cameraIdle
    image = np.array(camera.ImageArray)
    assert image.shape == (size, size)
    assert image.max() > np.median(image) + 1000  # stars well above the sky
    assert camera.LastExposureDuration == pytest.approx(0.6)
    started = datetime.fromisoformat(camera.LastExposureStartTime).replace(tzinfo=UTC)
    assert abs((started - before).total_seconds()) < 1.0


def test_binning_subframe_and_dark(sim: AlpacaSimulator) -> None:
    camera = connected(Camera(sim.address, 0))
    camera.AbortExposure()
    camera.BinX = camera.BinY = 2
    try:
        camera.NumX, camera.NumY = 128, 100
        camera.StartX, camera.StartY = 0, 28
        camera.StartExposure(0.1, False)
        wait_until(lambda: camera.ImageReady, 5, "image ready")
        dark = np.array(camera.ImageArray)
        assert dark.shape == (128, 100)
        assert dark.max() < np.median(dark) + 200  # no stars in a dark
        camera.StartY = 29  # 29 + 100 > 256 / 2
        with pytest.raises(InvalidValueException):
            camera.StartExposure(0.1, True)
        with pytest.raises(InvalidValueException):
            camera.BinX = 5
    finally:
        camera.BinX = camera.BinY = 1
        camera.StartX = camera.StartY = 0
        camera.NumX = camera.NumY = 256


def test_abort_and_stop_exposure(sim: AlpacaSimulator) -> None:
    camera = connected(Camera(sim.address, 1))
    camera.AbortExposure()
    camera.StartExposure(5.0, True)
    with pytest.raises(InvalidOperationException):
        camera.StartExposure(1.0, True)  # one at a time
    camera.AbortExposure()
    assert camera.CameraState == CameraStates.cameraIdle and camera.ImageReady is False
    with pytest.raises(InvalidOperationException):
        camera.ImageArray  # noqa: B018 (discarded)
    camera.StartExposure(5.0, True)
    time.sleep(0.3)
    camera.StopExposure()
    assert camera.CameraState == CameraStates.cameraReading
    wait_until(lambda: camera.ImageReady, READOUT_TIME + 2, "image ready")
    assert 0.25 < camera.LastExposureDuration < 1.0  # kept, shortened
    assert np.array(camera.ImageArray).shape == (128, 128)
    with pytest.raises(InvalidValueException):
        camera.StartExposure(-1.0, True)


@pytest.mark.parametrize("number", [0, 1])
def test_cooling(sim: AlpacaSimulator, number: int) -> None:
    camera = connected(Camera(sim.address, number))
    camera.SetCCDTemperature = -20.0
    camera.CoolerOn = True
    try:
        first = camera.CCDTemperature
        time.sleep(1.0)
        second = camera.CCDTemperature
        assert second < first - 0.5  # relaxing towards -20 C with a 20 s time constant
        assert camera.CoolerPower == 100.0  # pulling down
        with pytest.raises(InvalidValueException):
            camera.SetCCDTemperature = -150.0
    finally:
        camera.CoolerOn = False
    assert camera.CoolerPower == 0.0


# -- filter wheels ---------------------------------------------------------------------------------


@pytest.mark.parametrize("number", [0, 1])
def test_filter_wheel_move(sim: AlpacaSimulator, number: int) -> None:
    wheel = connected(FilterWheel(sim.address, number))
    wait_until(lambda: wheel.Position != -1, 5, "wheel at rest")
    start = wheel.Position
    target = (start + 2) % len(wheel.Names)
    wheel.Position = target
    assert wheel.Position == -1
    with pytest.raises(InvalidOperationException):
        wheel.Position = start  # still moving
    began = time.monotonic()
    wait_until(lambda: wheel.Position == target, 2 * FILTER_TIME + 2, "filter in place")
    assert time.monotonic() - began > FILTER_TIME  # two slots
    with pytest.raises(InvalidValueException):
        wheel.Position = len(wheel.Names)
