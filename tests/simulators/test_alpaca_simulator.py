"""End-to-end tests of the Alpaca simulator as a process: raw HTTP and UDP, the CLI, fault injection.

Every simulator here is a real subprocess on a free HTTP port and a free
discovery port, with fast timings, killed in a finalizer; tests set up the
device state they need, so they run in any order and under pytest-xdist.
Faults are driven through ``/simulator/fault`` and observed the way a DCS
device server would, through alpyca where it matters. The alpyca-driven
conformance suite is test_alpaca_conformance.py, which shares the helpers
below.
"""

from __future__ import annotations

import itertools
import json
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from alpaca.camera import Camera, CameraStates
from alpaca.dome import Dome, ShutterState
from alpaca.exceptions import DriverException
from alpaca.telescope import Telescope

from tests.conftest import ROOT, Simulator, project_env

STARTUP_TIMEOUT = 20.0  # s; importing astropy and loading its tables takes 1-2 s
LISTENING_RE = re.compile(r"^alpaca simulator listening on (\S+):(\d+)$")
SHUTTER_TIME = 1.0  # s
READOUT_TIME = 0.2  # s
FILTER_TIME = 0.2  # s per slot
FAST = (
    "--slew-rate", "60", "--dome-rate", "180", "--shutter-time", str(SHUTTER_TIME),
    "--filter-time", str(FILTER_TIME), "--readout-time", str(READOUT_TIME),
)  # fmt: skip
DEVICES = ("telescope/0", "dome/0", "camera/0", "camera/1", "filterwheel/0", "filterwheel/1")

# Alpaca error numbers
NOT_IMPLEMENTED, INVALID_VALUE, VALUE_NOT_SET, NOT_CONNECTED, PARKED, INVALID_OPERATION = (
    0x400, 0x401, 0x402, 0x407, 0x408, 0x40B,
)  # fmt: skip

# -- helpers shared with test_alpaca_conformance.py ------------------------------------------

_LOG_NUMBERS = itertools.count()


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("", 0))
        return int(sock.getsockname()[1])


class AlpacaSimulator(Simulator):
    """The Alpaca simulator on a port it picks itself, a free discovery port, fast timings plus ``options``."""

    module = "simulators.alpaca.server"

    def __init__(self, log_dir: Path, *options: str) -> None:
        super().__init__(port=0)
        self.discovery_port = free_udp_port()
        self.options = (*FAST, *options)
        self.log_path = log_dir / f"alpaca-{next(_LOG_NUMBERS)}.log"

    def start(self) -> AlpacaSimulator:
        command = [sys.executable, "-m", self.module, "--port", "0", "--discovery-port", str(self.discovery_port)]
        with open(self.log_path, "w") as log_file:
            self.process = subprocess.Popen(
                [*command, *self.options], stdout=subprocess.PIPE, stderr=log_file, text=True, env=project_env(), cwd=ROOT
            )  # fmt: skip
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], STARTUP_TIMEOUT)
        line = self.process.stdout.readline().strip() if ready else ""
        match = LISTENING_RE.match(line)
        if not match:
            self.kill()
            pytest.fail(f"{self.module} did not start: {line!r}\n{self.log()}")
        self.port = int(match.group(2))
        return self

    def kill(self) -> None:
        stdout = self.process.stdout if self.process is not None else None
        super().kill()
        if stdout is not None:
            stdout.close()

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT``, what alpyca's constructors take."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def get(
        self, path: str, timeout: float = 5.0, headers: dict[str, str] | None = None, **params: Any
    ) -> requests.Response:
        return requests.get(f"{self.url}/api/v1/{path}", params=params, headers=headers, timeout=timeout)

    def put(self, path: str, timeout: float = 5.0, **fields: Any) -> requests.Response:
        return requests.put(f"{self.url}/api/v1/{path}", data=fields, timeout=timeout)

    def fault(self, device: str, fault: str) -> dict[str, str]:
        """Inject (or with ``none`` clear) a fault; the map of every device's fault."""
        response = requests.put(f"{self.url}/simulator/fault", data={"device": device, "fault": fault}, timeout=5)
        assert response.status_code == 200, response.text
        return response.json()["Value"]


def ok(response: requests.Response) -> Any:
    """The Value of a successful Alpaca reply (None for methods)."""
    assert response.status_code == 200, f"HTTP {response.status_code}: {response.text}"
    body = response.json()
    assert body["ErrorNumber"] == 0, body
    assert body["ErrorMessage"] == "", body
    return body.get("Value")


def alpaca_error(response: requests.Response) -> int:
    """The ErrorNumber of an Alpaca error reply (HTTP 200)."""
    assert response.status_code == 200, f"HTTP {response.status_code}: {response.text}"
    body = response.json()
    assert body["ErrorNumber"] != 0 and body["ErrorMessage"], body
    assert "Value" not in body, body
    return int(body["ErrorNumber"])


def wait_until(condition: Callable[[], Any], timeout: float = 10.0, what: str = "condition", poll: float = 0.05) -> Any:
    """Poll ``condition`` until truthy; unlike conftest.wait_for, exceptions are not swallowed."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(poll)


def connected(device: Any) -> Any:
    """An alpyca device, connected (Connected=True is synchronous)."""
    device.Connected = True
    return device


def open_dome(dome: Dome) -> None:
    dome.AbortSlew()
    dome.OpenShutter()
    wait_until(lambda: dome.ShutterStatus == ShutterState.shutterOpen, 3 * SHUTTER_TIME + 2, "shutter open")


def image_bytes(content: bytes) -> tuple[tuple[int, ...], np.ndarray]:
    """Split an Alpaca ImageBytes reply into its 11 header integers and its pixels as [x][y]."""
    header = struct.unpack("<iiIIiiiiiii", content[:44])
    _, _, _, _, start, _, transmission, rank, dim1, dim2, _ = header
    assert rank == 2
    dtype = {1: "<i2", 2: "<i4", 8: "<u2"}[transmission]
    return header, np.frombuffer(content[start:], dtype=dtype).reshape(dim1, dim2)


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AlpacaSimulator]:
    simulator = AlpacaSimulator(tmp_path_factory.mktemp("alpaca")).start()
    yield simulator
    simulator.kill()


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[AlpacaSimulator]:
    """A simulator of its own, in its start-up state, ten times faster (``--time-scale 10``)."""
    simulator = AlpacaSimulator(tmp_path, "--time-scale", "10", "--shutter-time", "10").start()
    yield simulator
    simulator.kill()


# -- the process ---------------------------------------------------------------------------------


def test_one_ready_line_then_sigterm_exits_0(tmp_path: Path) -> None:
    simulator = AlpacaSimulator(tmp_path).start()
    try:
        assert ok(simulator.get("telescope/0/name")) == "DCS mount simulator"
        assert simulator.process is not None
        simulator.process.send_signal(signal.SIGTERM)
        assert simulator.process.wait(timeout=10) == 0
        assert simulator.process.stdout is not None
        assert simulator.process.stdout.read() == "", "the ready line must be the only stdout output"
    finally:
        simulator.kill()


def test_start_up_state_and_time_scale(fresh: AlpacaSimulator) -> None:
    """Everything starts disconnected, the mount parked, the shutter closed; --time-scale speeds motions up."""
    for device in DEVICES:
        assert ok(fresh.get(f"{device}/connected")) is False
        assert alpaca_error(fresh.get(f"{device}/devicestate")) == NOT_CONNECTED
        ok(fresh.put(f"{device}/connected", Connected="True"))
    assert ok(fresh.get("telescope/0/atpark")) is True
    assert ok(fresh.get("telescope/0/tracking")) is False
    assert ok(fresh.get("dome/0/shutterstatus")) == ShutterState.shutterClosed
    assert ok(fresh.get("dome/0/atpark")) is True
    assert ok(fresh.get("camera/0/camerastate")) == CameraStates.cameraIdle
    assert alpaca_error(fresh.get("telescope/0/targetrightascension")) == VALUE_NOT_SET
    assert alpaca_error(fresh.get("camera/0/lastexposureduration")) == VALUE_NOT_SET
    assert alpaca_error(fresh.get("camera/0/lastexposurestarttime")) == VALUE_NOT_SET
    assert alpaca_error(fresh.get("camera/0/imagearray")) == INVALID_OPERATION
    # A 10 s shutter stroke at --time-scale 10 takes 1 s of real time.
    started = time.monotonic()
    ok(fresh.put("dome/0/openshutter"))
    wait_until(lambda: ok(fresh.get("dome/0/shutterstatus")) == ShutterState.shutterOpen, 5, "shutter open")
    assert 0.7 < time.monotonic() - started < 2.5


# -- the protocol ----------------------------------------------------------------------------------


def test_envelope_transaction_ids(sim: AlpacaSimulator) -> None:
    first = sim.get("camera/0/name", ClientTransactionID=41, ClientID=7).json()
    second = sim.get("camera/0/name", clienttransactionid=42).json()  # names are case-insensitive
    assert first["ClientTransactionID"] == 41 and second["ClientTransactionID"] == 42
    assert second["ServerTransactionID"] > first["ServerTransactionID"] >= 1
    assert set(first) == {"Value", "ClientTransactionID", "ServerTransactionID", "ErrorNumber", "ErrorMessage"}
    assert first["Value"] == "DCS VIS camera simulator"
    method = sim.put("camera/0/connected", Connected="true", ClientTransactionID=43).json()
    assert "Value" not in method and method["ClientTransactionID"] == 43 and method["ErrorNumber"] == 0
    assert sim.get("camera/0/name").json()["ClientTransactionID"] == 0  # absent: 0


def test_parameter_names_and_booleans_are_case_insensitive(sim: AlpacaSimulator) -> None:
    ok(sim.put("filterwheel/0/connected", CONNECTED="TRUE"))
    assert ok(sim.get("filterwheel/0/connected")) is True
    ok(sim.put("filterwheel/0/position", position="1"))
    wait_until(lambda: ok(sim.get("filterwheel/0/position")) == 1, 3, "filter 1")


@pytest.mark.parametrize(
    ("verb", "path", "fields"),
    [
        ("PUT", "telescope/0/slewtocoordinatesasync", {"RightAscension": "abc", "Declination": "10"}),
        ("PUT", "telescope/0/slewtocoordinatesasync", {"RightAscension": "5"}),
        ("PUT", "telescope/0/connected", {}),
        ("PUT", "telescope/0/connected", {"Connected": "maybe"}),
        ("PUT", "filterwheel/0/position", {"Position": "1.5"}),
        ("GET", "telescope/7/name", {}),
        ("GET", "telescope/-1/name", {}),
        ("GET", "telescope/A/name", {}),
        ("GET", "focuser/0/name", {}),
        ("GET", "Telescope/0/name", {}),
        ("GET", "telescope/0/Name", {}),
        ("GET", "telescope/0/nosuchmember", {}),
        ("GET", "telescope/0/slewtocoordinatesasync", {}),
        ("PUT", "telescope/0/rightascension", {"RightAscension": "5"}),
        ("GET", "telescope/0/name", {"ClientTransactionID": "abc"}),
        ("GET", "telescope/0/name", {"ClientTransactionID": ""}),
        ("GET", "telescope/0/name", {"ClientID": "-12"}),
        ("GET", "telescope/0", {}),
    ],
)
def test_malformed_requests_are_http_400(sim: AlpacaSimulator, verb: str, path: str, fields: dict[str, str]) -> None:
    if verb == "GET":
        response = sim.get(path, **fields)
    else:
        response = sim.put(path, **fields)
    assert response.status_code == 400, response.text
    assert response.headers["Content-Type"].startswith("text/plain")
    assert response.text.strip()


def test_error_numbers(sim: AlpacaSimulator) -> None:
    ok(sim.put("filterwheel/1/connected", Connected="False"))
    assert alpaca_error(sim.get("filterwheel/1/position")) == NOT_CONNECTED
    ok(sim.put("telescope/0/connected", Connected="True"))
    assert alpaca_error(sim.put("telescope/0/moveaxis", Axis="0", Rate="1")) == NOT_IMPLEMENTED
    assert alpaca_error(sim.put("telescope/0/targetdeclination", TargetDeclination="95")) == INVALID_VALUE
    assert alpaca_error(sim.put("telescope/0/targetrightascension", TargetRightAscension="nan")) == INVALID_VALUE
    ok(sim.put("telescope/0/park"))
    wait_until(lambda: ok(sim.get("telescope/0/atpark")), 15, "mount parked")
    assert alpaca_error(sim.put("telescope/0/slewtoaltazasync", Azimuth="90", Altitude="45")) == PARKED
    ok(sim.put("telescope/0/unpark"))
    ok(sim.put("telescope/0/tracking", Tracking="False"))
    assert (
        alpaca_error(sim.put("telescope/0/slewtocoordinatesasync", RightAscension="1", Declination="2"))
        == INVALID_OPERATION
    )


def test_management_api(sim: AlpacaSimulator) -> None:
    assert ok(requests.get(f"{sim.url}/management/apiversions", timeout=5)) == [1]
    description = ok(requests.get(f"{sim.url}/management/v1/description", timeout=5))
    assert set(description) == {"ServerName", "Manufacturer", "ManufacturerVersion", "Location"}
    devices = ok(
        requests.get(f"{sim.url}/management/v1/configureddevices", params={"ClientTransactionID": 3}, timeout=5)
    )
    assert [(d["DeviceType"], d["DeviceNumber"]) for d in devices] == [
        ("Telescope", 0), ("Dome", 0), ("Camera", 0), ("Camera", 1), ("FilterWheel", 0), ("FilterWheel", 1),
    ]  # fmt: skip
    assert len({d["UniqueID"] for d in devices}) == 6


def test_discovery_over_raw_udp(sim: AlpacaSimulator) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.5)
        sock.sendto(b"not a discovery query", ("127.0.0.1", sim.discovery_port))
        sock.sendto(b"alpacadiscovery1", ("127.0.0.1", sim.discovery_port))
        reply, _ = sock.recvfrom(1024)
        assert json.loads(reply) == {"AlpacaPort": sim.port}
        with pytest.raises(TimeoutError):
            sock.recvfrom(1024)  # the garbage datagram got no answer


def test_image_array_as_json_and_as_imagebytes(sim: AlpacaSimulator) -> None:
    ok(sim.put("camera/0/connected", Connected="True"))
    ok(sim.put("camera/0/abortexposure"))
    for member, value in (("binx", 2), ("biny", 2), ("numx", 100), ("numy", 64), ("startx", 10), ("starty", 20)):
        ok(sim.put(f"camera/0/{member}", **{member: value}))
    try:
        ok(sim.put("camera/0/startexposure", Duration="0.2", Light="true"))
        wait_until(lambda: ok(sim.get("camera/0/imageready")), 5, "image ready")
        as_json = sim.get("camera/0/imagearray").json()
        assert (as_json["Type"], as_json["Rank"], as_json["ErrorNumber"]) == (2, 2, 0)
        pixels = np.array(as_json["Value"])
        assert pixels.shape == (100, 64)  # [x][y]: NumX x NumY, binned
        response = sim.get("camera/0/imagearray", headers={"Accept": "application/imagebytes"}, ClientTransactionID=9)
        assert response.headers["Content-Type"] == "application/imagebytes"
        header, binary = image_bytes(response.content)
        assert header[:5] == (1, 0, 9, header[3], 44) and header[3] >= 1
        assert header[5] == 2  # image element type Int32
        np.testing.assert_array_equal(binary, pixels)
    finally:
        for member, value in (("binx", 1), ("biny", 1), ("startx", 0), ("starty", 0), ("numx", 256), ("numy", 256)):
            ok(sim.put(f"camera/0/{member}", **{member: value}))
    # Errors are JSON even when ImageBytes are accepted.
    ok(sim.put("camera/0/startexposure", Duration="5", Light="true"))
    response = sim.get("camera/0/imagearray", headers={"Accept": "application/imagebytes"})
    assert response.headers["Content-Type"].startswith("application/json")
    assert alpaca_error(response) == INVALID_OPERATION
    ok(sim.put("camera/0/abortexposure"))


# -- fault injection -------------------------------------------------------------------------------


def test_fault_endpoint(sim: AlpacaSimulator) -> None:
    assert requests.get(f"{sim.url}/simulator/fault", timeout=5).json()["Value"] == dict.fromkeys(DEVICES, "none")
    bad = [{"device": "dome/0", "fault": "camera_error"}, {"device": "dome/9", "fault": "none"}, {"device": "dome/0"}]
    for fields in bad:
        assert requests.put(f"{sim.url}/simulator/fault", data=fields, timeout=5).status_code == 400


def test_shutter_stuck_never_completes_closing(sim: AlpacaSimulator) -> None:
    dome = connected(Dome(sim.address, 0))
    open_dome(dome)
    sim.fault("dome/0", "shutter_stuck")
    try:
        dome.CloseShutter()
        deadline = time.monotonic() + 2.5 * SHUTTER_TIME
        while time.monotonic() < deadline:
            assert dome.ShutterStatus == ShutterState.shutterClosing
            time.sleep(0.1)
    finally:
        sim.fault("dome/0", "none")
    wait_until(lambda: dome.ShutterStatus == ShutterState.shutterClosed, 2 * SHUTTER_TIME + 1, "shutter closed")


def test_mount_silent_requests_time_out(sim: AlpacaSimulator) -> None:
    telescope = connected(Telescope(sim.address, 0))
    assert sim.fault("telescope/0", "mount_silent")["telescope/0"] == "mount_silent"
    try:
        started = time.monotonic()
        with pytest.raises(requests.exceptions.ReadTimeout):
            sim.get("telescope/0/slewing", timeout=0.5)
        assert time.monotonic() - started < 2.0
        # The other devices keep answering.
        assert ok(sim.get("dome/0/name")) == "DCS dome simulator"
        # What a device server sees: alpyca gives up after its fixed 5 s timeout with requests' exception.
        with pytest.raises(requests.exceptions.Timeout):
            telescope.Slewing  # noqa: B018 (the property read is the request)
    finally:
        sim.fault("telescope/0", "none")
    assert telescope.Name == "DCS mount simulator"


def test_camera_error(sim: AlpacaSimulator) -> None:
    camera = connected(Camera(sim.address, 1))
    camera.AbortExposure()
    camera.StartExposure(5.0, True)
    sim.fault("camera/1", "camera_error")
    try:
        assert camera.CameraState == CameraStates.cameraError
        assert camera.ImageReady is False  # the exposure under way is lost
        with pytest.raises(DriverException) as failure:
            camera.StartExposure(0.1, True)
        assert 0x500 <= failure.value.number <= 0xFFF
        assert "camera/1" in failure.value.message
    finally:
        sim.fault("camera/1", "none")
    assert camera.CameraState == CameraStates.cameraIdle
    camera.StartExposure(0.1, False)
    wait_until(lambda: camera.ImageReady, 5, "image after recovery")
