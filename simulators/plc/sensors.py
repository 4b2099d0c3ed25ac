"""The devices the PLC reports in its STATUS reply, declared like datasheets.

Each device lists its values (name, unit, comment) exactly as the seed's
sample STATUS reply spells them, including the sample's own spellings
("Celcius", dew point in "deg"), and says how it reads the site: weather
sensors read `Weather` with their own small offsets and noise, flat lamps
report their switch state, and the ``PLC`` and ``UPS`` entries report the
PLC's own state (mode, alarms, night acknowledgement, bypass, UPS level).

Quantities are measured redundantly, so a client can fall back:

==============  ==========================================================
quantity        devices (primary first)
==============  ==========================================================
rain            WXT520 RainRate, DRD11 digital/analog, VantagePro RainRate
wind            WXT520 WindSpeed/WindDir, VantagePro WindSpeed/WindDir
humidity        WXT520 OutsideHumidity, VantagePro OutsideHumidity
temperature     WXT520 OutsideTemp, VantagePro OutsideTemp
pressure        WXT520 Pressure, VantagePro Pressure
sky (clouds)    MLX90614-1 SkyTemperature, MLX90614-2 SkyTemperature
==============  ==========================================================
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from simulators.plc.weather import Weather

FLOAT = "float"
BOOL = "bool"  # reported as 0/1 with unit "bool", like the sample's DRD11 digital
STRING = "string"

MODES = ("OFF", "MANU", "AUTO")
UPS_LEVELS = ("ok", "on_battery", "low_battery")

DRD11_DRY_V = 3.0
DRD11_WET_V = 2.0
DRD11_THRESHOLD_V = 2.5
LAMP_CURRENT_A = 0.234


class BadValue(ValueError):
    """An injected value the device cannot take; the message says why."""


@dataclass(frozen=True)
class Value:
    """One value of a device: how STATUS names it and what it may hold."""

    name: str
    unit: str
    comment: str = ""
    kind: str = FLOAT
    decimals: int = 2
    choices: tuple[str, ...] = ()

    def coerce(self, value: Any) -> Any:
        """``value`` as this value reports it; raises BadValue if it does not fit."""
        if self.kind == FLOAT:
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise BadValue(f"{self.name} takes a number in {self.unit}, got {value!r}")
            return float(value)
        if self.kind == BOOL:
            if value in (0, 1) and not isinstance(value, float):
                return int(value)
            raise BadValue(f"{self.name} takes 0/1 or false/true, got {value!r}")
        if not isinstance(value, str) or (self.choices and value not in self.choices):
            allowed = ", ".join(self.choices) if self.choices else "a string"
            raise BadValue(f"{self.name} takes {allowed}, got {value!r}")
        return value


@dataclass
class PlcState:
    """What the PLC itself knows besides its sensors."""

    mode: str = "AUTO"  # key switch on the cabinet: OFF, MANU or AUTO
    bypass: bool = False  # set by the DCS: weather safety bypassed by the operator
    night_ack: bool = False  # the control-room button, pressed once at the start of the night
    intrusion: bool = False
    emergency_stop: bool = False
    ups: str = "ok"  # ok, on_battery, low_battery


@dataclass
class Site:
    """Everything a device can read."""

    weather: Weather
    plc: PlcState


class Reading:
    """One scan of one device: computed values, unless the value is pinned."""

    def __init__(self, values: tuple[Value, ...], pins: Mapping[str, Any], rng: random.Random) -> None:
        self._specs = {value.name: value for value in values}
        self._pins = pins
        self._rng = rng
        self.values: dict[str, Any] = {}

    def noise(self, sigma: float) -> float:
        return self._rng.gauss(0.0, sigma)

    def set(self, name: str, computed: Any) -> None:
        if name in self._pins:
            self.values[name] = self._pins[name]
        elif isinstance(computed, float):
            self.values[name] = round(computed, self._specs[name].decimals)
        else:
            self.values[name] = computed

    def __getitem__(self, name: str) -> Any:
        return self.values[name]


class Sensor:
    """A device in the STATUS reply: its datasheet and how it measures the site."""

    type = "meteo"
    values: tuple[Value, ...] = ()
    injectable = True  # False for the PLC's own state: use its commands instead
    # Names INJECT accepts besides the values, each standing for real values.
    pseudo_values: dict[str, str] = {}

    def __init__(self, name: str, serial_number: str) -> None:
        self.name = name
        self.serial_number = serial_number

    def value(self, name: str) -> Value:
        for value in self.values:
            if value.name == name:
                return value
        raise KeyError(name)

    def expand(self, value_name: str, value: Any) -> dict[str, Any]:
        """The real values an injection of ``value_name`` sets (None: release)."""
        return {value_name: None if value is None else self.value(value_name).coerce(value)}

    def measure(self, site: Site, reading: Reading) -> None:
        raise NotImplementedError


def dew_point(temperature: float, humidity: float) -> float:
    """Magnus formula, °C."""
    b, c = 17.62, 243.12
    gamma = math.log(max(humidity, 0.1) / 100.0) + b * temperature / (c + temperature)
    return c * gamma / (b - gamma)


def cardinal(direction: float) -> str:
    """Eight-point compass name of a direction in degrees (N=0, E=90)."""
    return ("N", "NE", "E", "SE", "S", "SW", "W", "NW")[int(((direction % 360.0) + 22.5) // 45.0) % 8]


OUTSIDE_TEMP = Value("OutsideTemp", "Celcius")
INSIDE_TEMP = Value("InsideTemp", "Celcius")
OUTSIDE_HUMIDITY = Value("OutsideHumidity", "percent", decimals=1)
INSIDE_HUMIDITY = Value("InsideHumidity", "percent", decimals=1)
PRESSURE = Value("Pressure", "mbar", "At site elevation", decimals=1)
RAIN_RATE = Value("RainRate", "mm/h", decimals=1)
WIND_SPEED = Value("WindSpeed", "m/s", decimals=1)
WIND_DIR = Value("WindDir", "deg", "(N=0, E=90)", decimals=1)
DEW_POINT = Value("DewPoint", "deg", decimals=1)


class Wxt520(Sensor):
    """Vaisala WXT520 all-in-one weather transmitter: the primary weather station."""

    values = (OUTSIDE_TEMP, OUTSIDE_HUMIDITY, PRESSURE, RAIN_RATE, WIND_SPEED, WIND_DIR, DEW_POINT)

    def measure(self, site: Site, r: Reading) -> None:
        w = site.weather
        r.set("OutsideTemp", w["temperature"] + r.noise(0.02))
        r.set("OutsideHumidity", min(100.0, max(0.0, w["humidity"] + r.noise(0.15))))
        r.set("Pressure", w["pressure"] + 0.2 + r.noise(0.05))
        r.set("RainRate", float(w["rain_rate"]))
        r.set("WindSpeed", max(0.0, w["wind_speed"] + r.noise(0.1)))
        r.set("WindDir", (w["wind_direction"] + r.noise(1.5)) % 360.0)
        r.set("DewPoint", dew_point(r["OutsideTemp"], r["OutsideHumidity"]))


class Drd11(Sensor):
    """Vaisala DRD11A rain detector: an analog level and a dry/wet contact.

    INJECT also accepts ``rain`` (1/true: raining, 0/false: dry, null:
    release), which sets the analog level and lets the contact follow.
    """

    values = (
        Value("analog", "V", "3V=Dry <2.5V=Rain", decimals=3),
        Value("digital", "bool", "1=Dry 0=Rain", kind=BOOL),
    )
    pseudo_values = {"rain": "1/true: raining, 0/false: dry (sets analog; digital follows)"}

    def expand(self, value_name: str, value: Any) -> dict[str, Any]:
        if value_name != "rain":
            return super().expand(value_name, value)
        if value is None:
            return {"analog": None}
        wet = Value("rain", "bool", kind=BOOL).coerce(value)
        return {"analog": DRD11_WET_V if wet else DRD11_DRY_V}

    def measure(self, site: Site, r: Reading) -> None:
        raining = site.weather["rain_rate"] > 0.0
        r.set("analog", (DRD11_WET_V if raining else DRD11_DRY_V) + r.noise(0.01))
        r.set("digital", 0 if r["analog"] < DRD11_THRESHOLD_V else 1)


class VantagePro(Sensor):
    """Davis Vantage Pro 2 station: the backup weather station, inside sensors too."""

    values = (
        OUTSIDE_TEMP,
        INSIDE_TEMP,
        OUTSIDE_HUMIDITY,
        INSIDE_HUMIDITY,
        PRESSURE,
        RAIN_RATE,
        WIND_SPEED,
        WIND_DIR,
        Value("WindDirCardinal", "string", kind=STRING, choices=("N", "NE", "E", "SE", "S", "SW", "W", "NW")),
        DEW_POINT,
    )

    def measure(self, site: Site, r: Reading) -> None:
        w = site.weather
        r.set("OutsideTemp", w["temperature"] + 0.3 + r.noise(0.05))
        r.set("InsideTemp", w["inside_temperature"] + r.noise(0.03))
        r.set("OutsideHumidity", min(100.0, max(0.0, w["humidity"] + 1.2 + r.noise(0.3))))
        r.set("InsideHumidity", min(100.0, max(0.0, w["inside_humidity"] + r.noise(0.2))))
        r.set("Pressure", w["pressure"] - 0.3 + r.noise(0.1))
        r.set("RainRate", float(w["rain_rate"]))
        r.set("WindSpeed", max(0.0, 0.96 * w["wind_speed"] + r.noise(0.15)))
        r.set("WindDir", (w["wind_direction"] + 4.0 + r.noise(3.0)) % 360.0)
        r.set("WindDirCardinal", cardinal(r["WindDir"]))
        r.set("DewPoint", dew_point(r["OutsideTemp"], r["OutsideHumidity"]))


SKY_CLEAR_C = -20.0  # sky temperature under a clear sky
SKY_OVERCAST_C = 6.0  # under full cloud cover


def sky_temperature(cloud_cover: float) -> float:
    """Sky temperature the infrared sensors see for a cloud cover of 0 (clear) to 1."""
    return SKY_CLEAR_C + (SKY_OVERCAST_C - SKY_CLEAR_C) * cloud_cover


class Mlx90614(Sensor):
    """Melexis MLX90614 infrared thermometer looking at the sky: the cloud sensor."""

    values = (
        Value("SensorTemperature", "Celcius"),
        Value("SkyTemperature", "Celcius", "Clear<-10 VeryCloudy>4"),
    )

    def __init__(self, name: str, serial_number: str, offset: float = 0.0) -> None:
        super().__init__(name, serial_number)
        self.offset = offset

    def measure(self, site: Site, r: Reading) -> None:
        w = site.weather
        r.set("SensorTemperature", w["temperature"] + 11.4 + r.noise(0.05))
        r.set("SkyTemperature", sky_temperature(w["cloud_cover"]) + self.offset + r.noise(0.1))


class FlatLamp(Sensor):
    """Flat-field lamp of a camera: off unless injected on; draws current when on."""

    type = "calib"
    values = (
        Value("status", "string", "on or off", kind=STRING, choices=("on", "off")),
        Value("current", "Ampere", decimals=3),
    )

    def measure(self, site: Site, r: Reading) -> None:
        r.set("status", "off")
        r.set("current", LAMP_CURRENT_A + r.noise(0.001) if r["status"] == "on" else 0.0)


class PlcCabinet(Sensor):
    """The PLC's own state: mode switch, alarms, night acknowledgement, bypass."""

    type = "plc"
    injectable = False
    values = (
        Value("Mode", "string", "OFF, MANU or AUTO (key switch on the cabinet)", kind=STRING, choices=MODES),
        Value("Bypass", "bool", "1=weather safety bypassed by the operator", kind=BOOL),
        Value("NightAck", "bool", "1=night acknowledged with the control-room button", kind=BOOL),
        Value("Intrusion", "bool", "1=intrusion alarm", kind=BOOL),
        Value("EmergencyStop", "bool", "1=emergency stop pressed", kind=BOOL),
    )

    def measure(self, site: Site, r: Reading) -> None:
        plc = site.plc
        r.set("Mode", plc.mode)
        r.set("Bypass", int(plc.bypass))
        r.set("NightAck", int(plc.night_ack))
        r.set("Intrusion", int(plc.intrusion))
        r.set("EmergencyStop", int(plc.emergency_stop))


class Ups(Sensor):
    """The uninterruptible power supply (onduleur) as the PLC sees it."""

    type = "power"
    injectable = False
    values = (
        Value(
            "Status",
            "string",
            "ok, on_battery or low_battery (protection)",
            kind=STRING,
            choices=UPS_LEVELS,
        ),
    )

    def measure(self, site: Site, r: Reading) -> None:
        r.set("Status", site.plc.ups)


def standard_sensors() -> list[Sensor]:
    """The devices of the seed's sample, in its order, plus our additions at the end."""
    return [
        Wxt520("WXT520", "14656423"),
        Drd11("DRD11", "RET6789"),
        VantagePro("VantagePro", "ERTRY2344324"),
        Mlx90614("MLX90614-1", "Unknown"),
        FlatLamp("LAMP_FLAT_CAGIRE", "REF_3434"),
        FlatLamp("LAMP_FLAT_DDRAGO", "REF_3435"),
        Mlx90614("MLX90614-2", "Unknown", offset=0.4),
        PlcCabinet("PLC", "SIM-PLC-0001"),
        Ups("UPS", "SIM-UPS-0001"),
    ]


@dataclass
class Device:
    """A sensor as the PLC holds it: validity, freezing, pinned values, last reading."""

    sensor: Sensor
    valid: bool = True
    frozen: bool = False  # stuck: values and timestamps stop updating, valid or not
    pins: dict[str, Any] = field(default_factory=dict)
    reading: list[dict[str, Any]] = field(default_factory=list)
    reported_valid: bool = True  # validity as of the last scan, which STATUS shows

    @property
    def name(self) -> str:
        return self.sensor.name

    def scan(self, site: Site, rng: random.Random, timestamp: str) -> None:
        """Read the device once; a frozen device is read (same random draws) but keeps its old reading.

        The validity flag is the PLC's own verdict, so it still updates on a
        frozen device: a stuck sensor that claims to be valid is the case a
        client must catch by the age of the timestamps.
        """
        reading = Reading(self.sensor.values, self.pins, rng)
        self.sensor.measure(site, reading)
        self.reported_valid = self.valid
        if self.frozen and self.reading:
            return
        self.reading = [
            {
                "name": value.name,
                "value": reading[value.name],
                "unit": value.unit,
                "comment": value.comment,
                "timestamp": timestamp,
            }
            for value in self.sensor.values
        ]

    def report(self) -> dict[str, Any]:
        """The device's entry in the STATUS ``device`` list."""
        return {
            "name": self.sensor.name,
            "type": self.sensor.type,
            "serial_number": self.sensor.serial_number,
            "valid": "yes" if self.reported_valid else "no",
            "values": [dict(value) for value in self.reading],
        }
