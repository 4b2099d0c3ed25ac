"""The facility file: the single source of truth for what a DCS installation runs.

See docs/facility-file.md for the format. :func:`load_facility` validates a
file and reports every problem with file, line, key path and cause.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from device_servers.catalog import SERVERS, all_classes
from device_servers.common.yamlfile import ConfigFileError, load_yaml_model, problems_at

Scalar = str | int | float | bool
PropertyValue = Scalar | list[Scalar]

DEVICE_NAME = re.compile(r"^[a-z0-9_.\-]+/[a-z0-9_.\-]+/[a-z0-9_.\-]+$")
SERVER_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]*/[A-Za-z0-9_.\-]+$")
ATTRIBUTE_PROPERTIES = frozenset(
    {
        "abs_change", "rel_change", "event_period",
        "archive_abs_change", "archive_rel_change", "archive_period",
        "min_value", "max_value", "min_alarm", "max_alarm", "min_warning", "max_warning",
        "delta_t", "delta_val", "unit", "label", "format", "description",
    }
)  # fmt: skip


def as_strings(value: PropertyValue) -> list[str]:
    """A property value as Tango stores it: a list of strings."""
    items = value if isinstance(value, list) else [value]
    return [str(v).lower() if isinstance(v, bool) else str(v) for v in items]


class SimulatorSpec(BaseModel):
    """A program standing in for hardware, started before any device server."""

    model_config = ConfigDict(extra="forbid")

    module: str | None = Field(None, description="Python module run as `python -m MODULE`")
    command: list[str] | None = Field(None, description="or any program and its arguments")
    args: list[Scalar] = []
    host: str = "127.0.0.1"
    port: int | None = Field(None, ge=1, le=65535, description="wait until it accepts connections")

    @model_validator(mode="after")
    def _one_program(self) -> SimulatorSpec:
        if (self.module is None) == (self.command is None):
            raise ValueError("give exactly one of 'module' or 'command'")
        return self


class DeviceSpec(BaseModel):
    """One Tango device: its class, properties and attribute (event) properties."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    device_class: str = Field(alias="class")
    properties: dict[str, PropertyValue] = {}
    attributes: dict[str, dict[str, Scalar]] = {}

    @field_validator("attributes")
    @classmethod
    def _known_attribute_properties(cls, value: dict[str, dict[str, Scalar]]) -> dict[str, dict[str, Scalar]]:
        for attr, props in value.items():
            unknown = set(props) - ATTRIBUTE_PROPERTIES
            if unknown:
                raise ValueError(
                    f"{attr}: unknown attribute properties {sorted(unknown)}; "
                    f"known: {', '.join(sorted(ATTRIBUTE_PROPERTIES))}"
                )
        return value


class ServerSpec(BaseModel):
    """One device-server process: ``Executable/instance``, a start-up level and its devices."""

    model_config = ConfigDict(extra="forbid")

    level: int = Field(1, ge=1, le=200, description="start-up level: lower levels start first")
    devices: dict[str, DeviceSpec]


class Facility(BaseModel):
    """A whole facility file."""

    model_config = ConfigDict(extra="forbid")

    facility: str = Field(pattern=r"^[A-Za-z0-9_\-]+$")
    description: str = ""
    simulators: dict[str, SimulatorSpec] = {}
    servers: dict[str, ServerSpec] = {}


def topology_problems(facility: Facility, base: Path) -> list[tuple[list[Any], str]]:
    """What the schema alone cannot see: names, known servers and classes, each class's properties."""
    classes = all_classes()
    problems: list[tuple[list[Any], str]] = []
    seen: dict[str, str] = {}
    for server, spec in facility.servers.items():
        if not SERVER_NAME.match(server):
            problems.append((["servers", server], "a server is named Executable/instance, e.g. TextDevice/hv"))
            continue
        executable = server.split("/")[0]
        kind = SERVERS.get(executable)
        if kind is None:
            known = ", ".join(sorted(SERVERS))
            problems.append((["servers", server], f"unknown device server {executable!r} (known: {known})"))
            continue
        for device, dev in spec.devices.items():
            where: list[Any] = ["servers", server, "devices", device]
            if not DEVICE_NAME.match(device):
                problems.append((where, "a device name is domain/family/member in lower case"))
            if device in seen:
                problems.append((where, f"device also declared in server {seen[device]}"))
            seen[device] = server
            if dev.device_class not in classes:
                known = ", ".join(sorted(classes))
                problems.append((where + ["class"], f"unknown device class {dev.device_class!r} (known: {known})"))
            elif dev.device_class not in kind.classes:
                problems.append(
                    (where + ["class"], f"{dev.device_class} is not served by {executable} (it serves {', '.join(kind.classes)})")
                )
            elif (check := kind.checks.get(dev.device_class)) is not None:
                props = {k: as_strings(v) for k, v in dev.properties.items()}
                for message in check(props, base):
                    key, _, text = message.partition(": ")
                    problems.append((where + key.split("."), text))
    return problems


def load_facility(path: Path | str) -> Facility:
    """Read and validate a facility file; relative paths inside it start at its folder."""
    path = Path(path)
    facility = load_yaml_model(path, Facility)
    problems = topology_problems(facility, path.resolve().parent)
    if problems:
        raise problems_at(path, problems)
    return facility


def facility_dict(facility: Facility) -> dict[str, Any]:
    """The facility as plain data, in the file's own key names."""
    return facility.model_dump(by_alias=True, exclude_defaults=True)


__all__ = ["ConfigFileError", "Facility", "load_facility", "as_strings", "facility_dict"]
