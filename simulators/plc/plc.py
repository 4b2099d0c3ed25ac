"""The simulated weather and site PLC: its state, its cycle and its JSON protocol.

`Plc.handle` takes one request line and returns one reply line; the server
around it only moves lines. `Plc.cycle` is one PLC cycle: the weather moves
on, due scenario events apply, and every device is read and time-stamped.
Commands change the PLC's state at once, but STATUS shows the change from
the next cycle on, as a real PLC would (at most one ``--tick`` later).
The protocol itself is described in the package docstring (``simulators.plc``).
"""

from __future__ import annotations

import json
import logging
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from simulators.plc import scenario as scenarios
from simulators.plc.scenario import Player, Scenario, ScenarioError
from simulators.plc.sensors import MODES, UPS_LEVELS, BadValue, Device, PlcState, Site, standard_sensors
from simulators.plc.weather import QUANTITIES, QUANTITY_NAMES, WEATHER_DEVICE, Weather

log = logging.getLogger("simulators.plc")
# The scratch PLC that checks a scenario before it plays must not log its
# rehearsal as if it were happening.
_rehearsal_log = logging.getLogger("simulators.plc.rehearsal")
_rehearsal_log.addHandler(logging.NullHandler())
_rehearsal_log.propagate = False

FROM = "Beckhoff"
VERSION_FIRMWARE = "20170809"
SITE = "OSM-Mexico"
EXAMPLE = '{"command": [{"name": "STATUS"}]}'


class CommandError(Exception):
    """A command the PLC refuses; becomes an ERROR object naming the command."""


@dataclass(frozen=True)
class Command:
    """A protocol command: the keys it takes and what it does."""

    run: Callable[[dict[str, Any]], dict[str, Any]]
    required: tuple[str, ...]
    optional: tuple[str, ...]
    doc: str


def utc_now() -> datetime:
    return datetime.now(UTC)


def timestamp(moment: datetime, precise: bool = True) -> str:
    """UTC as the seed's sample writes ``date`` (no zone), with milliseconds when ``precise``."""
    naive = moment.astimezone(UTC).replace(tzinfo=None)
    return naive.isoformat(timespec="milliseconds" if precise else "seconds")


def error(command: str | None, message: str) -> dict[str, Any]:
    return {"name": "ERROR", "command": command, "message": message}


class Plc:
    """The whole PLC: sensors, site weather, PLC state and the scenario being played."""

    def __init__(
        self,
        rng: random.Random | None = None,
        tick: float = 1.0,
        clock: Callable[[], datetime] = utc_now,
        logger: logging.Logger = log,
    ) -> None:
        self.log = logger
        self.rng = rng if rng is not None else random.Random()
        self.tick = tick
        self._clock = clock
        self.weather = Weather(self.rng)
        self.state = PlcState()
        self.site = Site(self.weather, self.state)
        self.devices = {sensor.name: Device(sensor) for sensor in standard_sensors()}
        self.cycles = 0
        self.player: Player | None = None
        self._commands: dict[str, Command] = {
            "STATUS": Command(self._status, (), (), "the STATUS reply (sensors, PLC state, UPS)"),
            "INJECT": Command(
                self._inject,
                ("device", "value_name", "value"),
                (),
                "pin a device value (or a 'weather' quantity) at 'value'; null releases it",
            ),
            "SET_VALID": Command(self._set_valid, ("device", "valid"), (), "mark a device valid 'yes' or 'no'"),
            "FREEZE": Command(
                self._freeze, ("device", "frozen"), (), "frozen true: the device's values and timestamps stop updating"
            ),
            "SET_MODE": Command(self._set_mode, ("value",), (), "turn the mode key switch: OFF, MANU or AUTO"),
            "SET_BYPASS": Command(
                self._set_bypass, ("value",), (), "operator bypass of the weather safety: true/false"
            ),
            "ACK_NIGHT": Command(
                self._ack_night, (), ("value",), "press the night acknowledgement button (value false: end of night)"
            ),
            "EMERGENCY_STOP": Command(self._emergency_stop, (), ("value",), "press (true) or reset (false) the e-stop"),
            "INTRUSION": Command(self._intrusion, (), ("value",), "raise (true) or clear (false) the intrusion alarm"),
            "UPS": Command(self._ups, ("value",), (), "UPS level: ok, on_battery or low_battery"),
            "PLAY": Command(self._play, ("scenario",), ("loop",), "play a scenario file (shipped name or path)"),
            "STOP_SCENARIO": Command(self._stop_scenario, (), (), "stop the scenario being played (state stays)"),
            "SCENARIO": Command(self._scenario, (), (), "which scenario plays and its time (cycles)"),
            "HELP": Command(self._help, (), (), "this list"),
        }

    # -- the PLC cycle -----------------------------------------------------

    def cycle(self) -> None:
        """One PLC cycle: weather moves on by one tick, due events apply, devices are read."""
        if self.cycles > 0:
            self.weather.advance(self.tick)
        if self.player is not None:
            name = self.player.scenario.name
            for event in self.player.due():
                self.log.info("scenario %s t=%g: %s", name, event.time, json.dumps(event.command))
                reply = self.execute(event.command)
                if reply["name"] == "ERROR":  # checked at load time, so this is a bug
                    self.log.error("scenario %s t=%g: %s", name, event.time, reply["message"])
        now = timestamp(self._clock())
        for device in self.devices.values():
            device.scan(self.site, self.rng, now)
        self.cycles += 1

    # -- scenarios -----------------------------------------------------------

    def load_scenario(self, name_or_path: str) -> Scenario:
        """Load a scenario and check every event on a scratch PLC; raises ScenarioError."""
        scenario = scenarios.load(name_or_path)
        scratch = Plc(random.Random(0), self.tick, logger=_rehearsal_log)
        for event in scenario.events:
            reply = scratch.execute(event.command)
            if reply["name"] == "ERROR":
                raise ScenarioError(f"{scenario.source}: event at time {event.time:g}: {reply['message']}")
        return scenario

    def play(self, scenario: Scenario, loop: bool = False) -> None:
        """Play ``scenario`` from the next cycle on, replacing any scenario being played."""
        self.player = Player(scenario, loop)
        self.log.info(
            "playing scenario %s (%d events over %d cycles of %g s%s)",
            scenario.name,
            len(scenario.events),
            scenario.duration,
            self.tick,
            ", looping" if loop else "",
        )

    # -- protocol --------------------------------------------------------------

    def handle(self, line: str) -> str | None:
        """Answer one request line with one reply line; None for a blank line."""
        if not line.strip():
            return None
        return json.dumps(self.request(line))

    def request(self, line: str) -> list[dict[str, Any]]:
        try:
            request = json.loads(line)
        except json.JSONDecodeError as problem:
            return [error(None, f"malformed JSON ({problem}); send one JSON object per line, e.g. {EXAMPLE}")]
        if not isinstance(request, dict) or set(request) != {"command"} or not isinstance(request["command"], list):
            return [
                error(None, f'a request is {{"command": [<command>, ...]}}, e.g. {EXAMPLE}; got {line.strip()[:200]}')
            ]
        if not request["command"]:
            return [error(None, 'empty "command" list: nothing to do')]
        return [self.execute(command) for command in request["command"]]

    def execute(self, command: Any) -> dict[str, Any]:
        """Run one command object; return its reply object (an ERROR object if refused)."""
        if not isinstance(command, dict) or not isinstance(command.get("name"), str):
            return error(None, f'a command is an object with a "name", e.g. {{"name": "STATUS"}}; got {command!r}')
        name = command["name"].upper()
        spec = self._commands.get(name)
        if spec is None:
            known = ", ".join(self._commands)
            return error(command["name"], f"unknown command {command['name']!r} (known: {known})")
        args = {key: value for key, value in command.items() if key != "name"}
        missing = [key for key in spec.required if key not in args]
        extra = sorted(set(args) - set(spec.required) - set(spec.optional))
        if missing or extra:
            takes = ", ".join(spec.required + tuple(f"[{key}]" for key in spec.optional)) or "no arguments"
            problem = f"missing {missing}" if missing else f"unexpected {extra}"
            return error(name, f"{name} refused: {problem} ({name} takes {takes})")
        try:
            return spec.run(args)
        except CommandError as refused:
            return error(name, f"{name} refused: {refused}")

    # -- argument checks -----------------------------------------------------

    @staticmethod
    def _flag(value: Any, key: str = "value") -> bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise CommandError(f"{key!r} must be true/false (or 1/0), got {value!r}")

    def _device(self, name: Any) -> Device:
        device = self.devices.get(name) if isinstance(name, str) else None
        if device is None:
            known = ", ".join([*self.devices, WEATHER_DEVICE])
            raise CommandError(f"unknown device {name!r} (known: {known})")
        return device

    @staticmethod
    def _ok(name: str, **fields: Any) -> dict[str, Any]:
        return {"name": name, "result": "OK", **fields}

    # -- commands ----------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The STATUS object, in the seed's sample format."""
        return {
            "name": "STATUS",
            "from": FROM,
            "version_firmware": VERSION_FIRMWARE,
            "site": SITE,
            "date": timestamp(self._clock(), precise=False),
            "device": [device.report() for device in self.devices.values()],
        }

    def _status(self, args: dict[str, Any]) -> dict[str, Any]:
        return self.status()

    def _inject(self, args: dict[str, Any]) -> dict[str, Any]:
        device_name, value_name, value = args["device"], args["value_name"], args["value"]
        if device_name == WEATHER_DEVICE:
            self._inject_weather(value_name, value)
        else:
            device = self._device(device_name)
            sensor = device.sensor
            if not sensor.injectable:
                raise CommandError(
                    f"{device_name} reports the PLC's own state; change it with SET_MODE, SET_BYPASS, "
                    "ACK_NIGHT, EMERGENCY_STOP, INTRUSION or UPS"
                )
            names = [v.name for v in sensor.values] + list(sensor.pseudo_values)
            if value_name not in names:
                raise CommandError(f"{device_name} has no value {value_name!r} (values: {', '.join(names)})")
            try:
                pins = sensor.expand(value_name, value)
            except BadValue as bad:
                raise CommandError(f"{device_name}: {bad}") from None
            for name, pinned in pins.items():
                if pinned is None:
                    device.pins.pop(name, None)
                else:
                    device.pins[name] = pinned
            value = pins.get(value_name, value)
        self.log.info("inject %s %s = %r", device_name, value_name, value)
        return self._ok("INJECT", device=device_name, value_name=value_name, value=value)

    def _inject_weather(self, name: Any, value: Any) -> None:
        if name not in QUANTITY_NAMES:
            described = ", ".join(f"{q.name} ({q.unit})" for q in QUANTITIES)
            raise CommandError(f"weather has no quantity {name!r} (quantities: {described})")
        if value is None:
            self.weather.release(name)
            return
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise CommandError(f"weather {name} takes a number, got {value!r}")
        self.weather.hold(name, float(value))

    def _set_valid(self, args: dict[str, Any]) -> dict[str, Any]:
        device = self._device(args["device"])
        valid = args["valid"]
        if isinstance(valid, str) and valid.lower() in ("yes", "no"):
            device.valid = valid.lower() == "yes"
        else:
            try:
                device.valid = self._flag(valid, "valid")
            except CommandError:
                raise CommandError(f'\'valid\' must be "yes" or "no" (or true/false), got {valid!r}') from None
        self.log.info("%s valid: %s", device.name, device.valid)
        return self._ok("SET_VALID", device=device.name, valid="yes" if device.valid else "no")

    def _freeze(self, args: dict[str, Any]) -> dict[str, Any]:
        device = self._device(args["device"])
        device.frozen = self._flag(args["frozen"], "frozen")
        self.log.info("%s frozen: %s", device.name, device.frozen)
        return self._ok("FREEZE", device=device.name, frozen=device.frozen)

    def _set_mode(self, args: dict[str, Any]) -> dict[str, Any]:
        value = args["value"]
        if isinstance(value, bool):
            raise CommandError(f'mode must be one of {", ".join(MODES)}, got {value!r} (in YAML, quote "OFF")')
        if not isinstance(value, str) or value.upper() not in MODES:
            raise CommandError(f"mode must be one of {', '.join(MODES)}, got {value!r}")
        self.state.mode = value.upper()
        self.log.info("mode: %s", self.state.mode)
        return self._ok("SET_MODE", value=self.state.mode)

    def _set_bypass(self, args: dict[str, Any]) -> dict[str, Any]:
        self.state.bypass = self._flag(args["value"])
        self.log.info("bypass: %s", self.state.bypass)
        return self._ok("SET_BYPASS", value=self.state.bypass)

    def _ack_night(self, args: dict[str, Any]) -> dict[str, Any]:
        self.state.night_ack = self._flag(args.get("value", True))
        self.log.info("night acknowledgement: %s", self.state.night_ack)
        return self._ok("ACK_NIGHT", value=self.state.night_ack)

    def _emergency_stop(self, args: dict[str, Any]) -> dict[str, Any]:
        self.state.emergency_stop = self._flag(args.get("value", True))
        self.log.warning("emergency stop: %s", self.state.emergency_stop)
        return self._ok("EMERGENCY_STOP", value=self.state.emergency_stop)

    def _intrusion(self, args: dict[str, Any]) -> dict[str, Any]:
        self.state.intrusion = self._flag(args.get("value", True))
        self.log.warning("intrusion alarm: %s", self.state.intrusion)
        return self._ok("INTRUSION", value=self.state.intrusion)

    def _ups(self, args: dict[str, Any]) -> dict[str, Any]:
        value = args["value"]
        level = value.lower().replace(" ", "_").replace("-", "_") if isinstance(value, str) else value
        if level not in UPS_LEVELS:
            raise CommandError(f"UPS level must be one of {', '.join(UPS_LEVELS)}, got {value!r}")
        self.state.ups = level
        self.log.warning("UPS: %s", level)
        return self._ok("UPS", value=level)

    def _play(self, args: dict[str, Any]) -> dict[str, Any]:
        name = args["scenario"]
        if not isinstance(name, str) or not name:
            raise CommandError(f"'scenario' must be a shipped scenario name or a file path, got {name!r}")
        loop = self._flag(args.get("loop", False), "loop")
        try:
            scenario = self.load_scenario(name)
        except ScenarioError as problem:
            raise CommandError(str(problem)) from None
        self.play(scenario, loop)
        return self._ok("PLAY", **self._player_description())

    def _stop_scenario(self, args: dict[str, Any]) -> dict[str, Any]:
        if self.player is not None:
            self.log.info("scenario %s stopped", self.player.scenario.name)
        self.player = None
        return self._ok("STOP_SCENARIO")

    def _scenario(self, args: dict[str, Any]) -> dict[str, Any]:
        return self._ok("SCENARIO", **self._player_description())

    def _player_description(self) -> dict[str, Any]:
        if self.player is None:
            return {"scenario": None, "state": "idle", "cycle": self.cycles}
        return {**self.player.describe(), "cycle": self.cycles}

    def _help(self, args: dict[str, Any]) -> dict[str, Any]:
        commands = {
            name: {"takes": [*spec.required, *(f"[{key}]" for key in spec.optional)], "doc": spec.doc}
            for name, spec in self._commands.items()
        }
        return self._ok("HELP", commands=commands, shipped_scenarios=scenarios.shipped_names())
