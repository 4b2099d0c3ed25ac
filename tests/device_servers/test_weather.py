"""Weather synthesis: the rules alone, then the Weather device over a real PLC simulator."""

from __future__ import annotations

from pathlib import Path

import pytest
import tango
import yaml

from device_servers.common.yamlfile import ConfigFileError
from device_servers.observatory.weather_rules import SensorReading, Synthesis, WeatherRules, load_rules
from tests.conftest import ROOT, Facility, wait_for
from tests.device_servers.test_plc import PlcSimulator, plc_sim  # noqa: F401 - fixture

RULES = ROOT / "facilities" / "weather_rules.yaml"


def _ok(value: float, at: float = 0.0) -> SensorReading:
    return SensorReading(value, at, True)


def test_priority_fallback_and_missing_data() -> None:
    synthesis = Synthesis(load_rules(RULES))
    now = 1000.0
    readings = {"DRD11_digital": _ok(1, now), "WXT520_RainRate": _ok(0.0, now)}
    rain = synthesis.evaluate(readings, now)["rain"]
    assert (rain.source, rain.value, rain.unsafe, rain.interpretation) == ("DRD11_digital", 0.0, False, "no rain")
    readings["DRD11_digital"] = SensorReading(1, now, False)  # the primary turns invalid
    rain = synthesis.evaluate(readings, now)["rain"]
    assert rain.source == "WXT520_RainRate" and not rain.unsafe
    readings["WXT520_RainRate"] = _ok(0.0, now - 500)  # stale
    rain = synthesis.evaluate(readings, now)["rain"]
    assert rain.unsafe and "no valid, fresh reading" in rain.reason and "500 s old" in rain.reason


def test_hysteresis_and_hold_off() -> None:
    rules = WeatherRules.model_validate(
        {"quantities": {"humidity": {"sources": [{"attribute": "H"}], "unsafe_above": 95, "safe_below": 90, "hold_off": 60}}}
    )
    synthesis = Synthesis(rules)
    judge = lambda value, at: synthesis.evaluate({"H": _ok(value, at)}, at)["humidity"]  # noqa: E731
    assert not judge(80, 0).unsafe
    assert judge(96, 10).unsafe
    assert judge(93, 20).unsafe, "between the thresholds it stays unsafe"
    verdict = judge(85, 30)
    assert verdict.unsafe and "hold-off" in verdict.reason
    assert judge(85, 79).unsafe, "the hold-off counts from the last value above 90 (t=20)"
    assert not judge(85, 81).unsafe, "safe after 60 s of good values"


def test_gusts_are_counted_as_excursions() -> None:
    rules = WeatherRules.model_validate(
        {"quantities": {"wind": {"sources": [{"attribute": "W"}], "unsafe_above": 20, "gust_limit": 12, "gust_count": 3, "gust_window": 100}}}
    )
    synthesis = Synthesis(rules)
    verdicts = [synthesis.evaluate({"W": _ok(v, t)}, t)["wind"].unsafe for t, v in enumerate([5, 13, 14, 13, 5, 13, 5, 5, 13])]
    assert verdicts == [False, False, False, False, False, False, False, False, True]


def test_bad_rules_file(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("quantities:\n  rain:\n    sources: []\n")
    with pytest.raises(ConfigFileError, match="at least one source"):
        load_rules(path)


@pytest.fixture
def weather(facility_dir: Facility, plc_sim: PlcSimulator, tmp_path: Path) -> tango.DeviceProxy:  # noqa: F811
    rules = yaml.safe_load(RULES.read_text())
    rules["stale_after"] = 4
    for quantity in rules["quantities"].values():
        quantity["hold_off"] = 2
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules))
    facility_dir.write({"facility": "weather", "servers": {
        "Plc/test": {"devices": {"obs/plc/1": {"class": "Plc", "properties": {"Port": plc_sim.port, "PollPeriod": 0.2}}}},
        "Weather/test": {"level": 2, "devices": {"obs/weather/1": {"class": "Weather", "properties": {
            "Plc": facility_dir.name("obs/plc/1"), "RulesFile": str(tmp_path / "rules.yaml")}}}},
    }})  # fmt: skip
    facility_dir.dcs("up", str(facility_dir.file))
    dev = facility_dir.proxy("obs/weather/1")
    wait_for(lambda: dev.read_attribute("IsSafe").value, timeout=20, what="safe weather at the start")
    return dev


def test_rain_end_to_end_and_recovery(weather: tango.DeviceProxy, plc_sim: PlcSimulator) -> None:  # noqa: F811
    assert weather.read_attribute("RainSource").value == "DRD11_digital"
    assert weather.state() == tango.DevState.ON
    plc_sim.command("INJECT", device="weather", value_name="rain_rate", value=5.0)
    wait_for(lambda: not weather.read_attribute("IsSafe").value, timeout=5, what="unsafe on rain")
    assert weather.read_attribute("RainUnsafe").value is True
    assert any(r.startswith("rain:") for r in weather.read_attribute("UnsafeReasons").value)
    assert weather.state() == tango.DevState.ALARM
    plc_sim.command("INJECT", device="weather", value_name="rain_rate", value=0.0)
    try:
        wait_for(lambda: weather.read_attribute("IsSafe").value, timeout=15, what="safe again after the hold-off")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {weather.read_attribute('UnsafeReasons').value}") from None


def test_fallback_when_the_primary_sensor_turns_invalid(weather: tango.DeviceProxy, plc_sim: PlcSimulator) -> None:  # noqa: F811
    plc_sim.command("SET_VALID", device="DRD11", valid="no")
    wait_for(lambda: weather.read_attribute("RainSource").value == "WXT520_RainRate", what="fallback to WXT520")
    assert weather.read_attribute("IsSafe").value is True


def test_stale_data_is_unsafe(weather: tango.DeviceProxy, plc_sim: PlcSimulator) -> None:  # noqa: F811
    for sensor in ("WXT520", "VantagePro"):
        plc_sim.command("FREEZE", device=sensor, frozen=True)
    wait_for(lambda: not weather.read_attribute("IsSafe").value, timeout=15, what="unsafe on stale data")
    reasons = " ".join(weather.read_attribute("UnsafeReasons").value)
    assert "humidity: no valid, fresh reading" in reasons and "s old" in reasons
