"""Bring a Tango database in line with a facility file, and write it back out.

Like dsconfig: read the live database, compute the difference to the file
(servers, devices, properties, attribute properties, start-up levels),
show it, and write it only when asked. Applying the same file twice finds
nothing to do. DCS remembers which servers a facility owns (a free property
``DCS/facility.<name>``), so removing a server from the file removes it from
the database, while servers that other tools registered are never touched.
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass, field
from typing import Any, Literal

import tango

from db.facility import Facility, as_strings, facility_dict

FREE_OBJECT = "DCS"

# {device: {"class": str, "properties": {name: [str]}, "attributes": {attr: {prop: [str]}}}}
DeviceState = dict[str, Any]


@dataclass
class ServerState:
    """What the database holds (or should hold) for one server."""

    level: int
    devices: dict[str, DeviceState] = field(default_factory=dict)


@dataclass(frozen=True)
class Change:
    """One difference between the file and the database."""

    action: Literal["add", "change", "remove"]
    kind: Literal["server", "device", "property", "attribute property", "level"]
    name: str
    detail: str = ""

    def __str__(self) -> str:
        mark = {"add": "+", "change": "~", "remove": "-"}[self.action]
        return f"{mark} {self.kind} {self.name}" + (f": {self.detail}" if self.detail else "")


def desired_state(facility: Facility) -> dict[str, ServerState]:
    """The database content a facility file asks for."""
    out: dict[str, ServerState] = {}
    for server, spec in facility.servers.items():
        devices = {
            name: {
                "class": dev.device_class,
                "properties": {k: as_strings(v) for k, v in dev.properties.items()},
                "attributes": {
                    attr: {p: as_strings(v) for p, v in props.items()} for attr, props in dev.attributes.items()
                },
            }
            for name, dev in spec.devices.items()
        }
        out[server] = ServerState(spec.level, devices)
    return out


def managed_servers(db: tango.Database, facility_name: str) -> list[str]:
    """The servers this facility wrote last time it was applied."""
    meta = read_metadata(db, facility_name)
    return list(meta.get("servers", [])) if meta else []


def read_metadata(db: tango.Database, facility_name: str) -> dict[str, Any] | None:
    datum = db.get_property(FREE_OBJECT, [f"facility.{facility_name}"])[f"facility.{facility_name}"]
    if not datum:
        return None
    return json.loads("\n".join(datum))


def facilities_in(db: tango.Database) -> list[str]:
    """Names of the facilities applied to this database."""
    names = db.get_object_property_list(FREE_OBJECT, "facility.*")
    return sorted(n.removeprefix("facility.") for n in names.value_string)


def live_state(db: tango.Database, servers: list[str]) -> dict[str, ServerState]:
    """What the database holds for these servers (those that exist)."""
    existing = {s.lower(): s for s in db.get_server_list("*").value_string}
    out: dict[str, ServerState] = {}
    for wanted in servers:
        server = existing.get(wanted.lower())
        if server is None:
            continue
        pairs = list(db.get_device_class_list(server).value_string)
        devices: dict[str, DeviceState] = {}
        for device, cls in zip(pairs[::2], pairs[1::2], strict=True):
            if device.lower().startswith("dserver/"):
                continue
            devices[device.lower()] = {
                "class": cls,
                "properties": _device_properties(db, device),
                "attributes": _attribute_properties(db, device),
            }
        out[wanted] = ServerState(db.get_server_info(server).level, devices)
    return out


def _device_properties(db: tango.Database, device: str) -> dict[str, list[str]]:
    names = [n for n in db.get_device_property_list(device, "*").value_string if not n.startswith("__")]
    if not names:
        return {}
    return {k: list(v) for k, v in db.get_device_property(device, names).items()}


def _attribute_properties(db: tango.Database, device: str) -> dict[str, dict[str, list[str]]]:
    found = tango.StdStringVector()
    db.get_device_attribute_list(device, found)
    attrs = list(found)
    if not attrs:
        return {}
    out: dict[str, dict[str, list[str]]] = {}
    for attr, props in db.get_device_attribute_property(device, attrs).items():
        kept = {p: list(v) for p, v in props.items() if not p.startswith("__")}
        if kept:
            out[attr] = kept
    return out


def diff(desired: dict[str, ServerState], live: dict[str, ServerState], previous: list[str]) -> list[Change]:
    """Every change that would make ``live`` equal ``desired``."""
    changes: list[Change] = []
    for server, want in desired.items():
        have = live.get(server)
        if have is None:
            changes.append(Change("add", "server", server, f"level {want.level}"))
            have = ServerState(want.level)
        elif have.level != want.level:
            changes.append(Change("change", "level", server, f"{have.level} -> {want.level}"))
        for device, dev in want.devices.items():
            old = have.devices.get(device)
            if old is None or old["class"] != dev["class"]:
                if old is not None:
                    changes.append(Change("remove", "device", device, f"class {old['class']}"))
                changes.append(Change("add", "device", device, f"{dev['class']} in {server}"))
                old = {"properties": {}, "attributes": {}}
            changes += _diff_properties(device, dev["properties"], old["properties"])
            for attr in sorted(set(dev["attributes"]) | set(old["attributes"])):
                changes += _diff_properties(
                    f"{device}/{attr}",
                    dev["attributes"].get(attr, {}),
                    old["attributes"].get(attr, {}),
                    kind="attribute property",
                )
        for device in have.devices:
            if device not in want.devices:
                changes.append(Change("remove", "device", device, f"from {server}"))
    for server in previous:
        if server not in desired and server in live:
            changes.append(Change("remove", "server", server, f"{len(live[server].devices)} devices"))
    return changes


def _diff_properties(
    owner: str, want: dict[str, list[str]], have: dict[str, list[str]], kind: Literal["property", "attribute property"] = "property"
) -> list[Change]:
    changes = []
    for name in sorted(set(want) | set(have)):
        if name not in have:
            changes.append(Change("add", kind, f"{owner}/{name}", _show(want[name])))
        elif name not in want:
            changes.append(Change("remove", kind, f"{owner}/{name}", _show(have[name])))
        elif want[name] != have[name]:
            changes.append(Change("change", kind, f"{owner}/{name}", f"{_show(have[name])} -> {_show(want[name])}"))
    return changes


def _show(value: list[str]) -> str:
    return value[0] if len(value) == 1 else "[" + ", ".join(value) + "]"


def plan(db: tango.Database, facility: Facility) -> list[Change]:
    """The changes applying ``facility`` would make (nothing is written)."""
    previous = managed_servers(db, facility.facility)
    desired = desired_state(facility)
    live = live_state(db, sorted(set(desired) | set(previous)))
    changes = diff(desired, live, previous)
    meta = read_metadata(db, facility.facility)
    if meta != _metadata(facility):
        # Simulators and the description live in the database too, so that `dcs dump` gives the file back.
        changes.append(Change("change" if meta else "add", "property", f"{FREE_OBJECT}/facility.{facility.facility}", "facility metadata"))
    return changes


def apply(db: tango.Database, facility: Facility) -> list[Change]:
    """Write the difference to the database; returns what was changed."""
    previous = managed_servers(db, facility.facility)
    desired = desired_state(facility)
    live = live_state(db, sorted(set(desired) | set(previous)))
    changes = diff(desired, live, previous)
    for server in previous:
        if server not in desired and server in live:
            db.delete_server(server)
    for server, want in desired.items():
        have = live.get(server, ServerState(want.level))
        for device, old in have.devices.items():
            if device not in want.devices or old["class"] != want.devices[device]["class"]:
                db.delete_device(device)
        for device, dev in want.devices.items():
            old = have.devices.get(device)
            if old is None or old["class"] != dev["class"]:
                info = tango.DbDevInfo()
                info.name, info._class, info.server = device, dev["class"], server
                db.add_device(info)
                old = {"properties": {}, "attributes": {}}
            _write_properties(db, device, dev, old)
        if server not in live or live[server].level != want.level:
            info = tango.DbServerInfo()
            info.name, info.host, info.mode, info.level = server, socket.gethostname(), 1, want.level
            db.put_server_info(info)
    meta = _metadata(facility)
    if read_metadata(db, facility.facility) != meta:
        db.put_property(FREE_OBJECT, {f"facility.{facility.facility}": [json.dumps(meta)]})
    return changes


def _write_properties(db: tango.Database, device: str, want: DeviceState, have: DeviceState) -> None:
    put = {k: v for k, v in want["properties"].items() if have["properties"].get(k) != v}
    gone = [k for k in have["properties"] if k not in want["properties"]]
    if put:
        db.put_device_property(device, put)
    if gone:
        db.delete_device_property(device, gone)
    put_attr: dict[str, dict[str, list[str]]] = {}
    gone_attr: dict[str, list[str]] = {}
    for attr in set(want["attributes"]) | set(have["attributes"]):
        w, h = want["attributes"].get(attr, {}), have["attributes"].get(attr, {})
        if changed := {p: v for p, v in w.items() if h.get(p) != v}:
            put_attr[attr] = changed
        if removed := [p for p in h if p not in w]:
            gone_attr[attr] = removed
    if put_attr:
        db.put_device_attribute_property(device, put_attr)
    if gone_attr:
        db.delete_device_attribute_property(device, gone_attr)


def _metadata(facility: Facility) -> dict[str, Any]:
    data = facility_dict(facility)
    return {
        "description": data.get("description", ""),
        "simulators": data.get("simulators", {}),
        "servers": sorted(facility.servers),
    }


def dump(db: tango.Database, facility_name: str) -> dict[str, Any]:
    """The live database as a facility file (plain data, ready for YAML)."""
    meta = read_metadata(db, facility_name)
    if meta is None:
        raise LookupError(
            f"no facility {facility_name!r} in this Tango database (known: {', '.join(facilities_in(db)) or 'none'})"
        )
    live = live_state(db, meta["servers"])
    out: dict[str, Any] = {"facility": facility_name}
    if meta["description"]:
        out["description"] = meta["description"]
    if meta["simulators"]:
        out["simulators"] = meta["simulators"]
    out["servers"] = {
        server: {
            "level": state.level,
            "devices": {
                device: _dump_device(dev) for device, dev in sorted(state.devices.items())
            },
        }
        for server, state in sorted(live.items())
    }
    return out


def _dump_device(dev: DeviceState) -> dict[str, Any]:
    out: dict[str, Any] = {"class": dev["class"]}
    if dev["properties"]:
        out["properties"] = {k: _natural(v) for k, v in sorted(dev["properties"].items())}
    if dev["attributes"]:
        out["attributes"] = {
            attr: {p: _natural(v) for p, v in sorted(props.items())} for attr, props in sorted(dev["attributes"].items())
        }
    return out


def _natural(value: list[str]) -> Any:
    """Tango's list of strings as a reader would write it in YAML: a scalar, a number where it is one."""
    items = [_number(v) for v in value]
    return items[0] if len(items) == 1 else items


def _number(text: str) -> Any:
    for convert in (int, float):
        try:
            number = convert(text)
        except ValueError:
            continue
        if str(number) == text:  # only where it reads back the same, so the round trip is exact
            return number
    return text
