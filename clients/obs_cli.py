"""`dcs obs ...`: the robotic observatory from the command line, as the seed's observatory control page.

::

    dcs obs status [--watch]                       conductor, weather synthesis, PLC, dome, mount, cameras
    dcs obs bypass | stop-bypass | lock | unlock | remote | scheduler
                                                   the conductor's mode changes (seed 1.10.2)
    dcs obs mount slew RA DEC | altaz AZ ALT | park | unpark | home | stop | track on|off
    dcs obs dome open | close | azimuth AZ | park | home | stop
    dcs obs camera NAME expose SECONDS [--object O] [--filter F] | abort | cool TEMP|off
    dcs obs filter NAME FILTERNAME
    dcs obs sim plc inject|valid|freeze|play|stop|scenario|mode|estop|ups|night-ack|intrusion ...
    dcs obs sim alpaca fault DEVICE FAULT          the simulators only, never real hardware

The devices are found from the conductor's properties (``obs/conductor/1``
unless ``dcs obs --conductor NAME``): Plc, Weather, Mount, Dome, Cameras,
and each camera's FilterWheel. Manual instrument commands are refused
unless the conductor is in REMOTE and says ManualAllowed; closing the
dome and stopping or parking the mount are always allowed, because they
never make the site less safe. Errors are raised as :class:`ObsError` (a
ClientError: one sentence, exit 1).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from clients.cli import _print_json, _state, _use_tango_host, console, errors
from clients.tango_client import ClientError
from clients.tango_client import enum_label as _label
from clients.tango_client import one_line as _desc
from clients.tango_client import plain as _plain
from clients.tango_client import read_values as _read
from clients.tango_client import state_and_status as _state_and_status

if TYPE_CHECKING:
    import tango

CONDUCTOR = "obs/conductor/1"
# The conductor's device properties and their defaults (device_servers/observatory/conductor.py).
CONDUCTOR_DEFAULTS = {
    "Plc": "obs/plc/1",
    "Weather": "obs/weather/1",
    "Mount": "obs/mount/1",
    "Dome": "obs/dome/1",
}
DEFAULT_CAMERAS = ["obs/camera/vis", "obs/camera/nir"]
SCHEDULER_MODES = ("SCHEDULER_STANDBY", "SCHEDULER_READY")
PLC_SIMULATOR = "simulators.plc.server"
ALPACA_SIMULATOR = "simulators.alpaca.server"
SIMULATOR_DEFAULT_PORTS = {PLC_SIMULATOR: 5003, ALPACA_SIMULATOR: 11111}
SAFE_ALWAYS = "always allowed, in every mode: it never makes the site less safe"
FRESH_AFTER = 3.0  # s: after this, a reading dated before the command counts too (clocks of other hosts)


class ObsError(ClientError):
    """A `dcs obs` command failed or was refused; shown as one sentence, and dcs exits with status 1."""


# ============================================================================ Tango helpers



def _short(name: str) -> str:
    """``tango://host:port/obs/dome/1`` as ``obs/dome/1`` (for display)."""
    return re.sub(r"^tango://[^/]+/", "", name).removesuffix("#dbase=no")


def _proxy(name: str, timeout: float = 3.0) -> tango.DeviceProxy:
    import tango

    try:
        proxy = tango.DeviceProxy(name)
        proxy.set_timeout_millis(int(timeout * 1000))
    except tango.DevFailed as exc:
        raise ObsError(f"{_short(name)}: {_desc(exc)}") from exc
    return proxy
















def _command(proxy: tango.DeviceProxy, name: str, argument: Any = None) -> Any:
    """Run a device command; a Tango error becomes an ObsError with the device's own sentence."""
    import tango

    try:
        return proxy.command_inout(name) if argument is None else proxy.command_inout(name, argument)
    except tango.DevFailed as exc:
        raise ObsError(_desc(exc)) from exc


def _write(proxy: tango.DeviceProxy, attribute: str, value: Any) -> None:
    import tango

    try:
        proxy.write_attribute(attribute, value)
    except tango.DevFailed as exc:
        raise ObsError(f"{_short(proxy.dev_name())}: write {attribute} = {value} refused: {_desc(exc)}") from exc


# ============================================================================ the site's devices
@dataclass
class Site:
    """The observatory's devices, as the conductor's properties list them (full names, as configured)."""

    conductor: str
    plc: str
    weather: str
    mount: str
    dome: str
    cameras: list[str]
    wheels: dict[str, str] = field(default_factory=dict)  # camera -> its filter wheel ("" if none)

    def camera(self, name: str) -> str:
        """``vis``, ``obs/camera/vis`` or a full name, as one of the site's cameras."""
        found = _match(name, self.cameras)
        if found is None:
            raise ObsError(f"no camera {name!r} on this site (cameras: {', '.join(_member(c) for c in self.cameras)})")
        return found

    def wheel(self, name: str) -> str:
        """A filter wheel by its name (``vis``, ``obs/filterwheel/vis``) or by its camera's."""
        wheels = [w for w in self.wheels.values() if w]
        found = _match(name, wheels)
        if found is None and (camera := _match(name, self.cameras)) is not None:
            found = self.wheels.get(camera) or None
        if found is None:
            raise ObsError(
                f"no filter wheel {name!r} on this site (filter wheels: {', '.join(_member(w) for w in wheels) or 'none'})"
            )
        return found


def _member(name: str) -> str:
    return _short(name).rsplit("/", 1)[-1]


def _match(name: str, known: list[str]) -> str | None:
    wanted = _short(name).lower()
    for candidate in known:
        if wanted in (_short(candidate).lower(), _member(candidate).lower()):
            return candidate
    return None


def _site(args: argparse.Namespace) -> Site:
    import tango

    _use_tango_host(args)
    name = args.conductor
    try:
        proxy = tango.DeviceProxy(name)
        props = proxy.get_property([*CONDUCTOR_DEFAULTS, "Cameras"])
    except tango.DevFailed as exc:
        raise ObsError(
            f"{name}: not usable in the Tango database at TANGO_HOST={os.environ['TANGO_HOST']}: {_desc(exc)} "
            "(is the observatory facility up, `dcs up`? another conductor: `dcs obs --conductor NAME ...`)"
        ) from exc
    found = {key: (list(props[key]) or [default])[0] for key, default in CONDUCTOR_DEFAULTS.items()}
    site = Site(name, found["Plc"], found["Weather"], found["Mount"], found["Dome"],
                list(props["Cameras"]) or list(DEFAULT_CAMERAS))  # fmt: skip
    for camera in site.cameras:
        try:
            site.wheels[camera] = (
                list(tango.DeviceProxy(camera).get_property(["FilterWheel"])["FilterWheel"]) or [""]
            )[0]
        except tango.DevFailed:
            site.wheels[camera] = ""
    return site


# ============================================================================ status
CONDUCTOR_ATTRIBUTES = ["Mode", "Safe", "Locked", "Bypass", "IsNight", "Reason", "SafetyAlarm"]
PLC_ATTRIBUTES = ["Mode", "UpsStatus", "EmergencyStop", "Intrusion", "NightAck", "Bypass", "PlcDate"]
DOME_ATTRIBUTES = ["ShutterStatus", "Azimuth", "Slewing", "AtHome", "AtPark", "Connected"]
MOUNT_ATTRIBUTES = ["RightAscension", "Declination", "HourAngle", "Altitude", "Azimuth", "Slewing", "AtPark",
                    "AtHome", "Tracking", "Connected"]  # fmt: skip
CAMERA_ATTRIBUTES = ["CameraState", "CCDTemperature", "SetCCDTemperature", "CoolerOn", "PercentCompleted",
                     "LastImageFile", "Connected"]  # fmt: skip
WHEEL_ATTRIBUTES = ["Filter", "Position", "Names", "Connected"]


def _device_block(name: str, attributes: list[str]) -> tuple[tango.DeviceProxy | None, dict[str, Any], dict[str, Any]]:
    """Proxy (None if there is none), raw values and the common part of a device's status."""
    try:
        proxy = _proxy(name, 2.0)
    except ObsError as exc:  # not even defined: show it, and the rest of the site
        return (
            None,
            dict.fromkeys(attributes),
            {"device": _short(name), "state": "DOWN", "status": "", "error": str(exc)},
        )
    values, problem = _read(proxy, attributes)
    state, status = _state_and_status(proxy)
    return proxy, values, {"device": _short(name), "state": state, "status": status, "error": problem}


def _conductor_status(name: str) -> dict[str, Any]:
    import tango

    proxy, v, block = _device_block(name, CONDUCTOR_ATTRIBUTES)
    try:
        manual = bool(proxy.command_inout("ManualAllowed")) if proxy is not None else None
    except tango.DevFailed:
        manual = None
    return block | {
        "mode": _label(proxy, "Mode", v["Mode"]), "safe": v["Safe"], "locked": v["Locked"], "bypass": v["Bypass"],
        "night": v["IsNight"], "reason": v["Reason"], "safety_alarm": v["SafetyAlarm"], "manual_allowed": manual,
    }  # fmt: skip


_QUANTITIES: dict[str, list[tuple[str, str, str]]] = {}  # weather device -> [(quantity, attribute, unit)]


def _quantities(proxy: tango.DeviceProxy) -> list[tuple[str, str, str]]:
    """The weather device's quantities (``Rain`` with ``RainSource``, ``RainInterpretation``, ``RainUnsafe``)."""

    key = proxy.dev_name()
    if key not in _QUANTITIES:
        names = list(proxy.get_attribute_list())
        titles = [n for n in names if all(f"{n}{s}" in names for s in ("Source", "Interpretation", "Unsafe"))]
        configs = proxy.get_attribute_config(titles) if titles else []
        found = []
        for title, config in zip(titles, configs, strict=True):
            unit = "" if config.unit in ("No unit", "") else config.unit
            found.append((re.sub(r"(?<!^)(?=[A-Z])", "_", title).lower(), title, unit))
        if not found:
            return []  # not initialised yet: ask again next time
        _QUANTITIES[key] = found
    return _QUANTITIES[key]


def _weather_status(name: str) -> dict[str, Any]:
    import tango

    proxy, v, block = _device_block(name, ["IsSafe", "UnsafeReasons", "Summary"])
    quantities: dict[str, Any] = {}
    if proxy is not None and not block["error"]:
        try:
            known = _quantities(proxy)
        except tango.DevFailed:
            known = []
        attributes = [f"{t}{s}" for _, t, _ in known for s in ("", "Source", "Interpretation", "Unsafe")]
        values, problem = _read(proxy, attributes) if attributes else ({}, "")
        block["error"] = problem
        for quantity, title, unit in known:
            quantities[quantity] = {
                "value": values.get(title), "unit": unit, "interpretation": values.get(f"{title}Interpretation"),
                "source": values.get(f"{title}Source") or None, "unsafe": values.get(f"{title}Unsafe"),
            }  # fmt: skip
    return block | {"is_safe": v["IsSafe"], "unsafe_reasons": v["UnsafeReasons"] or [], "quantities": quantities}


def _gather(site: Site) -> dict[str, Any]:
    plc_proxy, p, plc = _device_block(site.plc, PLC_ATTRIBUTES)
    dome_proxy, d, dome = _device_block(site.dome, DOME_ATTRIBUTES)
    _, m, mount = _device_block(site.mount, MOUNT_ATTRIBUTES)
    cameras, wheels = [], []
    for name in site.cameras:
        proxy, c, camera = _device_block(name, CAMERA_ATTRIBUTES)
        wheel = site.wheels.get(name, "")
        cameras.append(camera | {
            "camera_state": _label(proxy, "CameraState", c["CameraState"]), "ccd_temperature": c["CCDTemperature"],
            "set_ccd_temperature": c["SetCCDTemperature"], "cooler_on": c["CoolerOn"],
            "percent_completed": c["PercentCompleted"], "last_image": c["LastImageFile"] or None,
            "connected": c["Connected"], "filter_wheel": _short(wheel) if wheel else None,
        })  # fmt: skip
        if wheel:
            _, w, block = _device_block(wheel, WHEEL_ATTRIBUTES)
            wheels.append(block | {"camera": _short(name), "filter": w["Filter"], "position": w["Position"],
                                   "names": w["Names"] or [], "connected": w["Connected"]})  # fmt: skip
    return {
        "conductor": _conductor_status(site.conductor),
        "weather": _weather_status(site.weather),
        "plc": plc | {
            "mode": p["Mode"], "ups": p["UpsStatus"], "emergency_stop": p["EmergencyStop"], "intrusion": p["Intrusion"],
            "night_ack": p["NightAck"], "bypass": p["Bypass"], "plc_date": p["PlcDate"],
        },
        "dome": dome | {
            "shutter": _label(dome_proxy, "ShutterStatus", d["ShutterStatus"]), "azimuth": d["Azimuth"],
            "slewing": d["Slewing"], "at_home": d["AtHome"], "at_park": d["AtPark"], "connected": d["Connected"],
        },
        "mount": mount | {
            "right_ascension": m["RightAscension"], "declination": m["Declination"], "hour_angle": m["HourAngle"],
            "altitude": m["Altitude"], "azimuth": m["Azimuth"], "slewing": m["Slewing"], "parked": m["AtPark"],
            "at_home": m["AtHome"], "tracking": m["Tracking"], "connected": m["Connected"],
        },
        "cameras": cameras,
        "filter_wheels": wheels,
    }  # fmt: skip


def _yes(value: bool | None, good: bool | None = True) -> str:
    """yes/no, green when it is the good value, red otherwise (white when neither is good)."""
    if value is None:
        return "[dim]?[/]"
    colour = "white" if good is None else ("green" if value == good else "red")
    return f"[{colour}]{'yes' if value else 'no'}[/]"


def _number(value: float | None, fmt: str = ".2f", unit: str = "") -> str:
    return "[dim]?[/]" if value is None else f"{value:{fmt}}{unit}"


def _sexagesimal(value: float | None, hours: bool) -> str:
    """12.5 h -> 12:30:00.0; -45.25 deg -> -45:15:00."""
    if value is None:
        return "[dim]?[/]"
    sign = "-" if value < 0 else ("" if hours else "+")
    total = round(abs(value) * 3600, 1 if hours else 0)
    whole, minutes = divmod(int(total), 3600)
    minutes, seconds = divmod(total - whole * 3600, 60)
    return (
        f"{sign}{whole:02d}:{int(minutes):02d}:{seconds:04.1f}"
        if hours
        else f"{sign}{whole:02d}:{int(minutes):02d}:{int(seconds):02d}"
    )


def _down(block: dict[str, Any]) -> str | None:
    if block["error"]:
        return f"[red]DOWN[/]: {escape(block['error'])}"
    return None


def _grid(title: str) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", min_width=14)
    grid.add_column()
    grid.title, grid.title_justify, grid.title_style = title, "left", "bold underline"
    return grid


MODE_COLOURS = {"SCHEDULER_READY": "green", "SCHEDULER_STANDBY": "cyan", "REMOTE": "magenta", "STANDBY": "yellow",
                "PASSIVE": "yellow", "PASSIVE_NO_PLC": "red", "STARTING": "dim"}  # fmt: skip
SHUTTER_COLOURS = {"Open": "green", "Closed": "cyan", "Opening": "yellow", "Closing": "yellow", "Error": "red"}


def _render_status(data: dict[str, Any]) -> RenderableType:
    c = data["conductor"]
    conductor = _grid(f"conductor {c['device']}")
    if (down := _down(c)) is not None:
        conductor.add_row("state", down)
    else:
        mode = c["mode"] or "?"
        conductor.add_row("mode", f"[{MODE_COLOURS.get(mode, 'white')}]{mode}[/]")
        conductor.add_row("safe", _yes(c["safe"]))
        conductor.add_row("locked", _yes(c["locked"], None))
        conductor.add_row("bypass", _yes(c["bypass"], False))
        conductor.add_row("night", _yes(c["night"], None))
        conductor.add_row("manual allowed", _yes(c["manual_allowed"], None))
        conductor.add_row("reason", escape(c["reason"] or ""))
        if c["safety_alarm"]:
            conductor.add_row("SAFETY ALARM", f"[bold red]{escape(c['safety_alarm'])}[/]")
    w = data["weather"]
    weather = Table("quantity", "value", "unit", "interpretation", "source", "unsafe",
                    title=f"weather {w['device']}: " + ("[green]SAFE[/]" if w["is_safe"] else "[red]UNSAFE[/]"),
                    title_justify="left")  # fmt: skip
    if (down := _down(w)) is not None:
        weather.add_row("", "", "", down, "", "")
    for quantity, q in w["quantities"].items():
        weather.add_row(
            quantity, _number(q["value"], "g"), escape(q["unit"]), escape(q["interpretation"] or ""),
            escape(q["source"] or "[none valid]"), _yes(q["unsafe"], False),
        )  # fmt: skip
    reasons = Text.from_markup("\n".join(f"  [red]{escape(r)}[/]" for r in w["unsafe_reasons"]))
    p = data["plc"]
    plc = _grid(f"PLC {p['device']}")
    if (down := _down(p)) is not None:
        plc.add_row("state", down)
    else:
        plc.add_row("mode", f"[{'green' if p['mode'] == 'AUTO' else 'yellow'}]{escape(p['mode'] or '?')}[/]")
        plc.add_row("UPS", f"[{'green' if p['ups'] == 'ok' else 'red'}]{escape(p['ups'] or '?')}[/]")
        plc.add_row("emergency stop", _yes(p["emergency_stop"], False))
        plc.add_row("intrusion", _yes(p["intrusion"], False))
        plc.add_row("night ack", _yes(p["night_ack"], None))
        plc.add_row("bypass", _yes(p["bypass"], False))
        plc.add_row("PLC clock", escape(p["plc_date"] or ""))
    d = data["dome"]
    dome = _grid(f"dome {d['device']}")
    if (down := _down(d)) is not None or not d["connected"]:
        dome.add_row("state", down or f"[red]{d['state']}[/]: {escape(d['status'])}")
    else:
        shutter = d["shutter"] or "?"
        dome.add_row("shutter", f"[{SHUTTER_COLOURS.get(shutter, 'white')}]{shutter}[/]")
        dome.add_row("azimuth", _number(d["azimuth"], ".1f", " deg") + (" [yellow]rotating[/]" if d["slewing"] else ""))
        dome.add_row("parked / home", f"{_yes(d['at_park'], None)} / {_yes(d['at_home'], None)}")
        dome.add_row("state", f"{d['state']}: {escape(d['status'])}")
    m = data["mount"]
    mount = _grid(f"mount {m['device']}")
    if (down := _down(m)) is not None or not m["connected"]:
        mount.add_row("state", down or f"[red]{m['state']}[/]: {escape(m['status'])}")
    else:
        mount.add_row(
            "RA / Dec",
            f"{_sexagesimal(m['right_ascension'], True)}  {_sexagesimal(m['declination'], False)}"
            f"  ({_number(m['right_ascension'], '.4f', ' h')}, {_number(m['declination'], '+.3f', ' deg')})",
        )
        mount.add_row("HA", f"{_number(m['hour_angle'], '+.4f', ' h')}")
        mount.add_row("Alt / Az", f"{_number(m['altitude'], '.2f', ' deg')}  {_number(m['azimuth'], '.2f', ' deg')}")
        mount.add_row("slewing", _yes(m["slewing"], None))
        mount.add_row("parked / home", f"{_yes(m['parked'], None)} / {_yes(m['at_home'], None)}")
        mount.add_row("tracking", _yes(m["tracking"], None))  # fmt: skip
    cameras = Table("camera", "state", "CCD temperature", "cooler", "progress", "filter", "last image",
                    title="cameras", title_justify="left")  # fmt: skip
    filters = {w["camera"]: w for w in data["filter_wheels"]}
    for cam in data["cameras"]:
        if (down := _down(cam)) is not None or not cam["connected"]:
            cameras.add_row(cam["device"], down or f"[red]{cam['state']}[/]", "", "", "", "", escape(cam["status"]))
            continue
        cooler = f"on -> {_number(cam['set_ccd_temperature'], '.1f', ' degC')}" if cam["cooler_on"] else "off"
        wheel = filters.get(cam["device"])
        filter_text = "" if wheel is None else escape(wheel["filter"] or f"[red]{wheel['state']}[/]")
        cameras.add_row(
            cam["device"], escape(cam["camera_state"] or "?"), _number(cam["ccd_temperature"], ".1f", " degC"),
            cooler, f"{cam['percent_completed'] or 0} %", filter_text, escape(cam["last_image"] or ""),
        )  # fmt: skip
    parts: list[RenderableType] = [conductor, Text(""), weather]
    if w["unsafe_reasons"]:
        parts.append(reasons)
    parts += [Text(""), plc, Text(""), dome, Text(""), mount, Text(""), cameras]
    if data["filter_wheels"]:
        wheels = Table("filter wheel", "camera", "filter", "position", "filters", title="filter wheels",
                       title_justify="left")  # fmt: skip
        for wh in data["filter_wheels"]:
            if (down := _down(wh)) is not None:
                wheels.add_row(wh["device"], wh["camera"], down, "", "")
                continue
            position = "" if wh["position"] is None else str(wh["position"])
            wheels.add_row(
                wh["device"], wh["camera"], escape(wh["filter"] or "?"), position, escape(", ".join(wh["names"]))
            )
        parts.append(wheels)
    return Group(*parts)


def cmd_status(args: argparse.Namespace) -> int:
    site = _site(args)
    if not args.watch:
        data = _gather(site)
        if args.json:
            _print_json(data)
        else:
            console.print(_render_status(data))
        return 0
    try:
        if args.json:
            while True:
                _print_json(_gather(site))
                sys.stdout.flush()
                time.sleep(args.period)
        with Live(_render_status(_gather(site)), console=console, refresh_per_second=4,
                  vertical_overflow="visible") as live:  # fmt: skip
            while True:
                time.sleep(args.period)
                live.update(_render_status(_gather(site)))
    except KeyboardInterrupt:
        return 0


# ============================================================================ mode changes (seed 1.10.2)
@dataclass(frozen=True)
class ModeChange:
    command: str
    help: str
    reached: Callable[[dict[str, Any]], bool]  # the conductor's status once it has taken effect


MODE_CHANGES = {
    "bypass": ModeChange(
        "BypassPlc",
        "ignore the weather while it is UNSAFE (seed: 'PLC_BYPASS'); the PLC must confirm it; asks to confirm",
        lambda c: bool(c["bypass"]),
    ),
    "stop-bypass": ModeChange("StopBypass", "take the weather into account again", lambda c: c["bypass"] is False),
    "lock": ModeChange(
        "Lock",
        "hold the observatory in STANDBY (only while SAFE, from SCHEDULER or REMOTE)",
        lambda c: bool(c["locked"]) and c["mode"] == "STANDBY",
    ),
    "unlock": ModeChange(
        "Unlock", "end the lock: the scheduler may then open again by itself", lambda c: c["locked"] is False
    ),
    "remote": ModeChange(
        "GoRemote",
        "hand the instruments to an operator: REMOTE (unlocked, from SCHEDULER); manual commands need it",
        lambda c: c["mode"] == "REMOTE",
    ),
    "scheduler": ModeChange(
        "GoScheduler",
        "give the observatory back to the scheduler (unlocked, SAFE, from REMOTE)",
        lambda c: c["mode"] in SCHEDULER_MODES,
    ),
}


def _conductor_line(c: dict[str, Any]) -> str:
    """``mode REMOTE, safe, night, unlocked`` (when UNSAFE, the conductor's reason why)."""
    safety = "safe" if c["safe"] else f"UNSAFE ({c['reason']})"
    flags = [safety, "night" if c["night"] else "day", "LOCKED" if c["locked"] else "unlocked"]
    if c["bypass"]:
        flags.append("weather BYPASSED")
    return f"mode {c['mode']}, {', '.join(flags)}"


def cmd_mode(args: argparse.Namespace) -> int:
    change = MODE_CHANGES[args.change]
    site = _site(args)
    name = _short(site.conductor)
    if args.change == "bypass" and not args.yes:
        if args.json or not sys.stdin.isatty():
            raise ObsError("bypass not sent: it makes the conductor ignore UNSAFE weather; add --yes to confirm")
        answer = input("Bypass the weather safety (the dome may stay open in bad weather)? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            console.print("not sent")
            return 1
    proxy = _proxy(site.conductor, 10.0)
    try:
        _command(proxy, change.command)
    except ObsError as exc:
        if args.json:
            _print_json({"device": name, "command": change.command, "ok": False, "error": str(exc)})
        raise
    deadline = time.monotonic() + args.timeout
    status = _conductor_status(site.conductor)
    while not change.reached(status) and time.monotonic() < deadline:
        time.sleep(0.1)
        status = _conductor_status(site.conductor)
    if not change.reached(status):
        message = f"{name}: {change.command} was accepted, but after {args.timeout:g} s: {_conductor_line(status)}"
        if args.json:
            _print_json({"device": name, "command": change.command, "ok": False, "error": message, "conductor": status})
        raise ObsError(message)
    if args.json:
        _print_json({"device": name, "command": change.command, "ok": True, "conductor": status})
        return 0
    console.print(f"{name}: {change.command} [green]done[/]: {escape(_conductor_line(status))}")
    if args.change == "lock":
        dome = _proxy(site.dome)
        shutter = _label(dome, "ShutterStatus", _read(dome, ["ShutterStatus"])[0]["ShutterStatus"])
        if shutter not in ("Closed", "Closing", None):
            errors.print(
                f"[yellow]note:[/] the dome's shutter is {shutter}: the conductor does not close it on Lock; "
                "close it with `dcs obs dome close`"
            )
    return 0


# ============================================================================ manual actions
MANUAL_HINTS = {
    "SCHEDULER_READY": "(dcs obs remote)",
    "SCHEDULER_STANDBY": "(dcs obs remote)",
    "STANDBY": "(the observatory is locked: dcs obs unlock, then dcs obs remote)",
}


def _require_remote(site: Site, action: str) -> None:
    """Refuse ``action`` unless the conductor is in REMOTE and allows manual commands now."""
    import tango

    name = _short(site.conductor)
    try:
        proxy = _proxy(site.conductor)
        mode = _label(proxy, "Mode", proxy.read_attribute("Mode").value)
        allowed = bool(proxy.command_inout("ManualAllowed"))
        reason = proxy.read_attribute("Reason").value
    except (tango.DevFailed, ObsError) as exc:
        why = _desc(exc) if isinstance(exc, tango.DevFailed) else str(exc)
        raise ObsError(
            f"{action} refused: cannot ask {name} whether manual commands are allowed ({why}); "
            "manual commands need the conductor in REMOTE"
        ) from exc
    if allowed:
        return
    if mode != "REMOTE":
        hint = MANUAL_HINTS.get(mode or "", "(the conductor reaches REMOTE from SCHEDULER only: see dcs obs status)")
        raise ObsError(f"{action} refused: the conductor is in {mode}; manual commands need REMOTE {hint}")
    raise ObsError(
        f"{action} refused: the conductor is making the site safe ({reason}); "
        "manual commands are allowed again once it has finished"
    )


class Watch:
    """Change events of a few attributes of one device, read again twice a second as a safety net.

    Keeps each attribute's latest value with the time the device took it,
    so that a wait can insist on readings taken after its command was sent.
    """

    def __init__(self, proxy: tango.DeviceProxy, attributes: list[str]) -> None:
        self.proxy = proxy
        self.attributes = attributes
        self.values: dict[str, tuple[Any, float]] = {}
        self.changed = threading.Condition()
        self.since = 0.0
        self.started = time.monotonic()
        self._ids: list[int] = []

    def __enter__(self) -> Watch:
        import tango

        for name in self.attributes:
            try:
                self._ids.append(self.proxy.subscribe_event(
                    name, tango.EventType.CHANGE_EVENT, lambda e, n=name: self._event(n, e), stateless=True
                ))  # fmt: skip
            except tango.DevFailed:
                pass  # the reads below still follow it
        self.read()
        return self

    def __exit__(self, *_exc: object) -> None:
        import tango

        for event_id in self._ids:
            try:
                self.proxy.unsubscribe_event(event_id)
            except tango.DevFailed:
                pass
        self._ids.clear()

    def _store(self, name: str, attr: Any) -> None:
        import tango

        if attr is None or getattr(attr, "has_failed", False):
            return
        invalid = attr.quality == tango.AttrQuality.ATTR_INVALID
        value = None if invalid else _plain(attr.value)
        stamp = attr.time.totime()
        with self.changed:
            if name not in self.values or stamp >= self.values[name][1]:
                self.values[name] = (value, stamp)
                self.changed.notify_all()

    def _event(self, name: str, event: tango.EventData) -> None:
        if not event.err:
            self._store(name, event.attr_value)

    def read(self) -> None:
        import tango

        if not self.attributes:
            return
        try:
            for name, attr in zip(self.attributes, self.proxy.read_attributes(self.attributes), strict=True):
                self._store(name, attr)
        except tango.DevFailed:
            pass

    def mark(self) -> None:
        """From now on, :meth:`fresh` only returns readings taken after this moment (call it once the command
        has returned: a reading started before could still show the state from before the command)."""
        self.since = time.time()
        self.started = time.monotonic()

    def latest(self, name: str) -> Any:
        with self.changed:
            return self.values.get(name, (None, 0.0))[0]

    def fresh(self, name: str) -> Any:
        """The latest value taken after :meth:`mark` (any, once FRESH_AFTER has passed); None otherwise."""
        with self.changed:
            value, stamp = self.values.get(name, (None, 0.0))
        if stamp >= self.since or time.monotonic() - self.started > FRESH_AFTER:
            return value
        return None

    def settle(self, timeout: float = 1.5) -> None:
        """Until every attribute has a reading from the device's latest poll cycle (or ``timeout``).

        The device reads its attributes one after the other and sends an event
        for each: the one that says "done" may arrive before the others of the
        same cycle (the final RA after "not slewing").
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.changed:
                stamps = [self.values.get(name, (None, 0.0))[1] for name in self.attributes]
            if not stamps or min(stamps) >= max(stamps) - 0.05:
                return
            time.sleep(0.02)
            self.read()

    def wait(self, done: Callable[[], Any], timeout: float, on_tick: Callable[[], None]) -> Any:
        """``done()``'s first result that is not None, or None when ``timeout`` runs out."""
        deadline = time.monotonic() + timeout
        next_read = time.monotonic() + 0.5
        while True:
            with self.changed:
                self.changed.wait(0.1)
            result = done()
            on_tick()
            if result is not None:
                return result
            now = time.monotonic()
            if now >= next_read:
                next_read = now + 0.5
                self.read()
            if now >= deadline:
                return None


def _worth_a_line(text: str, shown: str, since_shown: float) -> bool:
    """Piped output: a line when something other than a number changes, and numbers once a second."""
    if text == shown:
        return False
    numbers = re.compile(r"[-+]?\d+(?:\.\d+)?")
    return numbers.sub("#", text) != numbers.sub("#", shown) or since_shown >= 1.0


class Ticker:
    """What the operator sees while something moves: a spinner on a terminal, a line per change otherwise."""

    def __init__(self, title: str, describe: Callable[[], str], show: str) -> None:
        self.title = title
        self.describe = describe
        self.started = time.monotonic()
        self.shown, self.shown_at = "", 0.0
        self.show = show  # "live" (a terminal), "lines" (piped) or "quiet" (--json)
        self.status = console.status(f"{escape(title)}") if show == "live" else None

    def __enter__(self) -> Ticker:
        if self.status is not None:
            self.status.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        if self.status is not None:
            self.status.stop()

    def tick(self) -> None:
        text = self.describe()
        elapsed = time.monotonic() - self.started
        if self.status is not None:
            self.status.update(f"{escape(self.title)}: {escape(text)}  {elapsed:.1f} s")
        elif self.show == "lines" and _worth_a_line(text, self.shown, elapsed - self.shown_at):
            self.shown, self.shown_at = text, elapsed
            console.print(f"  {elapsed:5.1f} s  {escape(text)}")


@dataclass
class Action:
    """One manual action on one device: how to send it, what to watch and when it is done."""

    device: str
    title: str  # what the operator typed, e.g. "dome azimuth 90"
    send: Callable[[tango.DeviceProxy], None]
    watch: list[str] = field(default_factory=list)
    done: Callable[[Watch], str | None] | None = None  # not None once done (None: no wait); raises ObsError on failure
    describe: Callable[[Watch], str] = lambda w: ""


def _show(args: argparse.Namespace) -> str:
    """How to show progress: "quiet" with --json, "live" on a terminal, "lines" when piped."""
    if args.json:
        return "quiet"
    return "live" if console.is_terminal else "lines"


def _follow(action: Action, wait: bool, timeout: float, show: str) -> tuple[str | None, dict[str, Any]]:
    """Send an action and, if ``wait``, follow the device's events until it is done.

    Returns the closing sentence (None when not waited for) and the watched
    values; raises ObsError when the device refuses, fails or times out.
    """
    name = _short(action.device)
    proxy = _proxy(action.device, 10.0)
    wait = wait and action.done is not None
    with Watch(proxy, action.watch if wait else []) as watch:
        action.send(proxy)
        watch.mark()  # after the command returned: a reading taken later shows its effect
        if not wait:
            return None, {}
        done = action.done
        assert done is not None
        with Ticker(f"{name}: {action.title}", lambda: action.describe(watch), show) as ticker:
            outcome = watch.wait(lambda: done(watch), timeout, ticker.tick)
        if outcome is None:
            raise ObsError(f"{name}: {action.title} not finished after {timeout:g} s ({action.describe(watch)})")
        watch.settle()
        return action.describe(watch), {k: watch.latest(k) for k in action.watch}


def _perform(args: argparse.Namespace, action: Action) -> int:
    """Run an action as the operator asked (--no-wait, --timeout, --json) and say how it ended."""
    name = _short(action.device)
    try:
        outcome, values = _follow(
            action, not getattr(args, "no_wait", False), getattr(args, "timeout", 120.0), _show(args)
        )
    except ObsError as exc:
        if args.json:
            _print_json({"device": name, "action": action.title, "ok": False, "error": str(exc)})
        raise
    if args.json:
        _print_json({"device": name, "action": action.title, "ok": True, "result": outcome, "values": values})
    elif outcome is None:
        console.print(f"{name}: {escape(action.title)} [green]sent[/]")
    else:
        console.print(f"{name}: {escape(action.title)} [green]done[/]: {escape(outcome)}")
    return 0


# ---------------------------------------------------------------------------- mount
def _angle(text: str, hours: bool) -> float:
    """Decimal (12.5) or sexagesimal (12:30:00, -45:15:00) hours or degrees."""
    try:
        if ":" not in text:
            return float(text)
        sign = -1.0 if text.strip().startswith("-") else 1.0
        parts = [abs(float(p)) for p in text.strip().lstrip("+-").split(":")]
        if len(parts) > 3:
            raise ValueError(text)
        return sign * sum(p / 60**i for i, p in enumerate(parts))
    except ValueError:
        unit = "hours (12.5 or 12:30:00)" if hours else "degrees (-45.25 or -45:15:00)"
        raise ObsError(f"{text!r} is not an angle in {unit}") from None


def _mount_motion(w: Watch) -> str:
    ra, dec = w.latest("RightAscension"), w.latest("Declination")
    alt, az = w.latest("Altitude"), w.latest("Azimuth")
    where = (
        f"RA {_sexagesimal(ra, True)} Dec {_sexagesimal(dec, False)}, Alt {_number(alt, '.2f')} Az {_number(az, '.2f')}"
    )
    flags = [f for f, on in (("slewing", w.latest("Slewing")), ("parked", w.latest("AtPark")),
                             ("at home", w.latest("AtHome")), ("tracking", w.latest("Tracking"))) if on]  # fmt: skip
    return f"{where}" + (f" ({', '.join(flags)})" if flags else "")


def _stopped(w: Watch, extra: Callable[[Watch], bool] = lambda w: True) -> str | None:
    if w.fresh("Slewing") is False and extra(w):
        return _mount_motion(w)
    return None


def cmd_mount(args: argparse.Namespace) -> int:
    site = _site(args)
    verb = args.mount_command
    words = {"slew": ["ra", "dec"], "altaz": ["az", "alt"], "track": ["on"]}.get(verb, [])
    title = " ".join(["mount", verb, *(str(getattr(args, w)) for w in words)])
    if verb not in ("park", "stop"):  # parking and stopping never make the site less safe
        _require_remote(site, title)
    watched = ["Slewing", "AtPark", "AtHome", "Tracking", "RightAscension", "Declination", "Altitude", "Azimuth"]
    action = Action(site.mount, title, lambda p: None, watched, describe=_mount_motion)
    mount = _proxy(site.mount)
    if verb in ("slew", "altaz"):
        state, _ = _read(mount, ["AtPark", "Tracking"])
        if state["AtPark"]:
            raise ObsError(f"{_short(site.mount)}: {title} refused: the mount is parked (dcs obs mount unpark first)")
        if verb == "slew":
            ra, dec = _angle(args.ra, True), _angle(args.dec, False)
            if not 0 <= ra < 24 or not -90 <= dec <= 90:
                raise ObsError(f"{title} refused: RA must be 0 to 24 h and Dec -90 to +90 deg")
            tracking, command, target = True, "SlewToCoordinates", [ra, dec]
        else:
            az, alt = _angle(args.az, False), _angle(args.alt, False)
            if not 0 <= az <= 360 or not -90 <= alt <= 90:
                raise ObsError(f"{title} refused: Az must be 0 to 360 deg and Alt -90 to +90 deg")
            tracking, command, target = False, "SlewToAltAz", [az, alt]
        if state["Tracking"] is not None and bool(state["Tracking"]) != tracking and not args.json:
            errors.print(f"[yellow]note:[/] tracking {'on' if tracking else 'off'} first (Alpaca: "
                         f"{'RA/Dec slews track' if tracking else 'Alt/Az slews do not track'})")  # fmt: skip

        def send(p: tango.DeviceProxy) -> None:
            if state["Tracking"] is None or bool(state["Tracking"]) != tracking:
                _write(p, "Tracking", tracking)
            _command(p, command, target)

        action.send, action.done = send, _stopped
    elif verb == "park":
        action.send = lambda p: _command(p, "Park")
        action.done = lambda w: _stopped(w, lambda w: bool(w.fresh("AtPark")))
    elif verb == "unpark":
        action.send = lambda p: _command(p, "Unpark")
        action.done = lambda w: _mount_motion(w) if w.fresh("AtPark") is False else None
    elif verb == "home":
        action.send = lambda p: _command(p, "FindHome")
        action.done = lambda w: _stopped(w, lambda w: bool(w.fresh("AtHome")))
    elif verb == "stop":
        if _read(mount, ["AtPark"])[0]["AtPark"]:
            console.print(f"{_short(site.mount)}: parked, nothing to stop")
            return 0
        action.send = lambda p: _command(p, "AbortSlew")
        action.done = _stopped
    elif verb == "track":
        on = args.on == "on"
        action.send = lambda p: _write(p, "Tracking", on)
        action.done = lambda w: _mount_motion(w) if w.fresh("Tracking") is on else None
    return _perform(args, action)


# ---------------------------------------------------------------------------- dome
def _dome_state(w: Watch, proxy: tango.DeviceProxy) -> str:
    shutter = _label(proxy, "ShutterStatus", w.latest("ShutterStatus")) or "?"
    azimuth = w.latest("Azimuth")
    flags = [f for f, on in (("rotating", w.latest("Slewing")), ("parked", w.latest("AtPark")),
                             ("at home", w.latest("AtHome"))) if on]  # fmt: skip
    return f"shutter {shutter}, azimuth {_number(azimuth, '.1f')} deg" + (f" ({', '.join(flags)})" if flags else "")


def _shutter_reached(w: Watch, proxy: tango.DeviceProxy, wanted: str) -> str | None:
    shutter = _label(proxy, "ShutterStatus", w.fresh("ShutterStatus"))
    if shutter == "Error":
        raise ObsError(
            f"{_short(proxy.dev_name())}: the shutter reports Error ({_dome_state(w, proxy)}): check the dome"
        )
    return _dome_state(w, proxy) if shutter == wanted else None


def cmd_dome(args: argparse.Namespace) -> int:
    import tango

    site = _site(args)
    verb = args.dome_command
    title = "dome " + " ".join([verb, *([f"{args.az:g}"] if verb == "azimuth" else [])])
    dome = _proxy(site.dome)
    if verb != "close":  # closing is never unsafe
        _require_remote(site, title)
    if verb == "open":
        safe, _ = _read(_proxy(site.conductor), ["Safe", "Reason"])
        if safe["Safe"] is False:
            raise ObsError(
                f"{title} refused: the site is UNSAFE ({safe['Reason']}): the conductor would close it again at once"
            )
    watched = ["ShutterStatus", "Azimuth", "Slewing", "AtPark", "AtHome"]
    action = Action(site.dome, title, lambda p: None, watched, describe=lambda w: _dome_state(w, dome))
    if verb in ("open", "close"):
        command, wanted = ("OpenShutter", "Open") if verb == "open" else ("CloseShutter", "Closed")
        action.send = lambda p: _command(p, command)
        action.done = lambda w: _shutter_reached(w, dome, wanted)
    elif verb == "azimuth":
        if not 0 <= args.az <= 360:
            raise ObsError(f"{title} refused: the azimuth must be 0 to 360 deg")
        action.send = lambda p: _command(p, "SlewToAzimuth", float(args.az))
        action.done = lambda w: _dome_state(w, dome) if w.fresh("Slewing") is False else None
    elif verb == "park":
        action.send = lambda p: _command(p, "Park")
        action.done = lambda w: _dome_state(w, dome) if w.fresh("Slewing") is False and w.fresh("AtPark") else None
    elif verb == "home":
        action.send = lambda p: _command(p, "FindHome")
        action.done = lambda w: _dome_state(w, dome) if w.fresh("Slewing") is False and w.fresh("AtHome") else None
    elif verb == "stop":
        action.send = lambda p: _command(p, "AbortSlew")
        action.done = None
    result = _perform(args, action)
    if verb == "close" and not args.json:
        try:
            mode = _label(_proxy(site.conductor), "Mode", _proxy(site.conductor).read_attribute("Mode").value)
        except (tango.DevFailed, ObsError):
            mode = None
        if mode == "SCHEDULER_READY":
            errors.print(
                "[yellow]note:[/] the conductor is in SCHEDULER_READY and opens the dome again on a safe night; "
                "to keep it closed: dcs obs lock"
            )
    return result


# ---------------------------------------------------------------------------- cameras and filter wheels
def _filter_action(wheel: str, wanted: str, title: str) -> Action:
    proxy = _proxy(wheel)
    names, problem = _read(proxy, ["Names"])
    known = list(names["Names"] or [])
    if problem or not known:
        raise ObsError(
            f"{_short(wheel)}: {title} refused: the wheel's filters are unknown ({problem or 'no Names yet'})"
        )
    if wanted not in known:
        raise ObsError(f"{_short(wheel)}: no filter {wanted!r} (filters: {', '.join(known)})")
    slot = known.index(wanted)

    def describe(w: Watch) -> str:
        position = w.latest("Position")
        if position is None or position < 0:
            return "moving"
        return f"filter {known[position] if position < len(known) else '?'} (slot {position})"

    return Action(
        wheel, title, lambda p: _command(p, "SetFilter", wanted), ["Position"],
        done=lambda w: "in place" if w.fresh("Position") == slot else None, describe=describe,
    )  # fmt: skip


def cmd_filter(args: argparse.Namespace) -> int:
    site = _site(args)
    wheel = site.wheel(args.wheel)
    title = f"filter {args.wheel} {args.filter_name}"
    _require_remote(site, title)
    return _perform(args, _filter_action(wheel, args.filter_name, title))


def cmd_camera(args: argparse.Namespace) -> int:
    site = _site(args)
    camera = site.camera(args.camera)
    name = _short(camera)
    verb = args.camera_command
    words = {"expose": [f"{getattr(args, 'seconds', 0):g}"], "cool": [str(getattr(args, "temperature", ""))]}
    title = " ".join(["camera", args.camera, verb, *words.get(verb, [])])
    _require_remote(site, title)
    proxy = _proxy(camera, 10.0)
    if verb == "abort":
        _command(proxy, "AbortExposure")
        if args.json:
            _print_json({"device": name, "action": title, "ok": True})
        else:
            console.print(f"{name}: exposure aborted (the image is discarded)")
        return 0
    if verb == "cool":
        if args.temperature.lower() == "off":
            _write(proxy, "CoolerOn", False)
            setting: dict[str, Any] = {"cooler_on": False}
        else:
            try:
                celsius = float(args.temperature)
            except ValueError:
                raise ObsError(f"{args.temperature!r} is not a temperature in degC (or 'off')") from None
            _write(proxy, "SetCCDTemperature", celsius)
            _write(proxy, "CoolerOn", True)
            setting = {"cooler_on": True, "set_ccd_temperature": celsius}
        if args.json:
            _print_json({"device": name, "action": title, "ok": True, **setting})
        else:
            target = f"cooling to {setting['set_ccd_temperature']:g} degC" if setting["cooler_on"] else "cooler off"
            console.print(f"{name}: {target} (watch it with dcs obs status --watch)")
        return 0
    return _expose(args, site, camera, title)


def _expose(args: argparse.Namespace, site: Site, camera: str, title: str) -> int:
    """Set the filter (if asked), start the exposure, follow it until the FITS file is written."""
    name = _short(camera)
    if args.seconds < 0:
        raise ObsError(f"{title} refused: the exposure time must not be negative")
    if args.filter:
        wheel = site.wheels.get(camera, "")
        if not wheel:
            raise ObsError(
                f"{name}: --filter refused: this camera has no filter wheel (its FilterWheel property is empty)"
            )
        try:
            _follow(_filter_action(wheel, args.filter, f"filter {args.filter}"), True, 60.0, _show(args))
        except ObsError as exc:
            if args.json:
                _print_json({"device": name, "action": title, "ok": False, "error": str(exc)})
            raise
        if not args.json:
            console.print(f"{_short(wheel)}: filter {escape(args.filter)} in the beam")
    proxy = _proxy(camera, 10.0)
    request = {"duration": args.seconds, "light": not args.dark}
    if args.object:
        request["object"] = args.object
    watched = ["CameraState", "PercentCompleted", "LastImageFile", "ImageReady"]
    with Watch(proxy, [] if args.no_wait else watched) as watch:
        before = _read(proxy, ["LastImageFile"])[0]["LastImageFile"]
        try:
            _command(proxy, "StartExposure", json.dumps(request))
        except ObsError as exc:
            if args.json:
                _print_json({"device": name, "action": title, "ok": False, "error": str(exc)})
            raise
        watch.mark()
        if args.no_wait:
            if args.json:
                _print_json({"device": name, "action": title, "ok": True, "waited": False})
            else:
                console.print(f"{name}: exposing {args.seconds:g} s (the file will be in its LastImageFile; "
                              "follow it with dcs obs status --watch)")  # fmt: skip
            return 0
        follow = _ExposureFollower(watch, proxy, before, site)
        timeout = args.timeout if args.timeout is not None else args.seconds + 60.0
        with _ExposureProgress(name, args.seconds, follow, _show(args)) as progress:
            path = watch.wait(follow.done, timeout, progress.tick)
    if path is None:
        message = f"{name}: no image {timeout:g} s after the exposure started ({follow.describe()})"
        if args.json:
            _print_json({"device": name, "action": title, "ok": False, "error": message})
        raise ObsError(message)
    if args.json:
        _print_json({"device": name, "action": title, "ok": True, "file": path, "duration": args.seconds,
                     "filter": args.filter, "object": args.object})  # fmt: skip
    else:
        console.print(f"{name}: [green]image written[/]: {escape(path)}")
    return 0


BUSY_CAMERA = ("Waiting", "Exposing", "Reading", "Download")


class _ExposureFollower:
    """Done when LastImageFile names a new file; fails on a camera error or an exposure that ends without one."""

    def __init__(self, watch: Watch, proxy: tango.DeviceProxy, before: str | None, site: Site) -> None:
        self.watch, self.proxy, self.before, self.site = watch, proxy, before, site
        self.seen_busy = False
        self.idle_since: float | None = None

    def state(self) -> str | None:
        return _label(self.proxy, "CameraState", self.watch.fresh("CameraState"))

    def describe(self) -> str:
        state = self.state() or _label(self.proxy, "CameraState", self.watch.latest("CameraState")) or "?"
        return f"{state} {self.watch.fresh('PercentCompleted') or 0} %"

    def done(self) -> str | None:
        path = self.watch.latest("LastImageFile")
        if path and path != self.before:
            if str(path).startswith("ERROR"):
                raise ObsError(f"{_short(self.proxy.dev_name())}: the image was not saved: {path}")
            return str(path)
        state = self.state()
        if state == "Error":
            raise ObsError(f"{_short(self.proxy.dev_name())}: the camera reports an error: {self.proxy.status()}")
        if state in BUSY_CAMERA:
            self.seen_busy, self.idle_since = True, None
        elif state == "Idle" and self.seen_busy and not self.watch.latest("ImageReady"):
            self.idle_since = self.idle_since or time.monotonic()
            if time.monotonic() - self.idle_since > 5.0:
                reason = _read(_proxy(self.site.conductor), ["Reason"])[0]["Reason"]
                raise ObsError(
                    f"{_short(self.proxy.dev_name())}: the exposure ended without an image (aborted?); "
                    f"the conductor says: {reason}"
                )
        return None


class _ExposureProgress:
    """A progress bar on a terminal, a line per change otherwise."""

    def __init__(self, name: str, seconds: float, follow: _ExposureFollower, show: str) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.follow, self.show = follow, show
        self.started = time.monotonic()
        self.shown, self.shown_at = "", 0.0
        self.progress = (
            Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f} %"),
                     TimeElapsedColumn(), console=console, transient=True)
            if show == "live" else None
        )  # fmt: skip
        self.task = self.progress.add_task(f"{name} {seconds:g} s", total=100) if self.progress else None
        self.name, self.seconds = name, seconds

    def __enter__(self) -> _ExposureProgress:
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def tick(self) -> None:
        text = self.follow.describe()
        if self.progress is not None and self.task is not None:
            percent = self.follow.watch.latest("PercentCompleted") or 0
            self.progress.update(self.task, completed=percent, description=f"{self.name} {self.seconds:g} s {text}")
        elif self.show == "lines" and _worth_a_line(text, self.shown, time.monotonic() - self.started - self.shown_at):
            self.shown, self.shown_at = text, time.monotonic() - self.started
            console.print(f"  {time.monotonic() - self.started:5.1f} s  {escape(text)}")


# ============================================================================ simulators
SIM_WARNING = "These commands talk to the facility's SIMULATORS only, never to real hardware."
SIM_ONLY = "(dcs obs sim talks to simulators only, never to real hardware)"


@dataclass
class SimTarget:
    host: str
    port: int
    origin: str  # where the address came from


def _argument(argv: list[str], flag: str) -> str | None:
    for i, word in enumerate(argv):
        if word == flag and i + 1 < len(argv):
            return argv[i + 1]
        if word.startswith(flag + "="):
            return word.split("=", 1)[1]
    return None


def _sim_target(args: argparse.Namespace, module: str, what: str) -> SimTarget:
    """The simulator's address: --host/--port, or the running facility's plan (refused when it runs none)."""
    from clients.plan import Plan

    if args.host or args.port:
        return SimTarget(args.host or "127.0.0.1", args.port or SIMULATOR_DEFAULT_PORTS[module], "--host/--port")
    state = _state(args)
    if state.running_supervisor() is None or not state.plan.exists():
        raise ObsError(
            f"refused: no facility is running from {state.root}, so no {what} is known {SIM_ONLY}; "
            "name one with --host/--port"
        )
    try:
        plan = Plan.load(state.plan)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ObsError(f"refused: {state.plan} is unreadable ({exc}); name the {what} with --host/--port") from exc
    found = [p for p in plan.processes if p.kind == "simulator" and _argument(p.argv, "-m") == module]
    if not found:
        raise ObsError(
            f"refused: facility {plan.facility} runs no {what} ({module}) {SIM_ONLY}; "
            "to reach a simulator started elsewhere, give --host/--port"
        )
    if len(found) > 1:
        raise ObsError(f"facility {plan.facility} runs several {what}s ({', '.join(p.name for p in found)}): "
                       "choose one with --port")  # fmt: skip
    process = found[0]
    ready_host, _, ready_port = (process.ready_tcp or "").rpartition(":")
    port = _argument(process.argv, "--port") or ready_port or str(SIMULATOR_DEFAULT_PORTS[module])
    host = _argument(process.argv, "--host") or ready_host or "127.0.0.1"
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return SimTarget(host, int(port), f"{process.name} of facility {plan.facility}")


def _plc_request(target: SimTarget, command: dict[str, Any]) -> dict[str, Any]:
    """One command to the PLC simulator (its JSON-over-TCP protocol); an ERROR reply becomes an ObsError."""
    where = f"PLC simulator at {target.host}:{target.port}"
    try:
        with socket.create_connection((target.host, target.port), timeout=3.0) as sock:
            sock.sendall((json.dumps({"command": [command]}) + "\n").encode())
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
    except OSError as exc:
        raise ObsError(f"{where} ({target.origin}) does not answer: {exc} (is it running? dcs status)") from exc
    try:
        reply = json.loads(data)[0]
    except (ValueError, IndexError, KeyError, TypeError) as exc:
        raise ObsError(f"{where} answered {data[:80]!r}: not the PLC simulator's protocol") from exc
    if reply.get("name") == "ERROR":
        raise ObsError(f"{where}: {reply.get('message')}")
    return reply


def _check_plc_simulator(target: SimTarget) -> None:
    """Only the DCS PLC simulator answers HELP with its shipped scenarios: never inject into a real PLC."""
    try:
        reply = _plc_request(target, {"name": "HELP"})
    except ObsError as exc:
        raise ObsError(f"refused: {exc}") from exc
    if "shipped_scenarios" not in reply or "INJECT" not in reply.get("commands", {}):
        raise ObsError(f"refused: {target.host}:{target.port} does not answer as the DCS PLC simulator {SIM_ONLY}")


def _value(text: str) -> Any:
    """A value typed on the command line: a JSON literal (5, 2.5, true, null) or else the text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _on_off(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("on", "yes", "true", "1"):
        return True
    if lowered in ("off", "no", "false", "0"):
        return False
    raise ObsError(f"{text!r}: say on or off")


def _plc_command(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    """The protocol command for ``dcs obs sim plc ...`` and a sentence saying what it does."""
    verb = args.plc_command
    if verb == "inject":
        value = _value(args.value)
        what = f"pinned at {value!r}"
        if value is None:
            what = "released: it drifts again from where it was held"
            if args.device == "weather" and args.value_name == "rain_rate":
                what += " (rain_rate does not drift: inject 0 to end the rain)"
        return ({"name": "INJECT", "device": args.device, "value_name": args.value_name, "value": value},
                f"{args.device} {args.value_name} {what}")  # fmt: skip
    if verb == "valid":
        return {"name": "SET_VALID", "device": args.device, "valid": args.valid}, f"{args.device} valid: {args.valid}"
    if verb == "freeze":
        frozen = _on_off(args.frozen)
        return ({"name": "FREEZE", "device": args.device, "frozen": frozen},
                f"{args.device} {'frozen (stale from now on)' if frozen else 'updating again'}")  # fmt: skip
    if verb == "play":
        scenario = args.scenario
        if Path(scenario).expanduser().is_file():  # the simulator runs in another directory: send a full path
            scenario = str(Path(scenario).expanduser().resolve())
        command: dict[str, Any] = {"name": "PLAY", "scenario": scenario}
        if args.loop:
            command["loop"] = True
        return command, f"playing scenario {args.scenario}" + (" (looping)" if args.loop else "")
    if verb == "stop":
        return {"name": "STOP_SCENARIO"}, "scenario stopped (what it changed stays)"
    if verb == "scenario":
        return {"name": "SCENARIO"}, "scenario"
    if verb == "mode":
        return {"name": "SET_MODE", "value": args.mode}, f"mode key switch turned to {args.mode}"
    if verb == "estop":
        on = _on_off(args.on)
        return {"name": "EMERGENCY_STOP", "value": on}, f"emergency stop {'pressed' if on else 'reset'}"
    if verb == "ups":
        return {"name": "UPS", "value": args.level}, f"UPS {args.level}"
    if verb == "night-ack":
        on = _on_off(args.on)
        return {"name": "ACK_NIGHT", "value": on}, f"night acknowledgement {'given' if on else 'removed'}"
    if verb == "intrusion":
        on = _on_off(args.on)
        return {"name": "INTRUSION", "value": on}, f"intrusion alarm {'raised' if on else 'cleared'}"
    raise ObsError(f"unknown sim plc command {verb!r}")


def cmd_sim_plc(args: argparse.Namespace) -> int:
    command, sentence = _plc_command(args)
    target = _sim_target(args, PLC_SIMULATOR, "PLC simulator")
    _check_plc_simulator(target)
    try:
        reply = _plc_request(target, command)
    except ObsError as exc:
        if args.json:
            _print_json(
                {"simulator": f"{target.host}:{target.port}", "command": command, "ok": False, "error": str(exc)}
            )
        raise
    if args.json:
        _print_json({"simulator": f"{target.host}:{target.port}", "command": command, "ok": True, "reply": reply})
        return 0
    where = f"PLC simulator {target.host}:{target.port}"
    if command["name"] in ("SCENARIO", "PLAY"):
        if reply.get("scenario"):
            when = f"time {max(reply.get('time', 0), 0):g} of {reply.get('duration', '?')} cycles"
            loop = ", looping" if reply.get("loop") else ""
            sentence = (
                f"scenario {reply['scenario']} {reply.get('state', '')} ({when}{loop}): {reply.get('description', '')}"
            )
        else:
            sentence = "no scenario playing"
    later = "" if command["name"] == "SCENARIO" else " [dim](shows from the next PLC cycle)[/]"
    console.print(f"{where}: {escape(sentence.rstrip(': '))}{later}")
    return 0


def cmd_sim_alpaca(args: argparse.Namespace) -> int:
    import requests

    target = _sim_target(args, ALPACA_SIMULATOR, "Alpaca simulator")
    url = f"http://{target.host}:{target.port}/simulator/fault"
    where = f"Alpaca simulator at {target.host}:{target.port}"
    try:
        probe = requests.get(url, timeout=3)
        if probe.status_code != 200 or not isinstance(probe.json().get("Value"), dict):
            raise ObsError(
                f"refused: {target.host}:{target.port} has no /simulator/fault: not the DCS Alpaca simulator {SIM_ONLY}"
            )
        reply = requests.put(url, data={"device": args.device, "fault": args.fault}, timeout=3)
    except requests.RequestException as exc:
        raise ObsError(f"{where} ({target.origin}) does not answer: {exc} (is it running? dcs status)") from exc
    except ValueError as exc:
        raise ObsError(f"refused: {target.host}:{target.port} does not answer as the DCS Alpaca simulator") from exc
    if reply.status_code != 200:
        message = f"{where}: fault {args.fault} on {args.device} refused: {reply.text.strip()}"
        if args.json:
            _print_json({"simulator": f"{target.host}:{target.port}", "ok": False, "error": message})
        raise ObsError(message)
    faults = reply.json().get("Value", {})
    if args.json:
        _print_json({"simulator": f"{target.host}:{target.port}", "ok": True, "faults": faults})
        return 0
    done = "cleared" if args.fault.lower() == "none" else f"{args.fault} injected"
    active = ", ".join(f"{d}: {f}" for d, f in faults.items() if f != "none") or "none"
    console.print(f"{where}: {escape(args.device)} {escape(done)} (faults now: {escape(active)})")
    return 0


# ============================================================================ parser
def add_obs_commands(sub: Any) -> None:
    """Register `dcs obs` and its sub-commands on the `dcs` parser's sub-parsers."""
    obs = sub.add_parser(
        "obs",
        help="the robotic observatory: status, the conductor's modes, manual mount/dome/camera commands, simulators",
        description="The robotic observatory, as the seed's observatory control page: the conductor's status and "
        "modes, manual instrument commands (in REMOTE only), and scenario injection into the simulators.",
        epilog="Start with `dcs obs status`. Manual commands need the conductor in REMOTE (`dcs obs remote`); "
        "`dcs obs dome close`, `dcs obs mount stop` and `dcs obs mount park` are always allowed. "
        "Every sub-command has --help.",
    )
    obs.add_argument("--conductor", default=CONDUCTOR, help=f"the ObservatoryConductor device (default {CONDUCTOR})")
    commands = obs.add_subparsers(dest="obs_command", required=True, metavar="COMMAND")

    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="machine-readable output")
    waiting = argparse.ArgumentParser(add_help=False)
    waiting.add_argument("--no-wait", action="store_true", help="return once the command is accepted")
    waiting.add_argument("--timeout", type=float, default=120.0, help="seconds to follow it (default 120)")
    target = argparse.ArgumentParser(add_help=False)
    target.add_argument("--host", help="the simulator's host (default: from the running facility's plan)")
    target.add_argument("--port", type=int, help="the simulator's port (default: from the running facility's plan)")

    def add(parent: Any, name: str, func: Any, help: str, parents: tuple[Any, ...] = (as_json,),
            more: str = "") -> argparse.ArgumentParser:  # fmt: skip
        p = parent.add_parser(name, help=help, description=help + more, parents=list(parents))
        if func is not None:
            p.set_defaults(func=func)
        return p

    p = add(
        commands, "status", cmd_status, "the conductor, the weather synthesis, PLC, dome, mount, cameras, filter wheels"
    )
    p.add_argument("--watch", "-w", action="store_true", help="refresh until Ctrl-C")
    p.add_argument("--period", type=float, default=1.0, help="seconds between refreshes with --watch (default 1)")

    for name, change in MODE_CHANGES.items():
        p = add(commands, name, cmd_mode, change.help,
                more=f" (calls {change.command} on the conductor; a refusal prints its reason and exits 1)")  # fmt: skip
        p.set_defaults(change=name)
        p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the change (default 10)")
        if name == "bypass":
            p.add_argument("--yes", "-y", action="store_true", help="do it without being asked")

    manual = " Refused unless the conductor is in REMOTE (dcs obs remote)."
    mount = add(commands, "mount", None, "manual mount commands (in REMOTE; park and stop always)", parents=())
    verbs = mount.add_subparsers(dest="mount_command", required=True, metavar="ACTION")
    p = add(verbs, "slew", cmd_mount, "slew to RA (hours, 12.5 or 12:30:00) and Dec (degrees, -45.25 or -45:15:00)",
            (as_json, waiting), manual + " Turns tracking on first (Alpaca RA/Dec slews track).")  # fmt: skip
    p.add_argument("ra", metavar="RA")
    p.add_argument("dec", metavar="DEC")
    p = add(verbs, "altaz", cmd_mount, "slew to azimuth and altitude (degrees)", (as_json, waiting),
            manual + " Turns tracking off first (Alpaca Alt/Az slews do not track).")  # fmt: skip
    p.add_argument("az", metavar="AZ")
    p.add_argument("alt", metavar="ALT")
    add(verbs, "park", cmd_mount, "park the mount", (as_json, waiting), f": {SAFE_ALWAYS}.")
    add(verbs, "unpark", cmd_mount, "leave the park position", (as_json, waiting), "." + manual)
    add(verbs, "home", cmd_mount, "find the home position", (as_json, waiting), "." + manual)
    add(verbs, "stop", cmd_mount, "stop any slew at once", (as_json, waiting), f": {SAFE_ALWAYS}.")
    p = add(verbs, "track", cmd_mount, "sidereal tracking on or off", (as_json, waiting), "." + manual)
    p.add_argument("on", choices=("on", "off"))

    dome = add(commands, "dome", None, "manual dome commands (in REMOTE; close always)", parents=())
    verbs = dome.add_subparsers(dest="dome_command", required=True, metavar="ACTION")
    add(verbs, "open", cmd_dome, "open the shutter", (as_json, waiting), "." + manual + " Refused while UNSAFE.")
    add(verbs, "close", cmd_dome, "close the shutter", (as_json, waiting), f": {SAFE_ALWAYS}.")
    p = add(verbs, "azimuth", cmd_dome, "rotate the dome to an azimuth (degrees)", (as_json, waiting), "." + manual)
    p.add_argument("az", type=float, metavar="AZ")
    add(verbs, "park", cmd_dome, "park the dome", (as_json, waiting), "." + manual)
    add(verbs, "home", cmd_dome, "find the dome's home position", (as_json, waiting), "." + manual)
    add(verbs, "stop", cmd_dome, "stop the dome and the shutter at once", (as_json,),
        "." + manual + " (Stopping a closing shutter is not safe, so this one is not always allowed.)")  # fmt: skip

    camera = add(commands, "camera", None, "manual camera commands: expose, abort, cool (in REMOTE)", parents=())
    camera.add_argument("camera", metavar="NAME", help="vis, nir, or a camera device name")
    verbs = camera.add_subparsers(dest="camera_command", required=True, metavar="ACTION")
    p = add(verbs, "expose", cmd_camera, "take an exposure and wait for its FITS file, with a progress display",
            (as_json,), "." + manual)  # fmt: skip
    p.add_argument("seconds", type=float, metavar="SECONDS")
    p.add_argument("--object", help="the OBJECT in the FITS header")
    p.add_argument("--filter", help="set this filter first (one of the camera's filter wheel's names)")
    p.add_argument("--dark", action="store_true", help="a dark frame (shutter closed)")
    p.add_argument("--no-wait", action="store_true", help="return once the exposure has started")
    p.add_argument("--timeout", type=float, default=None, help="seconds to wait for the file (default SECONDS + 60)")
    add(verbs, "abort", cmd_camera, "stop the exposure now and discard the image", (as_json,), "." + manual)
    p = add(verbs, "cool", cmd_camera, "cool the CCD to TEMP degC (cooler on), or 'off'", (as_json,), "." + manual)
    p.add_argument("temperature", metavar="TEMP|off")

    p = add(commands, "filter", cmd_filter, "put a filter in the beam: dcs obs filter vis r", (as_json, waiting),
            "." + manual)  # fmt: skip
    p.add_argument("wheel", metavar="NAME", help="the filter wheel (vis, nir, or a device name) or its camera")
    p.add_argument("filter_name", metavar="FILTERNAME")

    sim = add(commands, "sim", None, "inject scenarios and faults into the SIMULATORS (demos, training)", parents=(),
              more=f". {SIM_WARNING} The address comes from the running facility's plan unless given with "
              "--host/--port; anything not a DCS simulator is refused.")  # fmt: skip
    kinds = sim.add_subparsers(dest="sim_kind", required=True, metavar="SIMULATOR")
    plc = add(kinds, "plc", None, "the weather and site PLC simulator (simulators.plc)", parents=(),
              more=f". {SIM_WARNING}")  # fmt: skip
    verbs = plc.add_subparsers(dest="plc_command", required=True, metavar="ACTION")
    sim_parents = (as_json, target)
    p = add(verbs, "inject", cmd_sim_plc, "pin a sensor value, or a 'weather' quantity every sensor reads",
            sim_parents, ": e.g. `weather rain_rate 5`, `WXT520 RainRate 7.5`; VALUE null releases it.")  # fmt: skip
    p.add_argument("device", metavar="DEVICE", help="weather, WXT520, DRD11, VantagePro, MLX90614-1, ...")
    p.add_argument("value_name", metavar="VALUE_NAME", help="rain_rate, wind_speed, humidity, ... or a sensor value")
    p.add_argument("value", metavar="VALUE", help="a number, or null to release")
    p = add(verbs, "valid", cmd_sim_plc, "mark a sensor valid or invalid", sim_parents)
    p.add_argument("device", metavar="DEVICE")
    p.add_argument("valid", choices=("yes", "no"))
    p = add(verbs, "freeze", cmd_sim_plc, "freeze a sensor (its values and timestamps stop: stale data)", sim_parents)
    p.add_argument("device", metavar="DEVICE")
    p.add_argument("frozen", choices=("yes", "no"))
    p = add(verbs, "play", cmd_sim_plc, "play a scenario: a shipped name (rain, clouds, wind_gusts, ...) or a file",
            sim_parents)  # fmt: skip
    p.add_argument("scenario", metavar="SCENARIO")
    p.add_argument("--loop", action="store_true", help="start again at the end")
    add(verbs, "stop", cmd_sim_plc, "stop the scenario being played (what it changed stays)", sim_parents)
    add(verbs, "scenario", cmd_sim_plc, "which scenario plays, and where it is", sim_parents)
    p = add(verbs, "mode", cmd_sim_plc, "turn the PLC's mode key switch", sim_parents)
    p.add_argument("mode", choices=("OFF", "MANU", "AUTO"), type=str.upper)
    p = add(verbs, "estop", cmd_sim_plc, "press or reset the emergency stop", sim_parents)
    p.add_argument("on", choices=("on", "off"))
    p = add(verbs, "ups", cmd_sim_plc, "the UPS level", sim_parents)
    p.add_argument("level", choices=("ok", "on_battery", "low_battery"))
    p = add(verbs, "night-ack", cmd_sim_plc, "press the night acknowledgement button (off: end of night)", sim_parents)
    p.add_argument("on", choices=("on", "off"))
    p = add(verbs, "intrusion", cmd_sim_plc, "raise or clear the intrusion alarm", sim_parents)
    p.add_argument("on", choices=("on", "off"))

    alpaca = add(kinds, "alpaca", None, "the Alpaca simulator (mount, dome, cameras, filter wheels)", parents=(),
                 more=f". {SIM_WARNING}")  # fmt: skip
    verbs = alpaca.add_subparsers(dest="alpaca_command", required=True, metavar="ACTION")
    p = add(verbs, "fault", cmd_sim_alpaca, "inject a hardware fault into one simulated device, or clear it",
            sim_parents, ": shutter_stuck (dome/0), mount_silent (telescope/0), camera_error (camera/N), "
            "silent (any), none (clear).")  # fmt: skip
    p.add_argument("device", metavar="DEVICE", help="Alpaca type/number: telescope/0, dome/0, camera/1, filterwheel/0")
    p.add_argument("fault", metavar="FAULT", help="shutter_stuck, mount_silent, camera_error, silent or none")
