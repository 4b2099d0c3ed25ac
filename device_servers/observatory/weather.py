"""Weather (``obs/weather/1``): is it safe to open? One verdict per quantity and IsSafe.

It owns no hardware: it subscribes to the Plc device's sensor attributes
(change events), and the rules file (``RulesFile``) says which sensors
measure what, in which priority, and when a value makes the site unsafe.
Each quantity is published as the seed's triple (``Rain``,
``RainInterpretation``, ``RainUnsafe``) plus ``RainSource``; ``IsSafe`` and
``UnsafeReasons`` sum it up and are what the conductor watches.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import tango
from tango import AttrQuality, DevState
from tango.server import attribute, device_property

from device_servers.common.device import DcsDevice, Poll
from device_servers.common.serve import serve
from device_servers.observatory.weather_rules import SensorReading, Synthesis, Verdict, load_rules

log = logging.getLogger(__name__)


class Weather(DcsDevice):
    """Weather synthesis over the PLC's redundant sensors."""

    Plc = device_property(dtype=str, default_value="obs/plc/1", doc="The PLC device whose sensors are read")
    RulesFile = device_property(dtype=str, default_value="weather_rules.yaml", doc="Weather rules (YAML)")
    EvaluatePeriod = device_property(dtype=float, default_value=1.0, doc="Re-evaluation period when nothing changes (s)")

    def init_device(self) -> None:
        self._sensors: dict[str, SensorReading] = {}
        self._lock = threading.Lock()
        self._subscriptions: list[tuple[tango.DeviceProxy, int]] = []
        self.synthesis: Synthesis | None = None
        for name in ("IsSafe", "UnsafeReasons", "Summary"):
            self.set_change_event(name, True, False)
            self.set_archive_event(name, True, False)
        super().init_device()

    def delete_device(self) -> None:
        for proxy, event_id in self._subscriptions:
            try:
                proxy.unsubscribe_event(event_id)
            except tango.DevFailed:
                pass
        super().delete_device()

    def create_link(self) -> None:
        self.synthesis = Synthesis(load_rules(self.RulesFile))
        self.publish("IsSafe", False)
        self.publish("UnsafeReasons", ["no evaluation yet"])
        self.add_poll(Poll("Summary", self.EvaluatePeriod, read=self._evaluate, empty=""))
        proxy = tango.DeviceProxy(self.Plc)
        for name in self.synthesis.source_attributes():
            # stateless: the PLC device (or the attribute, made when the PLC answers) may not exist yet.
            event_id = proxy.subscribe_event(
                name, tango.EventType.CHANGE_EVENT, lambda event, n=name: self._sensor_event(n, event), stateless=True
            )
            self._subscriptions.append((proxy, event_id))
        return None

    def create_dynamic_attributes(self) -> None:
        if self.synthesis is None:
            return
        for quantity, spec in self.synthesis.rules.quantities.items():
            title = quantity.title().replace("_", "")
            for suffix, kind, doc in (
                ("", float, f"{quantity} ({spec.unit}) from the first valid, fresh sensor"),
                ("Source", str, f"which sensor {quantity} comes from"),
                ("Interpretation", str, f"{quantity} in words"),
                ("Unsafe", bool, f"{quantity} makes the site unsafe"),
            ):
                name = f"{title}{suffix}"
                self.add_attribute(attribute(name=name, dtype=kind, fget=self.read_polled, unit=spec.unit if not suffix else "", doc=doc))
                self.set_change_event(name, True, False)
                self.set_archive_event(name, True, False)

    # ------------------------------------------------------------------ attributes
    @attribute(dtype=bool, doc="Safe to open: every quantity has a valid, fresh reading within its limits")
    def IsSafe(self) -> tuple[Any, float, Any]:
        return self.polled("IsSafe")

    @attribute(dtype=(str,), max_dim_x=64, doc="Why it is not safe, one line per quantity")
    def UnsafeReasons(self) -> tuple[Any, float, Any]:
        return self.polled("UnsafeReasons")

    @attribute(dtype=str, doc="Every quantity in one line")
    def Summary(self) -> tuple[Any, float, Any]:
        return self.polled("Summary")

    # ------------------------------------------------------------------ the work
    def _sensor_event(self, name: str, event: tango.EventData) -> None:
        if event.err:
            reading = SensorReading(float("nan"), time.time(), False)
        else:
            value = event.attr_value
            reading = SensorReading(
                float(value.value) if value.value is not None else float("nan"),
                value.time.totime(),
                value.quality != AttrQuality.ATTR_INVALID,
            )
        with self._lock:
            self._sensors[name] = reading
        self.poll_soon("Summary")  # judge at once: rain must not wait for the next period

    def _evaluate(self) -> str:
        assert self.synthesis is not None
        with self._lock:
            readings = dict(self._sensors)
        verdicts = self.synthesis.evaluate(readings, time.time())
        for quantity, verdict in verdicts.items():
            self._publish_verdict(quantity, verdict)
        reasons = [v.reason for v in verdicts.values() if v.unsafe]
        self.publish("UnsafeReasons", reasons)
        self.publish("IsSafe", not reasons)
        return "; ".join(
            f"{q} {v.value:g} ({v.interpretation}{', UNSAFE' if v.unsafe else ''})" for q, v in verdicts.items()
        )

    def _publish_verdict(self, quantity: str, verdict: Verdict) -> None:
        title = quantity.title().replace("_", "")
        invalid = verdict.source == ""
        self.publish(title, verdict.value, AttrQuality.ATTR_INVALID if invalid else AttrQuality.ATTR_VALID)
        self.publish(f"{title}Source", verdict.source)
        self.publish(f"{title}Interpretation", verdict.interpretation)
        self.publish(f"{title}Unsafe", verdict.unsafe)

    def refine_condition(self, state: DevState, status: str) -> tuple[DevState, str]:
        if state not in (DevState.ON, DevState.ALARM) or "IsSafe" not in self._readings:
            return state, status
        if self.polled("IsSafe")[0]:
            return DevState.ON, f"SAFE: {self.polled('Summary')[0]}"
        return DevState.ALARM, "UNSAFE: " + "; ".join(self.polled("UnsafeReasons")[0])


def main(args: list[str] | None = None) -> None:
    """Console script ``Weather <instance>``."""
    serve((Weather,), "Weather", args)


if __name__ == "__main__":
    main()
