"""Scenario files: timed events the PLC simulator plays, as in the seed's ``scenario_plc.json``.

Time is counted in PLC cycles: the simulator runs one cycle every ``--tick``
seconds (1 s by default, so time is then also seconds). At each cycle the
events whose ``time`` has come are applied, then every sensor is read, so
an event at time 3 shows in the STATUS reply of cycle 3 onwards.

A scenario file is YAML (JSON is YAML too)::

    description: Rain from t=3 to t=7 on every rain sensor.
    duration: 10          # cycles; --loop restarts after this (default: last time + 1)
    events:
      - {time: 3, device: weather, value_name: rain_rate, value: 12.0}
      - {time: 7, device: weather, value_name: rain_rate, value: 0.0}

Each event has a ``time`` (a number >= 0 and < duration), an optional
``comment``, and exactly one action, which is the protocol command it
stands for:

==========================================  ==============================
event                                       command
==========================================  ==============================
``device, value_name, value`` (null frees)  ``INJECT``
``device, valid: yes|no``                   ``SET_VALID``
``device, frozen: true|false``              ``FREEZE``
``mode: OFF|MANU|AUTO`` (quote OFF in YAML)  ``SET_MODE``
``emergency_stop: true|false``              ``EMERGENCY_STOP``
``intrusion: true|false``                   ``INTRUSION``
``ups: ok|on_battery|low_battery``          ``UPS``
``night_ack: true|false``                   ``ACK_NIGHT``
``bypass: true|false``                      ``SET_BYPASS``
==========================================  ==============================

A bare list of events is accepted too, and so is the seed's own format: a
list whose first item is the duration, then events
``{"time": 3, "plcSimulator": {"device_name": ..., "value_name": ..., "value": ...}}``.

A scenario changes the PLC's state and leaves it so: nothing is undone at
the end or when it loops, so a looping scenario should set at time 0
whatever it changes later.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

SCENARIO_DIR = Path(__file__).resolve().parent / "scenarios"
SUFFIXES = (".yaml", ".yml", ".json")

# Event key -> the command it stands for; the key's value becomes the command's "value".
PLC_EVENTS: dict[str, str] = {
    "mode": "SET_MODE",
    "emergency_stop": "EMERGENCY_STOP",
    "intrusion": "INTRUSION",
    "ups": "UPS",
    "night_ack": "ACK_NIGHT",
    "bypass": "SET_BYPASS",
}
DEVICE_EVENTS: dict[str, str] = {"value_name": "INJECT", "valid": "SET_VALID", "frozen": "FREEZE"}


class ScenarioError(Exception):
    """A scenario file that cannot be played; the message names the file and the event."""


@dataclass(frozen=True)
class Event:
    """At ``time`` (cycles), execute ``command`` (a protocol command object)."""

    time: float
    command: dict[str, Any]


@dataclass(frozen=True)
class Scenario:
    name: str
    source: str  # file path, or a description of where it came from
    description: str
    duration: int  # cycles
    events: tuple[Event, ...]


def resolve(name_or_path: str) -> Path:
    """A shipped scenario by name (``rain``, ``rain.yaml``) or any file by path."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path.resolve()
    for candidate in (SCENARIO_DIR / name_or_path, *(SCENARIO_DIR / (name_or_path + s) for s in SUFFIXES)):
        if candidate.is_file():
            return candidate
    shipped = ", ".join(shipped_names())
    raise ScenarioError(f"scenario {name_or_path!r} not found: no such file, nor a shipped scenario ({shipped})")


def shipped_names() -> list[str]:
    return sorted(path.stem for path in SCENARIO_DIR.iterdir() if path.suffix in SUFFIXES)


def load(name_or_path: str) -> Scenario:
    """Read and check the structure of a scenario file (device and value names are checked by the PLC)."""
    path = resolve(name_or_path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise ScenarioError(f"{path}: cannot read scenario: {error}") from None
    return parse(data, str(path), path.stem)


def parse(data: Any, source: str, name: str) -> Scenario:
    description = ""
    duration: Any = None
    if isinstance(data, dict):
        unknown = set(data) - {"description", "duration", "events"}
        if unknown:
            raise ScenarioError(f"{source}: unknown key(s) {sorted(unknown)} (expected description, duration, events)")
        description = str(data.get("description", ""))
        duration = data.get("duration")
        items = data.get("events")
    elif isinstance(data, list):
        items = data
        if items and isinstance(items[0], int | float) and not isinstance(items[0], bool):
            duration, items = items[0], items[1:]  # the seed's form: [duration, event, ...]
    else:
        raise ScenarioError(f"{source}: a scenario is a mapping with 'events', or a list of events")
    if not isinstance(items, list) or not items:
        raise ScenarioError(f"{source}: no events (give a non-empty list under 'events')")

    events = [_event(item, source, index) for index, item in enumerate(items)]
    last = max(event.time for event in events)
    if duration is None:
        duration = math.floor(last) + 1
    if isinstance(duration, bool) or not isinstance(duration, int) or duration < 1:
        raise ScenarioError(f"{source}: duration must be a whole number of cycles >= 1, got {duration!r}")
    if last >= duration:
        raise ScenarioError(f"{source}: an event at time {last} is not before the end (duration {duration})")
    events.sort(key=lambda event: event.time)  # stable: file order within a time
    return Scenario(name, source, description, duration, tuple(events))


def _event(item: Any, source: str, index: int) -> Event:
    where = f"{source}: event {index + 1}"
    if not isinstance(item, dict):
        raise ScenarioError(f"{where}: an event is a mapping with 'time', got {item!r}")
    item = dict(item)
    time = item.pop("time", None)
    item.pop("comment", None)
    if isinstance(time, bool) or not isinstance(time, int | float) or not time >= 0:
        raise ScenarioError(f"{where}: 'time' must be a number >= 0 (cycles), got {time!r}")
    try:
        return Event(float(time), _command(item))
    except ScenarioError as error:
        raise ScenarioError(f"{where} (time {time}): {error}") from None


def _command(item: dict[str, Any]) -> dict[str, Any]:
    if "plcSimulator" in item:  # the seed's form
        inner = item.pop("plcSimulator")
        if item or not isinstance(inner, dict) or set(inner) != {"device_name", "value_name", "value"}:
            raise ScenarioError("seed-style events are {time, plcSimulator: {device_name, value_name, value}}")
        return {
            "name": "INJECT",
            "device": inner["device_name"],
            "value_name": inner["value_name"],
            "value": inner["value"],
        }
    if "device" in item:
        actions = [key for key in DEVICE_EVENTS if key in item]
        if len(actions) != 1:
            raise ScenarioError(f"a device event needs exactly one of {', '.join(DEVICE_EVENTS)}; got {sorted(item)}")
        action = actions[0]
        expected = {"device", action} | ({"value"} if action == "value_name" else set())
        if set(item) != expected:
            raise ScenarioError(f"expected keys {sorted(expected)}, got {sorted(item)}")
        return {"name": DEVICE_EVENTS[action], **item}
    if len(item) != 1 or next(iter(item)) not in PLC_EVENTS:
        known = ", ".join(["device", *PLC_EVENTS])
        raise ScenarioError(f"an event needs exactly one action ({known}); got {sorted(item) or 'none'}")
    key, value = next(iter(item.items()))
    return {"name": PLC_EVENTS[key], "value": value}


class Player:
    """Plays a scenario one PLC cycle at a time."""

    def __init__(self, scenario: Scenario, loop: bool = False) -> None:
        self.scenario = scenario
        self.loop = loop
        self.time = -1  # scenario time of the last cycle played; -1 before the first
        self.passes = 0  # completed passes (grows when looping)
        self.finished = False
        self._next = 0  # index of the next event to apply

    def due(self) -> list[Event]:
        """Advance one cycle; return the events to apply in it."""
        if self.finished:
            return []
        time = self.time + 1
        if time >= self.scenario.duration:
            if not self.loop:
                self.finished = True
                self.passes += 1
                return []
            time, self._next = 0, 0
            self.passes += 1
        self.time = time
        events = []
        while self._next < len(self.scenario.events) and self.scenario.events[self._next].time <= time:
            events.append(self.scenario.events[self._next])
            self._next += 1
        return events

    def describe(self) -> dict[str, Any]:
        """What the SCENARIO command reports."""
        if self.finished:
            state = "finished"
        elif self.time < 0:
            state = "starting"
        else:
            state = "playing"
        return {
            "scenario": self.scenario.name,
            "file": self.scenario.source,
            "description": self.scenario.description,
            "state": state,
            "time": self.time,
            "duration": self.scenario.duration,
            "loop": self.loop,
            "passes": self.passes,
        }
