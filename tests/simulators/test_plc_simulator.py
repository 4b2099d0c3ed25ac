"""End-to-end tests of the weather and site PLC simulator over a real TCP socket.

Each test starts its own simulator subprocess on a port it picks itself
(``--port 0``), so tests are independent and can run in parallel. The PLC
cycles every 50 ms here, so a scenario of ten cycles plays in half a second.
"""

from __future__ import annotations

import json
import math
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from simulators.plc import scenario as scenarios
from simulators.plc.scenario import ScenarioError

ROOT = Path(__file__).resolve().parents[2]
SCENARIO_DIR = ROOT / "simulators" / "plc" / "scenarios"
LISTENING_RE = re.compile(r"^plc simulator listening on (\S+):(\d+)$")
TIMESTAMP_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}$")
DATE_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d$")
STARTUP_TIMEOUT = 15.0
REPLY_TIMEOUT = 3.0
TICK = 0.05
SCENARIO_TICK = 0.15

# The seed's sample STATUS reply (002, section 1.8.4), brackets repaired: the
# printed sample drops a few "]}" where a device's values end.
SEED_SAMPLE = json.loads(
    """[{"name": "STATUS", "from": "Beckhoff", "version_firmware": "20170809", "site": "OSM-Mexico",
    "date": "2017-03-03T13:45:00", "device": [
    {"name": "WXT520", "type": "meteo", "serial_number": "14656423", "valid": "yes", "values": [
        {"name": "OutsideTemp", "value": 12.12, "unit": "Celcius", "comment": ""},
        {"name": "OutsideHumidity", "value": 64.1, "unit": "percent", "comment": ""},
        {"name": "Pressure", "value": 769.2, "unit": "mbar", "comment": "At site elevation"},
        {"name": "RainRate", "value": 0.0, "unit": "mm/h", "comment": ""},
        {"name": "WindSpeed", "value": 3.1, "unit": "m/s", "comment": ""},
        {"name": "WindDir", "value": 202.3, "unit": "deg", "comment": "(N=0, E=90)"},
        {"name": "DewPoint", "value": 8.3, "unit": "deg", "comment": ""}]},
    {"name": "DRD11", "type": "meteo", "serial_number": "RET6789", "valid": "yes", "values": [
        {"name": "analog", "value": 2.345, "unit": "V", "comment": "3V=Dry <2.5V=Rain"},
        {"name": "digital", "value": 1, "unit": "bool", "comment": "1=Dry 0=Rain"}]},
    {"name": "VantagePro", "type": "meteo", "serial_number": "ERTRY2344324", "valid": "no", "values": [
        {"name": "OutsideTemp", "value": 12.45, "unit": "Celcius", "comment": ""},
        {"name": "InsideTemp", "value": 20.28, "unit": "Celcius", "comment": ""},
        {"name": "OutsideHumidity", "value": 65.3, "unit": "percent", "comment": ""},
        {"name": "InsideHumidity", "value": 45.6, "unit": "percent", "comment": ""},
        {"name": "Pressure", "value": 768.7, "unit": "mbar", "comment": "At site elevation"},
        {"name": "RainRate", "value": 0.0, "unit": "mm/h", "comment": ""},
        {"name": "WindSpeed", "value": 2.8, "unit": "m/s", "comment": ""},
        {"name": "WindDir", "value": 207.0, "unit": "deg", "comment": "(N=0, E=90)"},
        {"name": "WindDirCardinal", "value": "SW", "unit": "string", "comment": ""},
        {"name": "DewPoint", "value": 8.5, "unit": "deg", "comment": ""}]},
    {"name": "MLX90614-1", "type": "meteo", "serial_number": "Unknown", "valid": "yes", "values": [
        {"name": "SensorTemperature", "value": 23.56, "unit": "Celcius", "comment": ""},
        {"name": "SkyTemperature", "value": -15.67, "unit": "Celcius", "comment": "Clear<-10 VeryCloudy>4"}]},
    {"name": "LAMP_FLAT_CAGIRE", "type": "calib", "serial_number": "REF_3434", "valid": "yes", "values": [
        {"name": "status", "value": "on", "unit": "string", "comment": "on or off"},
        {"name": "current", "value": 0.234, "unit": "Ampere", "comment": ""}]},
    {"name": "LAMP FLAT CAGIRE", "type": "calib", "serial_number": "REF_3434", "valid": "yes", "values": [
        {"name": "status", "value": "on", "unit": "string", "comment": "on or off"},
        {"name": "current", "value": 0.234, "unit": "Ampere", "comment": ""}]}
    ]}]"""
)
# The sample repeats the CAGIRE lamp (once with spaces in its name); the
# simulator puts the other camera's lamp there.
SAMPLE_DUPLICATE_LAMP = "LAMP FLAT CAGIRE"
SECOND_LAMP = "LAMP_FLAT_DDRAGO"


def project_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def wait_for(predicate: Callable[[], Any], timeout: float = 5.0, period: float = 0.01) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(period)
    return predicate()


class Client:
    """JSON line client with its own buffer, so a read timeout leaves it usable."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=REPLY_TIMEOUT)
        self._buffer = b""

    def send_line(self, line: str) -> None:
        self.sock.sendall(line.encode("utf-8") + b"\n")

    def read_line(self, timeout: float = REPLY_TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no reply")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                raise TimeoutError("no reply") from None
            if not chunk:
                raise ConnectionError("connection closed by the simulator")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode("utf-8")

    def ask_line(self, line: str) -> list[dict[str, Any]]:
        self.send_line(line)
        reply = json.loads(self.read_line())
        assert isinstance(reply, list), reply
        return reply

    def ask(self, *commands: dict[str, Any]) -> list[dict[str, Any]]:
        """Send one request holding ``commands``; return the reply list."""
        reply = self.ask_line(json.dumps({"command": list(commands)}))
        assert len(reply) == len(commands), reply
        return reply

    def command(self, name: str, **args: Any) -> dict[str, Any]:
        """Run one command that must succeed; return its reply object."""
        (reply,) = self.ask({"name": name, **args})
        assert reply.get("result") == "OK", reply
        return reply

    def refused(self, name: str, **args: Any) -> str:
        """Run one command that must be refused; return the error message."""
        (reply,) = self.ask({"name": name, **args})
        assert reply["name"] == "ERROR", reply
        assert set(reply) == {"name", "command", "message"}, reply
        return str(reply["message"])

    def status(self) -> dict[str, Any]:
        (reply,) = self.ask({"name": "STATUS"})
        return reply

    def is_closed_by_peer(self, timeout: float = REPLY_TIMEOUT) -> bool:
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(4096) == b""
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self.sock.close()


def devices(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {device["name"]: device for device in status["device"]}


def values(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{device: {value name: value}}"""
    return {device["name"]: {v["name"]: v["value"] for v in device["values"]} for device in status["device"]}


def stamps(status: dict[str, Any], device: str) -> set[str]:
    return {value["timestamp"] for value in devices(status)[device]["values"]}


def status_when(
    client: Client, predicate: Callable[[dict[str, Any]], bool], what: str, timeout: float = 5.0
) -> dict[str, Any]:
    """The first STATUS for which ``predicate`` holds; fails the test if none comes in time."""
    deadline = time.monotonic() + timeout
    while True:
        status = client.status()
        if predicate(status):
            return status
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout} s waiting for {what}; last STATUS values: {values(status)}"
            )
        time.sleep(0.01)


@dataclass
class Simulator:
    proc: subprocess.Popen[str]
    host: str
    port: int
    log_path: Path
    clients: list[Client]

    def connect(self) -> Client:
        client = Client(self.port)
        self.clients.append(client)
        return client

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def start_simulator(tmp_path: Path) -> Iterator[Callable[..., Simulator]]:
    """Factory starting simulator subprocesses (``--port 0``); all are killed afterwards."""
    started: list[Simulator] = []

    def start(*extra_args: str, tick: float = TICK) -> Simulator:
        log_path = tmp_path / f"plc-{len(started)}.log"
        command = [sys.executable, "-m", "simulators.plc.server", "--port", "0", "--tick", str(tick), *extra_args]
        with open(log_path, "w") as log_file:
            proc = subprocess.Popen(
                command, cwd=ROOT, env=project_env(), stdout=subprocess.PIPE, stderr=log_file, text=True
            )
        simulator = Simulator(proc, "", 0, log_path, [])
        started.append(simulator)
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], STARTUP_TIMEOUT)
        line = proc.stdout.readline() if ready else ""
        match = LISTENING_RE.match(line.strip())
        assert match, f"no listening line (got {line!r}); log:\n{simulator.log()}"
        simulator.host, simulator.port = match.group(1), int(match.group(2))
        return simulator

    yield start

    for simulator in started:
        for client in simulator.clients:
            client.close()
        if simulator.proc.poll() is None:
            simulator.proc.kill()
        simulator.proc.wait(timeout=10)
        if simulator.proc.stdout is not None:
            simulator.proc.stdout.close()


@pytest.fixture
def sim(start_simulator: Callable[..., Simulator]) -> Simulator:
    return start_simulator("--seed", "1")


@pytest.fixture
def plc(sim: Simulator) -> Client:
    return sim.connect()


# -- startup and the STATUS format --------------------------------------------


def test_listening_line(sim: Simulator) -> None:
    assert sim.host == "127.0.0.1"
    assert 0 < sim.port < 65536


def test_status_reply_has_the_seed_sample_format(plc: Client) -> None:
    reply = plc.ask_line('{"command": [{"name": "STATUS"}]}')
    assert len(reply) == 1
    status, sample = reply[0], SEED_SAMPLE[0]
    assert list(status) == list(sample)  # same keys, same order
    assert status["name"] == "STATUS"
    for key in ("from", "version_firmware", "site"):
        assert status[key] == sample[key]
    assert DATE_RE.match(status["date"]), status["date"]
    datetime.fromisoformat(status["date"])

    ours = devices(status)
    for device in sample["device"]:
        name = SECOND_LAMP if device["name"] == SAMPLE_DUPLICATE_LAMP else device["name"]
        assert name in ours, f"{name} missing from STATUS"
        mine = ours[name]
        assert list(mine) == list(device)
        assert mine["type"] == device["type"]
        if name != SECOND_LAMP:
            assert mine["serial_number"] == device["serial_number"]
        assert mine["valid"] in ("yes", "no")
        assert [v["name"] for v in mine["values"]] == [v["name"] for v in device["values"]]
        for got, expected in zip(mine["values"], device["values"], strict=True):
            assert list(got) == [*expected, "timestamp"], got
            assert (got["unit"], got["comment"]) == (expected["unit"], expected["comment"]), got
            assert type(got["value"]) is type(expected["value"]), (got, expected)


def test_status_reports_plc_state_and_ups(plc: Client) -> None:
    status = plc.status()
    by_name = devices(status)
    assert by_name["PLC"]["type"] == "plc"
    assert by_name["UPS"]["type"] == "power"
    state = values(status)
    assert state["PLC"] == {"Mode": "AUTO", "Bypass": 0, "NightAck": 0, "Intrusion": 0, "EmergencyStop": 0}
    assert state["UPS"] == {"Status": "ok"}
    for device in status["device"]:
        assert set(device) == {"name", "type", "serial_number", "valid", "values"}
        assert isinstance(device["serial_number"], str) and device["valid"] in ("yes", "no")
        for value in device["values"]:
            assert isinstance(value["unit"], str) and isinstance(value["comment"], str)
            assert TIMESTAMP_RE.match(value["timestamp"]), value


def test_redundant_sensors_agree(plc: Client) -> None:
    state = values(plc.status())
    wxt, vantage, drd = state["WXT520"], state["VantagePro"], state["DRD11"]
    assert wxt["RainRate"] == vantage["RainRate"] == 0.0 and drd["digital"] == 1  # three rain sensors, dry
    assert abs(wxt["WindSpeed"] - vantage["WindSpeed"]) < 1.5
    assert abs(wxt["OutsideHumidity"] - vantage["OutsideHumidity"]) < 3.0
    assert abs(wxt["OutsideTemp"] - vantage["OutsideTemp"]) < 1.0
    assert abs(wxt["Pressure"] - vantage["Pressure"]) < 2.0
    assert abs(state["MLX90614-1"]["SkyTemperature"] - state["MLX90614-2"]["SkyTemperature"]) < 2.0


def test_timestamps_advance_every_cycle(plc: Client) -> None:
    first = plc.status()
    (before,) = stamps(first, "WXT520")  # one scan: every value of a device shares its timestamp
    second = status_when(plc, lambda s: stamps(s, "WXT520") != {before}, "WXT520 timestamps to advance", 2.0)
    (after,) = stamps(second, "WXT520")
    assert datetime.fromisoformat(after) > datetime.fromisoformat(before)
    # A reading is never from the future, nor older than a few cycles.
    age = datetime.fromisoformat(second["date"]) - datetime.fromisoformat(after)
    assert -1.0 <= age.total_seconds() < 2.0


def test_values_look_alive(plc: Client) -> None:
    seen: dict[str, set[float]] = {"OutsideTemp": set(), "OutsideHumidity": set(), "WindSpeed": set()}
    sky: set[float] = set()
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        state = values(plc.status())
        for name, got in seen.items():
            got.add(state["WXT520"][name])
        sky.add(state["MLX90614-1"]["SkyTemperature"])
        time.sleep(TICK)
    for name, got in seen.items():
        assert len(got) > 1, f"WXT520 {name} never changed: {got}"
    assert len(sky) > 1, sky


def _without_times(status: dict[str, Any]) -> list[Any]:
    return [(d["name"], d["valid"], [(v["name"], v["value"]) for v in d["values"]]) for d in status["device"]]


def test_seed_makes_readings_reproducible(start_simulator: Callable[..., Simulator]) -> None:
    # A long tick: only the first cycle runs, so all three are compared at cycle 0.
    first = start_simulator("--seed", "42", tick=100.0).connect().status()
    again = start_simulator("--seed", "42", tick=100.0).connect().status()
    other = start_simulator("--seed", "43", tick=100.0).connect().status()
    assert _without_times(first) == _without_times(again)
    assert _without_times(first) != _without_times(other)


# -- injection, validity, freezing ------------------------------------------------


def test_inject_pins_one_sensor_and_null_releases_it(plc: Client) -> None:
    reply = plc.command("INJECT", device="WXT520", value_name="OutsideHumidity", value=97.5)
    assert reply == {
        "name": "INJECT",
        "result": "OK",
        "device": "WXT520",
        "value_name": "OutsideHumidity",
        "value": 97.5,
    }
    state = values(status_when(plc, lambda s: values(s)["WXT520"]["OutsideHumidity"] == 97.5, "injected humidity"))
    assert state["VantagePro"]["OutsideHumidity"] < 90.0  # only the WXT520 was touched
    plc.command("INJECT", device="WXT520", value_name="OutsideHumidity", value=None)
    assert wait_for(lambda: values(plc.status())["WXT520"]["OutsideHumidity"] < 90.0), "release had no effect"


def test_inject_weather_reaches_every_sensor(plc: Client) -> None:
    plc.command("INJECT", device="weather", value_name="rain_rate", value=5)

    state = values(status_when(plc, lambda s: values(s)["WXT520"]["RainRate"] == 5.0, "rain on the WXT520"))
    assert state["VantagePro"]["RainRate"] == 5.0
    assert state["DRD11"]["digital"] == 0 and state["DRD11"]["analog"] < 2.5
    plc.command("INJECT", device="weather", value_name="rain_rate", value=0)
    assert wait_for(lambda: values(plc.status())["DRD11"]["digital"] == 1)


def test_inject_drd11_rain_makes_sensors_disagree(plc: Client) -> None:
    plc.command("INJECT", device="DRD11", value_name="rain", value=1)
    state = values(status_when(plc, lambda s: values(s)["DRD11"]["digital"] == 0, "DRD11 to report rain"))
    assert state["DRD11"]["analog"] == 2.0
    assert state["WXT520"]["RainRate"] == 0.0  # the other rain sensors still dry
    plc.command("INJECT", device="DRD11", value_name="rain", value=None)
    assert wait_for(lambda: values(plc.status())["DRD11"]["digital"] == 1)


def test_inject_lamp_on_draws_current(plc: Client) -> None:
    plc.command("INJECT", device="LAMP_FLAT_CAGIRE", value_name="status", value="on")
    state = values(status_when(plc, lambda s: values(s)["LAMP_FLAT_CAGIRE"]["status"] == "on", "the lamp on"))
    assert state["LAMP_FLAT_CAGIRE"]["current"] > 0.2
    assert state[SECOND_LAMP] == {"status": "off", "current": 0.0}


@pytest.mark.parametrize(
    ("args", "words"),
    [
        ({"device": "NOPE", "value_name": "x", "value": 1}, ["'NOPE'", "WXT520", "weather"]),
        ({"device": "WXT520", "value_name": "Nope", "value": 1}, ["'Nope'", "OutsideTemp"]),
        ({"device": "WXT520", "value_name": "RainRate", "value": "lots"}, ["RainRate", "number"]),
        ({"device": "DRD11", "value_name": "digital", "value": 7}, ["digital", "0/1"]),
        ({"device": "LAMP_FLAT_CAGIRE", "value_name": "status", "value": "dim"}, ["on, off"]),
        ({"device": "PLC", "value_name": "Mode", "value": "OFF"}, ["SET_MODE"]),
        ({"device": "weather", "value_name": "snow", "value": 1}, ["'snow'", "rain_rate"]),
        ({"device": "weather", "value_name": "humidity", "value": "wet"}, ["humidity", "number"]),
        ({"device": "weather", "value_name": "humidity", "value": math.nan}, ["humidity", "number"]),
        ({"device": "WXT520", "value_name": "OutsideTemp", "value": math.inf}, ["OutsideTemp", "number"]),
        ({"device": "WXT520", "value_name": "RainRate"}, ["missing", "value"]),
        ({"device": "WXT520", "value_name": "RainRate", "value": 1, "vaule": 2}, ["unexpected", "vaule"]),
    ],
)
def test_inject_refusals_name_the_problem(plc: Client, args: dict[str, Any], words: list[str]) -> None:
    message = plc.refused("INJECT", **args)
    assert message.startswith("INJECT refused: "), message
    for word in words:
        assert word in message, message
    assert plc.status()["name"] == "STATUS"  # the connection is still fine


def test_set_valid(plc: Client) -> None:
    assert plc.command("SET_VALID", device="VantagePro", valid="no")["valid"] == "no"
    status = status_when(plc, lambda s: devices(s)["VantagePro"]["valid"] == "no", "VantagePro invalid")
    assert devices(status)["WXT520"]["valid"] == "yes"
    (before,) = stamps(status, "VantagePro")
    assert wait_for(lambda: stamps(plc.status(), "VantagePro") != {before}), "an invalid sensor still reports"
    plc.command("SET_VALID", device="VantagePro", valid=True)
    assert wait_for(lambda: devices(plc.status())["VantagePro"]["valid"] == "yes")
    assert "yes" in plc.refused("SET_VALID", device="VantagePro", valid="maybe")


def test_freeze_makes_a_sensor_stale(plc: Client) -> None:
    plc.command("FREEZE", device="WXT520", frozen=True)
    time.sleep(2 * TICK)  # the freeze applies from the next cycle
    frozen = plc.status()
    (stuck,) = stamps(frozen, "WXT520")
    (other,) = stamps(frozen, "VantagePro")
    assert wait_for(lambda: stamps(plc.status(), "VantagePro") != {other}), "VantagePro stopped too"
    later = plc.status()
    assert stamps(later, "WXT520") == {stuck}
    assert values(later)["WXT520"] == values(frozen)["WXT520"]
    assert devices(later)["WXT520"]["valid"] == "yes"  # stale, yet claims to be valid
    plc.command("FREEZE", device="WXT520", frozen=False)
    assert wait_for(lambda: stamps(plc.status(), "WXT520") != {stuck}), "WXT520 never thawed"


# -- PLC state: mode, alarms, UPS, night acknowledgement, bypass ----------------------


def _plc_value(plc: Client, device: str, name: str, expected: Any) -> bool:
    return bool(wait_for(lambda: values(plc.status())[device][name] == expected))


def test_mode_switch(plc: Client) -> None:
    for mode in ("MANU", "OFF", "auto"):
        assert plc.command("SET_MODE", value=mode)["value"] == mode.upper()
        assert _plc_value(plc, "PLC", "Mode", mode.upper()), mode
    assert "OFF, MANU, AUTO" in plc.refused("SET_MODE", value="REMOTE")


def test_alarms(plc: Client) -> None:
    plc.command("EMERGENCY_STOP")  # no value: pressed
    assert _plc_value(plc, "PLC", "EmergencyStop", 1)
    plc.command("EMERGENCY_STOP", value=False)
    assert _plc_value(plc, "PLC", "EmergencyStop", 0)
    plc.command("INTRUSION", value=True)
    assert _plc_value(plc, "PLC", "Intrusion", 1)
    plc.command("INTRUSION", value=0)
    assert _plc_value(plc, "PLC", "Intrusion", 0)
    assert "true/false" in plc.refused("EMERGENCY_STOP", value="yes please")


def test_ups_levels(plc: Client) -> None:
    for level in ("on_battery", "low_battery", "ok"):
        assert plc.command("UPS", value=level)["value"] == level
        assert _plc_value(plc, "UPS", "Status", level), level
    assert plc.command("UPS", value="on battery")["value"] == "on_battery"
    assert "ok, on_battery, low_battery" in plc.refused("UPS", value="flat")


def test_night_acknowledgement_and_bypass(plc: Client) -> None:
    plc.command("ACK_NIGHT")  # the button: no value
    assert _plc_value(plc, "PLC", "NightAck", 1)
    plc.command("ACK_NIGHT", value=False)  # what the PLC does after the end of the night
    assert _plc_value(plc, "PLC", "NightAck", 0)
    plc.command("SET_BYPASS", value=True)
    assert _plc_value(plc, "PLC", "Bypass", 1)
    plc.command("SET_BYPASS", value=False)
    assert _plc_value(plc, "PLC", "Bypass", 0)
    assert "missing" in plc.refused("SET_BYPASS")


# -- protocol robustness -----------------------------------------------------------------


def test_several_commands_in_one_request_see_the_same_cycle(plc: Client) -> None:
    first, status, last = plc.ask({"name": "SCENARIO"}, {"name": "STATUS"}, {"name": "scenario"})
    assert first == last and first["state"] == "idle"
    assert status["name"] == "STATUS"


def test_malformed_requests_are_answered_and_the_connection_kept(plc: Client) -> None:
    for line in ("{bad json", "[1, 2]", '{"command": "STATUS"}', '{"command": []}', '{"cmd": []}'):
        (reply,) = plc.ask_line(line)
        assert reply["name"] == "ERROR" and reply["command"] is None, (line, reply)
        assert "command" in reply["message"] or "JSON" in reply["message"], reply
    (reply,) = plc.ask_line('{"command": [42]}')
    assert reply["name"] == "ERROR" and '"name"' in reply["message"]
    plc.send_line("")  # blank lines are ignored: no reply for them
    assert plc.status()["name"] == "STATUS"


def test_unknown_command_is_named(plc: Client) -> None:
    (error, status) = plc.ask({"name": "OPEN_DOME"}, {"name": "STATUS"})
    assert error["name"] == "ERROR" and error["command"] == "OPEN_DOME"
    assert "OPEN_DOME" in error["message"] and "STATUS" in error["message"]
    assert status["name"] == "STATUS"  # one bad command does not spoil the others


def test_help_lists_commands_and_scenarios(plc: Client) -> None:
    reply = plc.command("HELP")
    assert {"STATUS", "INJECT", "SET_VALID", "SET_MODE", "SET_BYPASS", "ACK_NIGHT", "PLAY"} <= set(reply["commands"])
    assert "rain" in reply["shipped_scenarios"]


def test_sigterm_exits_cleanly(sim: Simulator) -> None:
    client = sim.connect()
    assert client.status()["name"] == "STATUS"
    sim.proc.send_signal(signal.SIGTERM)
    assert sim.proc.wait(timeout=10) == 0, sim.log()
    assert client.is_closed_by_peer()


# -- scenarios -------------------------------------------------------------------------------


def _close(expected: float, tolerance: float) -> Callable[[Any], bool]:
    return lambda got: abs(got - expected) <= tolerance


def _equal(expected: Any) -> Callable[[Any], bool]:
    return lambda got: got == expected


# What a weather event means for the sensors that read it: (device, value, check).
WEATHER_EFFECTS: dict[str, Callable[[float], list[tuple[str, str, Callable[[Any], bool]]]]] = {
    "rain_rate": lambda v: [
        ("WXT520", "RainRate", _equal(v)),
        ("VantagePro", "RainRate", _equal(v)),
        ("DRD11", "digital", _equal(0 if v > 0 else 1)),
    ],
    "humidity": lambda v: [
        ("WXT520", "OutsideHumidity", _close(v, 1.0)),
        ("VantagePro", "OutsideHumidity", _close(min(100.0, v + 1.2), 1.5)),
    ],
    "wind_speed": lambda v: [
        ("WXT520", "WindSpeed", _close(v, 0.6)),
        ("VantagePro", "WindSpeed", _close(0.96 * v, 0.8)),
    ],
    "cloud_cover": lambda v: [
        ("MLX90614-1", "SkyTemperature", _close(-20.0 + 26.0 * v, 0.6)),
        ("MLX90614-2", "SkyTemperature", _close(-20.0 + 26.0 * v + 0.4, 0.6)),
    ],
}
PLC_EFFECTS: dict[str, tuple[str, str, Callable[[Any], Any]]] = {
    "SET_MODE": ("PLC", "Mode", str.upper),
    "SET_BYPASS": ("PLC", "Bypass", int),
    "ACK_NIGHT": ("PLC", "NightAck", int),
    "EMERGENCY_STOP": ("PLC", "EmergencyStop", int),
    "INTRUSION": ("PLC", "Intrusion", int),
    "UPS": ("UPS", "Status", str),
}


@dataclass
class Expectation:
    """What STATUS must show once the events up to some time have played."""

    checks: dict[tuple[str, str], tuple[Callable[[Any], bool], str]]
    valid: dict[str, str]
    frozen: dict[str, bool]

    def apply(self, command: dict[str, Any]) -> None:
        name = command["name"]
        text = json.dumps(command)
        if name == "INJECT" and command["device"] == "weather":
            quantity, value = command["value_name"], command["value"]
            for device, value_name, _ in WEATHER_EFFECTS[quantity](0.0):
                self.checks.pop((device, value_name), None)
            if value is not None:
                for device, value_name, check in WEATHER_EFFECTS[quantity](value):
                    self.checks[(device, value_name)] = (check, text)
        elif name == "INJECT":
            key = (command["device"], command["value_name"])
            if command["value"] is None:
                self.checks.pop(key, None)
            else:
                self.checks[key] = (_equal(command["value"]), text)
        elif name == "SET_VALID":
            self.valid[command["device"]] = "yes" if command["valid"] in ("yes", True) else "no"
        elif name == "FREEZE":
            self.frozen[command["device"]] = command["frozen"]
        else:
            device, value_name, convert = PLC_EFFECTS[name]
            self.checks[(device, value_name)] = (_equal(convert(command["value"])), text)


def _expected_at(scenario: scenarios.Scenario, time_: int) -> Expectation:
    expectation = Expectation({}, {}, {})
    for event in scenario.events:
        if event.time <= time_:
            expectation.apply(event.command)
    return expectation


def _play_and_record(client: Client, timeout: float) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Poll SCENARIO and STATUS together until the scenario has finished."""
    samples = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        progress, status = client.ask({"name": "SCENARIO"}, {"name": "STATUS"})
        if progress["state"] == "playing":
            samples.append((progress, status))
        if progress["state"] == "finished":
            samples.append((progress, status))
            return samples
        time.sleep(0.002)
    raise AssertionError(f"scenario still not finished after {timeout} s")


SHIPPED = sorted(path.name for path in SCENARIO_DIR.iterdir() if path.suffix in (".yaml", ".json"))


def test_every_required_scenario_is_shipped() -> None:
    required = {
        "rain", "wind_gusts", "humidity_rising", "clouds", "sensor_invalid",
        "manu_mode", "emergency_stop", "ups_on_battery", "night_ack",
    }  # fmt: skip
    assert required <= {Path(name).stem for name in SHIPPED}


@pytest.mark.parametrize("file_name", SHIPPED)
def test_shipped_scenario_plays_as_written(start_simulator: Callable[..., Simulator], file_name: str) -> None:
    scenario = scenarios.load(str(SCENARIO_DIR / file_name))
    # Played once the client is connected and at a slower cycle, so that a loaded machine cannot make
    # the client miss a whole stretch of the scenario between two samples.
    client = start_simulator("--seed", "3", tick=SCENARIO_TICK).connect()
    client.command("PLAY", scenario=file_name.rsplit(".", 1)[0])
    samples = _play_and_record(client, timeout=scenario.duration * SCENARIO_TICK + 10.0)

    # Every stretch between two event times was seen at least once.
    times = sorted({event.time for event in scenario.events} | {float(scenario.duration)})
    seen = {progress["time"] for progress, _ in samples}
    for start, end in zip(times, times[1:], strict=False):
        assert any(start <= t < end for t in seen), f"{file_name}: nothing seen between t={start:g} and t={end:g}"

    previous: tuple[int, dict[str, Any]] | None = None
    for progress, status in samples:
        t = progress["time"]
        assert progress["scenario"] == Path(file_name).stem and progress["duration"] == scenario.duration
        expectation = _expected_at(scenario, t)
        state = values(status)
        for (device, value_name), (check, why) in expectation.checks.items():
            got = state[device][value_name]
            assert check(got), f"{file_name} t={t}: {device} {value_name} = {got!r}, expected after {why}"
        for device, valid in expectation.valid.items():
            assert devices(status)[device]["valid"] == valid, f"{file_name} t={t}: {device} valid"
        if previous is not None and previous[0] != t:
            # A later cycle: a device frozen since the previous sample kept its
            # timestamps; one not frozen now has new ones.
            for device, frozen in expectation.frozen.items():
                same = stamps(status, device) == stamps(previous[1], device)
                was_frozen = _expected_at(scenario, previous[0]).frozen.get(device, False)
                if frozen and was_frozen:
                    assert same, f"{file_name} t={t}: frozen {device} changed its timestamps"
                elif not frozen:
                    assert not same, f"{file_name} t={t}: {device} timestamps did not advance"
        previous = (t, status)


def test_seed_scenario_format_loads() -> None:
    scenario = scenarios.load("scenario_plc")
    assert scenario.duration == 10 and len(scenario.events) == 4
    assert scenario.events[0].command == {"name": "INJECT", "device": "WXT520", "value_name": "RainRate", "value": 12.0}


def test_scenario_loops(start_simulator: Callable[..., Simulator]) -> None:
    client = start_simulator("--scenario", "emergency_stop", "--loop", tick=0.02).connect()
    pressed: list[int] = []
    deadline = time.monotonic() + 3.0
    progress: dict[str, Any] = {}
    while time.monotonic() < deadline and (progress.get("passes", 0) < 2 or pressed.count(1) < 2):
        progress, status = client.ask({"name": "SCENARIO"}, {"name": "STATUS"})
        value = values(status)["PLC"]["EmergencyStop"]
        if not pressed or pressed[-1] != value:
            pressed.append(value)
        time.sleep(0.003)
    assert progress["loop"] is True and progress["state"] == "playing" and progress["passes"] >= 2, progress
    assert pressed.count(1) >= 2, f"the e-stop was not pressed on every pass: {pressed}"


def test_play_at_run_time_and_inject_while_playing(plc: Client, tmp_path: Path) -> None:
    reply = plc.command("PLAY", scenario="rain")
    assert reply["scenario"] == "rain" and reply["duration"] == 10 and reply["loop"] is False
    plc.command("UPS", value="on_battery")  # an injection while the scenario runs
    assert wait_for(lambda: values(plc.status())["WXT520"]["RainRate"] == 12.0, timeout=5.0), "no rain at t=3"
    assert values(plc.status())["UPS"]["Status"] == "on_battery"
    assert wait_for(lambda: plc.command("SCENARIO")["state"] == "finished", timeout=5.0)
    assert values(plc.status())["WXT520"]["RainRate"] == 0.0

    bad = tmp_path / "bad.yaml"
    bad.write_text("events:\n  - {time: 1, device: WXT999, valid: 'no'}\n")
    message = plc.refused("PLAY", scenario=str(bad))
    assert str(bad) in message and "WXT999" in message
    assert "not found" in plc.refused("PLAY", scenario="no_such_scenario")

    plc.command("PLAY", scenario="night_ack", loop=True)
    assert plc.command("SCENARIO")["scenario"] == "night_ack"
    plc.command("STOP_SCENARIO")
    assert plc.command("SCENARIO")["state"] == "idle"


def test_bad_scenario_file_stops_the_simulator(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("events:\n  - {time: 2, mode: OFF}\n")  # unquoted OFF: YAML reads false
    done = subprocess.run(
        [sys.executable, "-m", "simulators.plc.server", "--port", "0", "--scenario", str(bad)],
        cwd=ROOT, env=project_env(), capture_output=True, text=True, timeout=20,
    )  # fmt: skip
    assert done.returncode == 2, done
    assert "listening" not in done.stdout
    assert str(bad) in done.stderr and "quote" in done.stderr


@pytest.mark.parametrize(
    ("data", "words"),
    [
        ({"events": []}, ["no events"]),
        ({"events": [{"time": 5, "ups": "ok"}], "duration": 5}, ["time 5", "duration 5"]),
        ({"events": [{"time": -1, "ups": "ok"}]}, ["'time'"]),
        ({"events": [{"time": 1, "ups": "ok", "mode": "AUTO"}]}, ["exactly one action"]),
        ({"events": [{"time": 1, "device": "WXT520", "valid": "no", "frozen": True}]}, ["exactly one of"]),
        ({"events": [{"time": 1, "device": "WXT520", "value_name": "RainRate"}]}, ["value"]),
        ({"evnets": []}, ["evnets"]),
        ("rain", ["mapping"]),
    ],
)
def test_scenario_file_errors(data: Any, words: list[str]) -> None:
    with pytest.raises(ScenarioError) as raised:
        scenarios.parse(data, "test.yaml", "test")
    for word in words:
        assert word in str(raised.value), raised.value


def test_scenario_forms() -> None:
    bare = scenarios.parse([{"time": 2, "night_ack": True}], "bare", "bare")
    assert bare.duration == 3 and bare.events[0].command == {"name": "ACK_NIGHT", "value": True}
    seed = scenarios.parse(
        [4, {"time": 1, "plcSimulator": {"device_name": "DRD11", "value_name": "digital", "value": 0}}], "seed", "seed"
    )
    assert seed.duration == 4 and seed.events[0].command["device"] == "DRD11"
    ordered = scenarios.parse({"events": [{"time": 3, "ups": "ok"}, {"time": 1.5, "bypass": True}]}, "o", "o")
    assert [event.time for event in ordered.events] == [1.5, 3.0] and ordered.duration == 4
