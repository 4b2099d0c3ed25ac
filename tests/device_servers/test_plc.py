"""The Plc device against the PLC simulator over its JSON-over-TCP protocol."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest
import tango

from tests.conftest import Facility, Simulator, wait_for


class PlcSimulator(Simulator):
    module = "simulators.plc.server"

    def command(self, name: str, **arguments: object) -> dict:
        with socket.create_connection(("127.0.0.1", self.port), timeout=3) as sock:
            sock.sendall((json.dumps({"command": [{"name": name, **arguments}]}) + "\n").encode())
            data = b""
            while not data.endswith(b"\n"):
                data += sock.recv(65536)
        return json.loads(data)[0]


@pytest.fixture
def plc_sim() -> Iterator[PlcSimulator]:
    sim = PlcSimulator().start()
    yield sim
    sim.kill()


def plc_facility(fac: Facility, port: int, period: float = 0.2) -> dict:
    return {"facility": "plc", "servers": {"Plc/test": {"devices": {"obs/plc/1": {
        "class": "Plc", "properties": {"Port": port, "PollPeriod": period}}}}}}  # fmt: skip


@pytest.fixture
def plc(facility_dir: Facility, plc_sim: PlcSimulator) -> tango.DeviceProxy:
    facility_dir.write(plc_facility(facility_dir, plc_sim.port))
    facility_dir.dcs("up", str(facility_dir.file))
    dev = facility_dir.proxy("obs/plc/1")
    wait_for(lambda: dev.state() == tango.DevState.ON, what="PLC device ON")
    return dev


def test_sensor_values_become_attributes_with_their_timestamps(plc: tango.DeviceProxy, plc_sim: PlcSimulator) -> None:
    wait_for(lambda: "WXT520_RainRate" in plc.get_attribute_list(), what="sensor attributes")
    rain = plc.read_attribute("WXT520_RainRate")
    assert rain.quality == tango.AttrQuality.ATTR_VALID and rain.value == 0.0
    sky = plc.read_attribute("MLX90614_1_SkyTemperature")
    assert -60 < sky.value < 30
    assert plc.read_attribute("Mode").value == "AUTO"
    assert plc.read_attribute("UpsStatus").value == "ok"
    assert any(s.startswith("DRD11_digital") for s in plc.read_attribute("Sensors").value)

    plc_sim.command("INJECT", device="WXT520", value_name="RainRate", value=7.5)
    wait_for(lambda: plc.read_attribute("WXT520_RainRate").value == 7.5, what="injected rain")
    plc_sim.command("SET_VALID", device="WXT520", valid="no")
    wait_for(lambda: plc.read_attribute("WXT520_RainRate").quality == tango.AttrQuality.ATTR_INVALID, what="INVALID")
    plc_sim.command("EMERGENCY_STOP", value=True)
    wait_for(lambda: plc.read_attribute("EmergencyStop").value is True, what="e-stop seen")
    assert plc.state() == tango.DevState.ALARM and "EmergencyStop" in plc.status()


def test_bypass_is_sent_to_the_plc_and_read_back(plc: tango.DeviceProxy) -> None:
    plc.command_inout("SetBypass", True)
    wait_for(lambda: plc.read_attribute("Bypass").value is True, what="bypass confirmed by the PLC")
    plc.command_inout("SetBypass", False)
    wait_for(lambda: plc.read_attribute("Bypass").value is False, what="bypass ended")


def test_plc_stopped_and_restarted(plc: tango.DeviceProxy, plc_sim: PlcSimulator) -> None:
    wait_for(lambda: "WXT520_RainRate" in plc.get_attribute_list(), what="sensor attributes")
    plc_sim.kill()
    wait_for(lambda: plc.state() == tango.DevState.UNKNOWN, what="UNKNOWN without the PLC")
    assert f"127.0.0.1:{plc_sim.port}" in plc.status()
    assert plc.read_attribute("WXT520_RainRate").quality == tango.AttrQuality.ATTR_INVALID
    plc_sim.start()
    wait_for(lambda: plc.state() == tango.DevState.ON, timeout=20, what="back ON")
    assert plc.read_attribute("WXT520_RainRate").quality == tango.AttrQuality.ATTR_VALID


def test_device_started_before_the_plc(facility_dir: Facility) -> None:
    sim = PlcSimulator()
    facility_dir.write(plc_facility(facility_dir, sim.port))
    facility_dir.dcs("up", str(facility_dir.file))
    dev = facility_dir.proxy("obs/plc/1")
    wait_for(lambda: dev.state() == tango.DevState.UNKNOWN, what="UNKNOWN before the PLC runs")
    sim.start()
    try:
        wait_for(lambda: dev.state() == tango.DevState.ON, timeout=20, what="ON once the PLC runs")
        wait_for(lambda: "WXT520_RainRate" in dev.get_attribute_list(), what="sensor attributes made late")
    finally:
        sim.kill()
