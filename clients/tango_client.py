"""Thin helpers over pytango for the CLI, the dashboard and scripts: read, write, run, watch.

Values typed on a command line are converted to the attribute's or
command's Tango type here, and Tango errors become one readable sentence.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import tango

NUMERIC_INT = {
    tango.CmdArgType.DevShort, tango.CmdArgType.DevLong, tango.CmdArgType.DevLong64,
    tango.CmdArgType.DevUShort, tango.CmdArgType.DevULong, tango.CmdArgType.DevULong64,
    tango.CmdArgType.DevUChar,
}  # fmt: skip
NUMERIC_FLOAT = {tango.CmdArgType.DevFloat, tango.CmdArgType.DevDouble}


class ClientError(Exception):
    """A request that failed; the message is meant for the person who typed it."""


@dataclass
class Reading:
    """An attribute value as the CLI shows it."""

    device: str
    attribute: str
    value: Any
    quality: str
    time: float
    unit: str = ""
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        value = self.value.tolist() if isinstance(self.value, np.ndarray) else self.value
        if isinstance(value, tango.DevState):
            value = str(value)
        return {
            "device": self.device, "attribute": self.attribute, "value": value,
            "quality": self.quality, "time": self.time, "unit": self.unit, "error": self.error,
        }  # fmt: skip


def error_text(exc: tango.DevFailed) -> str:
    """The most specific description in a DevFailed, with its reason."""
    first = exc.args[0]
    return f"{first.desc.strip()} [{first.reason}]"


def split_attribute(full: str) -> tuple[str, str]:
    """``domain/family/member/Attribute`` into device and attribute names."""
    parts = full.strip("/").split("/")
    if len(parts) != 4:
        raise ClientError(f"{full!r} is not device/attribute (domain/family/member/Attribute)")
    return "/".join(parts[:3]), parts[3]


def proxy(device: str, timeout: float = 3.0) -> tango.DeviceProxy:
    try:
        dev = tango.DeviceProxy(device)
        dev.set_timeout_millis(int(timeout * 1000))
    except tango.DevFailed as exc:
        raise ClientError(f"{device}: {error_text(exc)}") from exc
    return dev


def _quality(q: tango.AttrQuality) -> str:
    return str(q).removeprefix("ATTR_")


def read(full: str) -> Reading:
    device, name = split_attribute(full)
    dev = proxy(device)
    try:
        value = dev.read_attribute(name)
        info = dev.get_attribute_config(name)
    except tango.DevFailed as exc:
        raise ClientError(f"{device}: cannot read {name}: {error_text(exc)}") from exc
    return _reading(device, name, value, "" if info.unit == "No unit" else info.unit, _labels(info))


def _labels(info: tango.AttributeInfoEx) -> list[str]:
    """An enum attribute's labels (its values are shown by name, as Tango tools do)."""
    return list(info.enum_labels) if info.data_type == tango.CmdArgType.DevEnum else []


def _reading(device: str, name: str, value: tango.DeviceAttribute, unit: str, labels: list[str] | None = None) -> Reading:
    invalid = value.quality == tango.AttrQuality.ATTR_INVALID
    shown = None if invalid else value.value
    if labels and shown is not None and 0 <= int(shown) < len(labels):
        shown = labels[int(shown)]
    return Reading(
        device=device,
        attribute=value.name or name,
        value=shown,
        quality=_quality(value.quality),
        time=value.time.totime(),
        unit=unit,
    )


def convert(text: str, data_type: tango.CmdArgType, spectrum: bool = False) -> Any:
    """Command-line text as a value of ``data_type`` (comma-separated for a spectrum)."""
    if spectrum:
        return [convert(part.strip(), data_type) for part in text.split(",")]
    try:
        if data_type in NUMERIC_INT:
            return int(text, 0)
        if data_type in NUMERIC_FLOAT:
            return float(text)
    except ValueError as exc:
        raise ClientError(f"{text!r} is not a number") from exc
    if data_type == tango.CmdArgType.DevBoolean:
        lowered = text.lower()
        if lowered in ("1", "true", "on", "yes"):
            return True
        if lowered in ("0", "false", "off", "no"):
            return False
        raise ClientError(f"{text!r} is not a boolean (use true/false, on/off or 1/0)")
    return text


def write(full: str, text: str) -> Reading:
    device, name = split_attribute(full)
    dev = proxy(device)
    try:
        info = dev.get_attribute_config(name)
    except tango.DevFailed as exc:
        raise ClientError(f"{device}: no attribute {name}: {error_text(exc)}") from exc
    if info.writable == tango.AttrWriteType.READ:
        raise ClientError(f"{device}/{name} is read-only")
    value = convert(text, info.data_type, info.data_format == tango.AttrDataFormat.SPECTRUM)
    try:
        written_at = time.time()
        dev.write_attribute(name, value)
        result = _read_back(dev, name, written_at)
    except tango.DevFailed as exc:
        limits = ""
        if exc.args[0].reason == "API_WAttrOutsideLimit":
            limits = f" (allowed: {info.min_value} to {info.max_value} {'' if info.unit == 'No unit' else info.unit})".replace(" )", ")")
        raise ClientError(f"{device}: write {name} = {text} refused: {error_text(exc)}{limits}") from exc
    unit = "" if info.unit == "No unit" else info.unit
    return _reading(device, name, result, unit)


def _read_back(dev: tango.DeviceProxy, name: str, written_at: float, wait: float = 1.0) -> tango.DeviceAttribute:
    """The first reading taken after the write (devices read back from the hardware just after)."""
    deadline = time.monotonic() + wait
    result = dev.read_attribute(name)
    while result.time.totime() < written_at and time.monotonic() < deadline:
        time.sleep(0.005)
        result = dev.read_attribute(name)
    return result


def run_command(device: str, name: str, text: str | None) -> Any:
    dev = proxy(device, timeout=10.0)
    try:
        info = dev.command_query(name)
    except tango.DevFailed as exc:
        raise ClientError(f"{device}: no command {name}: {error_text(exc)}") from exc
    argument = None
    if info.in_type != tango.CmdArgType.DevVoid:
        if text is None:
            raise ClientError(f"{device}/{name} needs an argument ({info.in_type_desc or info.in_type})")
        argument = convert(text, info.in_type)
    try:
        result = dev.command_inout(name, argument) if argument is not None else dev.command_inout(name)
    except tango.DevFailed as exc:
        raise ClientError(f"{device}: {name} failed: {error_text(exc)}") from exc
    return result


def watch(
    fulls: list[str],
    on_reading: Callable[[Reading], None],
    count: int | None = None,
    timeout: float | None = None,
) -> int:
    """Subscribe to change events of each attribute and call ``on_reading`` per event.

    Returns when ``count`` events have arrived or after ``timeout`` seconds
    (Ctrl-C also stops it); returns the number of events seen.
    """
    seen = 0
    subscriptions: list[tuple[tango.DeviceProxy, int]] = []

    # Events name attributes in lower case; show them as the user typed them.
    typed = {full.lower().strip("/"): split_attribute(full) for full in fulls}
    labels: dict[tuple[str, str], list[str]] = {}

    def callback(event: tango.EventData) -> None:
        nonlocal seen
        plain = event.attr_name.split("//")[-1].split("/", 1)[-1].lower()
        device, name = typed.get(plain) or split_attribute(plain)
        if event.err:
            on_reading(Reading(device, name, None, "ERROR", time.time(), error=event.errors[0].desc))
        else:
            reading = _reading(device, name, event.attr_value, "", labels.get((device, name)))
            reading.attribute = name
            on_reading(reading)
        seen += 1

    try:
        for full in fulls:
            device, name = split_attribute(full)
            dev = proxy(device)
            try:
                labels[(device, name)] = _labels(dev.get_attribute_config(name))
                subscriptions.append(
                    (dev, dev.subscribe_event(name, tango.EventType.CHANGE_EVENT, callback))
                )
            except tango.DevFailed as exc:
                raise ClientError(f"{device}: cannot watch {name}: {error_text(exc)}") from exc
        deadline = None if timeout is None else time.monotonic() + timeout
        while (count is None or seen < count) and (deadline is None or time.monotonic() < deadline):
            time.sleep(0.05)
    except KeyboardInterrupt:
        pass
    finally:
        for dev, event_id in subscriptions:
            try:
                dev.unsubscribe_event(event_id)
            except tango.DevFailed:
                pass
    return seen


# ---------------------------------------------------------------- helpers for status views (dcs daq, dcs obs)
def one_line(exc: tango.DevFailed) -> str:
    """A DevFailed's description on one line."""
    return " ".join(line.strip() for line in exc.args[0].desc.strip().splitlines() if line.strip())


def plain(value: Any) -> Any:
    """numpy arrays and tuples as lists, for tables and JSON."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    return value


def read_values(dev: tango.DeviceProxy, names: list[str]) -> tuple[dict[str, Any], str]:
    """Values by attribute (None when unreadable or INVALID), and why the device does not answer ("" when it does)."""
    try:
        values = dev.read_attributes(names)
    except tango.DevFailed as exc:
        return dict.fromkeys(names), one_line(exc)
    out = {}
    for name, value in zip(names, values, strict=True):
        invalid = value.has_failed or value.quality == tango.AttrQuality.ATTR_INVALID
        out[name] = None if invalid else plain(value.value)
    return out, ""


def state_and_status(dev: tango.DeviceProxy) -> tuple[str, str]:
    try:
        return str(dev.state()), dev.status()
    except tango.DevFailed as exc:
        return "DOWN", one_line(exc)


_ENUM_LABELS: dict[tuple[str, str], list[str]] = {}


def enum_label(dev: tango.DeviceProxy | None, attribute: str, value: Any) -> str | None:
    """An enum attribute's value as its label, from the attribute's own configuration (cached)."""
    if value is None:
        return None
    if dev is None:
        return str(int(value))
    key = (dev.dev_name(), attribute)
    if key not in _ENUM_LABELS:
        try:
            _ENUM_LABELS[key] = list(dev.get_attribute_config(attribute).enum_labels)
        except tango.DevFailed:
            return str(int(value))
    labels, number = _ENUM_LABELS[key], int(value)
    return labels[number] if 0 <= number < len(labels) else str(number)

