"""Plc: the observatory's weather and site PLC, over its JSON-over-TCP protocol.

Every sensor value of the PLC's STATUS becomes an attribute named
``<Sensor>_<Value>`` (``WXT520_RainRate``, ``MLX90614_1_SkyTemperature``)
carrying the PLC's own timestamp for that value, and INVALID quality while
the PLC marks the sensor invalid. They are made when the PLC first
describes its sensors, so a PLC with other sensors needs no code change.
The PLC's mode, alarms, UPS level, night acknowledgement and bypass are
attributes of their own.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import threading
from typing import Any

from tango import AttrQuality, AttrWriteType, DevState
from tango.server import attribute, command, device_property

from device_servers.common.device import DcsDevice, Poll, Reading, ReplyError
from device_servers.common.link import TcpLineLink
from device_servers.common.serve import serve

log = logging.getLogger(__name__)

SITE_VALUES = {  # the PLC's own entries: (sensor, value) -> attribute
    ("PLC", "Mode"): "Mode",
    ("PLC", "Bypass"): "Bypass",
    ("PLC", "NightAck"): "NightAck",
    ("PLC", "Intrusion"): "Intrusion",
    ("PLC", "EmergencyStop"): "EmergencyStop",
    ("UPS", "Status"): "UpsStatus",
}


class PlcLink(TcpLineLink):
    """The PLC's protocol: one JSON request per line, one JSON list in reply."""

    def request(self, name: str, **arguments: Any) -> dict[str, Any]:
        reply = self.query(json.dumps({"command": [{"name": name, **arguments}]}))
        try:
            answers = json.loads(reply)
        except ValueError as exc:
            raise ReplyError(f"{self.address}: not JSON: {reply[:80]!r}") from exc
        if not isinstance(answers, list) or not answers or not isinstance(answers[0], dict):
            raise ReplyError(f"{self.address}: unexpected reply {reply[:80]!r}")
        answer = answers[0]
        if answer.get("name") == "ERROR":
            raise ReplyError(f"{self.address}: {name} refused: {answer.get('message')}")
        return answer


def attribute_name(sensor: str, value: str) -> str:
    """``MLX90614-1`` + ``SkyTemperature`` -> ``MLX90614_1_SkyTemperature`` (a valid Tango name)."""
    return re.sub(r"\W", "_", f"{sensor}_{value}")


def _timestamp(text: str | None, fallback: float) -> float:
    if not text:
        return fallback
    try:
        return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp()
    except ValueError:
        return fallback


class Plc(DcsDevice):
    """The weather and site PLC."""

    Host = device_property(dtype=str, default_value="127.0.0.1")
    Port = device_property(dtype=int, default_value=5003)
    PollPeriod = device_property(dtype=float, default_value=1.0, doc="How often STATUS is asked (s)")

    def init_device(self) -> None:
        self._sensor_attributes: dict[str, dict[str, Any]] = {}  # attribute -> {sensor, value, type}
        self._status: dict[str, Any] | None = None
        self._attr_lock = threading.Lock()
        for name in (*SITE_VALUES.values(), "PlcDate", "Sensors"):
            self.set_change_event(name, True, False)
            self.set_archive_event(name, True, False)
        super().init_device()

    def create_link(self) -> PlcLink:
        self.add_poll(Poll("PlcDate", self.PollPeriod, read=self._poll_status, empty=""))
        return PlcLink(self.Host, self.Port, timeout=2.0)

    # ------------------------------------------------------------------ attributes
    @attribute(dtype=str, doc="The PLC's clock at its last STATUS (UTC)")
    def PlcDate(self) -> tuple[Any, float, Any]:
        return self.polled("PlcDate")

    @attribute(dtype=str, doc="OFF, MANU or AUTO (the key switch on the cabinet)")
    def Mode(self) -> tuple[Any, float, Any]:
        return self.polled("Mode")

    @attribute(dtype=bool, doc="Weather safety bypassed (SetBypass)")
    def Bypass(self) -> tuple[Any, float, Any]:
        return self.polled("Bypass")

    @attribute(dtype=bool, doc="Night acknowledged with the control-room button")
    def NightAck(self) -> tuple[Any, float, Any]:
        return self.polled("NightAck")

    @attribute(dtype=bool, doc="Intrusion alarm")
    def Intrusion(self) -> tuple[Any, float, Any]:
        return self.polled("Intrusion")

    @attribute(dtype=bool, doc="Emergency stop pressed")
    def EmergencyStop(self) -> tuple[Any, float, Any]:
        return self.polled("EmergencyStop")

    @attribute(dtype=str, doc="ok, on_battery or low_battery")
    def UpsStatus(self) -> tuple[Any, float, Any]:
        return self.polled("UpsStatus")

    @attribute(dtype=(str,), max_dim_x=512, doc="Every sensor value as its attribute name, unit and validity")
    def Sensors(self) -> tuple[Any, float, Any]:
        return self.polled("Sensors")

    @command(dtype_in=bool, doc_in="True: bypass the PLC's weather safety; False: end the bypass")
    def SetBypass(self, value: bool) -> None:
        self.hardware_call("SetBypass", lambda: self._plc().request("SET_BYPASS", value=value))
        self.poll_soon("PlcDate")

    # ------------------------------------------------------------------ the work
    def _plc(self) -> PlcLink:
        assert isinstance(self.link, PlcLink)
        return self.link

    def _poll_status(self) -> str:
        status = self._plc().request("STATUS")
        now = dt.datetime.now(dt.UTC).timestamp()
        listed = []
        for sensor in status.get("device", []):
            valid = str(sensor.get("valid", "no")).lower() == "yes"
            for value in sensor.get("values", []):
                key = (sensor.get("name", "?"), value.get("name", "?"))
                stamp = _timestamp(value.get("timestamp"), now)
                if key in SITE_VALUES:
                    name = SITE_VALUES[key]
                    raw = value.get("value")
                    shown = bool(int(raw)) if name not in ("Mode", "UpsStatus") else str(raw)
                    self.publish(name, shown, AttrQuality.ATTR_VALID if valid else AttrQuality.ATTR_INVALID)
                    continue
                name = attribute_name(*key)
                self._ensure_attribute(name, key, value)
                info = self._sensor_attributes[name]
                quality = AttrQuality.ATTR_VALID if valid else AttrQuality.ATTR_INVALID
                converted = _convert(value.get("value"), info["type"])
                self._publish_at(name, converted, stamp, quality)
                listed.append(f"{name} [{value.get('unit', '')}] {'valid' if valid else 'INVALID'}")
        self.publish("Sensors", sorted(listed))
        return str(status.get("date", ""))

    def _ensure_attribute(self, name: str, key: tuple[str, str], value: dict[str, Any]) -> None:
        if name in self._sensor_attributes:
            return
        with self._attr_lock:
            kind = str if isinstance(value.get("value"), str) else float
            self.add_attribute(
                attribute(
                    name=name, dtype=kind, fget=self.read_polled, access=AttrWriteType.READ,
                    unit=str(value.get("unit", "")), doc=f"{key[0]} {key[1]}: {value.get('comment', '')}".strip(),
                    **({"abs_change": "1e-9", "archive_abs_change": "1e-9"} if kind is float else {}),
                )
            )  # fmt: skip
            # Change events go out at every PLC cycle, unfiltered: a fresh timestamp on an unchanged value is
            # how the weather synthesis knows the sensor is alive. Archive events keep Tango's filter.
            self.set_change_event(name, True, False)
            self.set_archive_event(name, True, True)
            self._sensor_attributes[name] = {"sensor": key[0], "value": key[1], "type": kind}

    def _publish_at(self, name: str, value: Any, stamp: float, quality: AttrQuality) -> None:
        """A sensor value with the PLC's own timestamp for it."""
        previous = self._readings.get(name)
        self._readings[name] = Reading(value, stamp, quality)
        if previous is not None and previous.timestamp == stamp and previous.quality == quality:
            return
        self.push_change_event(name, value, stamp, quality)
        self.push_archive_event(name, value, stamp, quality)

    def on_disconnected(self, reason: str) -> None:
        for name in self._sensor_attributes:
            reading = self._readings.get(name)
            if reading is not None and reading.quality != AttrQuality.ATTR_INVALID:
                self._publish_at(name, reading.value, reading.timestamp, AttrQuality.ATTR_INVALID)

    def refine_condition(self, state: DevState, status: str) -> tuple[DevState, str]:
        if state != DevState.ON:
            return state, status
        mode = self.polled("Mode")[0] if "Mode" in self._readings else "?"
        alarms = [n for n in ("EmergencyStop", "Intrusion") if n in self._readings and self.polled(n)[0]]
        ups = self.polled("UpsStatus")[0] if "UpsStatus" in self._readings else "?"
        text = f"PLC at {self.Host}:{self.Port}: mode {mode}, UPS {ups}, {len(self._sensor_attributes)} sensor values"
        if alarms:
            return DevState.ALARM, f"{text}; ALARM: {', '.join(alarms)}"
        return DevState.ON, text


def _convert(raw: Any, kind: type) -> Any:
    if kind is str:
        return "" if raw is None else str(raw)
    try:
        return float(raw)
    except (TypeError, ValueError):
        return float("nan")


def main(args: list[str] | None = None) -> None:
    """Console script ``Plc <instance>``."""
    serve((Plc,), "Plc", args)


if __name__ == "__main__":
    main()
