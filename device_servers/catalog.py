"""The device servers DCS ships: executable name, module and the classes each serves.

The facility file names servers as ``Executable/instance``; this catalogue is
how `dcs apply` knows that the executable and the device classes exist, and
how `dcs up` starts them. Add a line here when you add a device server
(see docs/how-to-add-a-device.md).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

PropertyCheck = Callable[[Mapping[str, list[str]], Path], list[str]]


@dataclass(frozen=True)
class ServerKind:
    """One device-server executable."""

    executable: str
    module: str
    classes: tuple[str, ...]
    checks: Mapping[str, PropertyCheck] = field(default_factory=dict)


def _check_text_device(properties: Mapping[str, list[str]], base: Path) -> list[str]:
    from device_servers.common.yamlfile import ConfigFileError
    from device_servers.control.text_device import load_protocol

    files = properties.get("ProtocolFile")
    if not files:
        return ["properties.ProtocolFile: missing (the protocol file the device follows)"]
    path = base / files[0]
    try:
        protocol = load_protocol(path)
    except ConfigFileError as exc:
        return [f"properties.ProtocolFile: {p}" for p in str(exc).splitlines()]
    if protocol.transport == "tcp" and not properties.get("Port"):
        return ["properties.Port: missing (the instrument's TCP port)"]
    if protocol.transport == "command" and not properties.get("Program"):
        return ["properties.Program: missing (the command-line tool to run)"]
    return []


def _check_weather(properties: Mapping[str, list[str]], base: Path) -> list[str]:
    from device_servers.common.yamlfile import ConfigFileError
    from device_servers.observatory.weather_rules import load_rules

    path = base / (properties.get("RulesFile") or ["weather_rules.yaml"])[0]
    try:
        load_rules(path)
    except ConfigFileError as exc:
        return [f"properties.RulesFile: {p}" for p in str(exc).splitlines()]
    return []


SERVERS: dict[str, ServerKind] = {
    kind.executable: kind
    for kind in (
        ServerKind(
            "TextDevice",
            "device_servers.control.text_device",
            ("TextDevice",),
            {"TextDevice": _check_text_device},
        ),
        ServerKind("EccServer", "device_servers.daq.ecc_server", ("EccServer",)),
        ServerKind("DataRouter", "device_servers.daq.data_router", ("DataRouter",)),
        ServerKind("DaqSequencer", "device_servers.daq.daq_sequencer", ("DaqSequencer",)),
        ServerKind("Plc", "device_servers.observatory.plc", ("Plc",)),
        ServerKind("Weather", "device_servers.observatory.weather", ("Weather",), {"Weather": _check_weather}),
        ServerKind("Mount", "device_servers.observatory.mount", ("Mount",)),
        ServerKind("Dome", "device_servers.observatory.dome", ("Dome",)),
        ServerKind("FilterWheel", "device_servers.observatory.filter_wheel", ("FilterWheel",)),
        ServerKind("Camera", "device_servers.observatory.camera", ("Camera",)),
        ServerKind("ObservatoryConductor", "device_servers.observatory.conductor", ("ObservatoryConductor",)),
    )
}


def all_classes() -> dict[str, ServerKind]:
    """Every device class, with the server kind that serves it."""
    return {cls: kind for kind in SERVERS.values() for cls in kind.classes}
