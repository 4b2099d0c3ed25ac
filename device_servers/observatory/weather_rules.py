"""Weather synthesis: redundant sensors -> one value per quantity -> value, interpretation, decision.

The seed's idea, made precise: for each quantity (rain, wind, humidity,
clouds, ...) take the first of its sensors, in priority order, whose
reading is valid and fresh; interpret the value; and decide whether it
makes the site unsafe, with hysteresis (re-open only below a lower
threshold) and a hold-off (and only after that long). Missing, invalid or
stale data is unsafe. This module knows nothing of Tango; the Weather
device feeds it readings and publishes what it says.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from device_servers.common.yamlfile import load_yaml_model


class Source(BaseModel):
    """One sensor value (a Plc attribute), turned into the quantity's unit."""

    model_config = ConfigDict(extra="forbid")

    attribute: str
    map: dict[float, float] | None = Field(None, description="e.g. DRD11 digital {1: 0, 0: 1} (dry/rain)")
    scale: float = 1.0
    offset: float = 0.0

    def value(self, raw: float) -> float:
        if self.map is not None:
            if raw not in self.map:
                return math.nan
            return self.map[raw]
        return raw * self.scale + self.offset


class Quantity(BaseModel):
    """How one quantity is measured, read and judged."""

    model_config = ConfigDict(extra="forbid")

    sources: list[Source]
    unit: str = ""
    unsafe_above: float | None = None
    safe_below: float | None = Field(None, description="re-open at or below this (hysteresis); default unsafe_above")
    hold_off: float = Field(0.0, ge=0, description="s of good values before it counts as safe again")
    gust_limit: float | None = Field(None, description="a reading above this is a gust")
    gust_count: int = Field(3, ge=1)
    gust_window: float = Field(600.0, gt=0)
    stale_after: float | None = Field(None, gt=0, description="override of the file's stale_after")
    interpretation: list[tuple[float, str]] = Field(default_factory=list, description="[threshold, text] ascending")

    @model_validator(mode="after")
    def _consistent(self) -> Quantity:
        if not self.sources:
            raise ValueError("a quantity needs at least one source")
        if self.unsafe_above is not None and self.safe_below is not None and self.safe_below > self.unsafe_above:
            raise ValueError("safe_below must not exceed unsafe_above")
        thresholds = [t for t, _ in self.interpretation]
        if thresholds != sorted(thresholds):
            raise ValueError("interpretation thresholds must be ascending")
        return self

    def interpret(self, value: float) -> str:
        text = ""
        for threshold, words in self.interpretation:
            if value >= threshold:
                text = words
        return text


class WeatherRules(BaseModel):
    """A weather rules file."""

    model_config = ConfigDict(extra="forbid")

    stale_after: float = Field(120.0, gt=0, description="readings older than this (s) count as missing")
    quantities: dict[str, Quantity]


def load_rules(path: Path | str) -> WeatherRules:
    return load_yaml_model(path, WeatherRules)


@dataclass(frozen=True)
class SensorReading:
    value: float
    timestamp: float
    valid: bool


@dataclass(frozen=True)
class Verdict:
    """The seed's triple for one quantity, plus where it came from and why."""

    value: float
    source: str
    interpretation: str
    unsafe: bool
    reason: str


@dataclass
class _Memory:
    unsafe: bool = False
    last_bad: float = -math.inf
    gusts: deque[float] = field(default_factory=deque)
    above_gust: bool = False


class Synthesis:
    """Keeps the hysteresis and gust memory of every quantity between evaluations."""

    def __init__(self, rules: WeatherRules) -> None:
        self.rules = rules
        self._memory = {name: _Memory() for name in rules.quantities}

    def source_attributes(self) -> list[str]:
        return sorted({s.attribute for q in self.rules.quantities.values() for s in q.sources})

    def evaluate(self, readings: dict[str, SensorReading], now: float) -> dict[str, Verdict]:
        return {name: self._judge(name, q, readings, now) for name, q in self.rules.quantities.items()}

    def _judge(self, name: str, q: Quantity, readings: dict[str, SensorReading], now: float) -> Verdict:
        memory = self._memory[name]
        stale_after = q.stale_after or self.rules.stale_after
        problems = []
        chosen: tuple[str, float] | None = None
        for source in q.sources:
            reading = readings.get(source.attribute)
            if reading is None:
                problems.append(f"{source.attribute}: no data")
            elif not reading.valid:
                problems.append(f"{source.attribute}: invalid")
            elif now - reading.timestamp > stale_after:
                problems.append(f"{source.attribute}: {now - reading.timestamp:.0f} s old")
            elif math.isnan(value := source.value(reading.value)):
                problems.append(f"{source.attribute}: unusable value {reading.value!r}")
            else:
                chosen = (source.attribute, value)
                break
        if chosen is None:
            memory.unsafe, memory.last_bad = True, now
            return Verdict(math.nan, "", "unknown", True, f"{name}: no valid, fresh reading ({'; '.join(problems)})")
        source, value = chosen
        text = q.interpret(value)
        too_high = q.unsafe_above is not None and value > q.unsafe_above
        gusty = self._gusty(q, memory, value, now)
        if too_high or gusty:
            memory.unsafe, memory.last_bad = True, now
            why = f"{value:g} {q.unit} above {q.unsafe_above:g}" if too_high else f"{q.gust_count} gusts above {q.gust_limit:g} {q.unit}"
            return Verdict(value, source, text, True, f"{name}: {why}".replace("  ", " "))
        if memory.unsafe:
            reopen = q.safe_below if q.safe_below is not None else q.unsafe_above
            if reopen is not None and value > reopen:
                memory.last_bad = now
                return Verdict(value, source, text, True, f"{name}: {value:g} {q.unit} not yet down to {reopen:g}".replace("  ", " "))
            left = q.hold_off - (now - memory.last_bad)
            if left > 0:
                return Verdict(value, source, text, True, f"{name}: good again, hold-off {left:.0f} s left")
            memory.unsafe = False
        return Verdict(value, source, text, False, "")

    @staticmethod
    def _gusty(q: Quantity, memory: _Memory, value: float, now: float) -> bool:
        if q.gust_limit is None:
            return False
        above = value > q.gust_limit
        if above and not memory.above_gust:  # a gust is one excursion above the limit, however long
            memory.gusts.append(now)
        memory.above_gust = above
        while memory.gusts and now - memory.gusts[0] > q.gust_window:
            memory.gusts.popleft()
        return len(memory.gusts) >= q.gust_count
