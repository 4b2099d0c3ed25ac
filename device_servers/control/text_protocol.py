"""Protocol files: a text-protocol device described in YAML, in the spirit of EPICS StreamDevice.

A protocol file says, for each attribute, what to send, what reply to
expect and how to turn it into a value; for each command, what to send. It
describes a *kind* of hardware; where one unit of it lives (host and port,
or the program to run) is a device property. See ``docs/text-devices.md``.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from device_servers.common.device import ReplyError

ValueType = Literal["float", "int", "bool", "str"]

NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
DEFAULT_REPLY = {"float": NUMBER, "int": r"[-+]?\d+", "bool": r"[01]", "str": r".*"}
TANGO_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def _fields(template: str) -> set[str]:
    try:
        return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:
        raise ValueError(f"bad template {template!r}: {exc}") from exc


def _check_template(template: str, allowed: set[str]) -> str:
    unknown = _fields(template) - allowed
    if unknown:
        raise ValueError(
            f"template {template!r} uses {', '.join(sorted('{' + u + '}' for u in unknown))}; "
            f"allowed here: {', '.join(sorted('{' + a + '}' for a in allowed)) or 'none'}"
        )
    return template


def _check_regex(pattern: str) -> str:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"bad regular expression {pattern!r}: {exc}") from exc
    return pattern


class AttributeSpec(BaseModel):
    """One attribute (or, with ``per_channel``, one per channel) of a text-protocol device."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Tango attribute name; may use {ch} with per_channel")
    per_channel: bool = False
    type: ValueType = "float"
    size: int | None = Field(None, ge=1, description="a spectrum of this many separated values")
    query: str
    reply: str | None = Field(None, description="regex; group 'value' (or the whole match) is the value")
    element: int | str | None = Field(None, description="index into a separated reply, may be '{ch}'")
    separator: str = ","
    mask: int | None = Field(None, ge=1, description="bool from these bits of an integer reply")
    write: str | dict[str, str] | None = None
    write_reply: str = "OK"
    period: float | None = Field(None, gt=0)
    unit: str = ""
    label: str | None = None
    description: str = ""
    format: str | None = None
    min: float | None = None
    max: float | None = None
    min_alarm: float | None = None
    max_alarm: float | None = None
    min_warning: float | None = None
    max_warning: float | None = None
    abs_change: float | None = Field(None, gt=0)
    rel_change: float | None = Field(None, gt=0)
    archive_abs_change: float | None = Field(None, gt=0)
    archive_rel_change: float | None = Field(None, gt=0)

    @field_validator("reply", "write_reply")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        return None if value is None else _check_regex(value)

    @model_validator(mode="after")
    def _consistent(self) -> AttributeSpec:
        keys = {"ch"} if self.per_channel else set()
        _check_template(self.name, keys)
        _check_template(self.query, keys)
        if isinstance(self.element, str):
            _check_template(self.element, keys)
        if isinstance(self.write, str):
            _check_template(self.write, keys | {"value"})
        elif isinstance(self.write, dict):
            if self.type != "bool" or set(self.write) != {"true", "false"}:
                raise ValueError("a write given per value must be a bool attribute with keys true and false")
            for template in self.write.values():
                _check_template(template, keys)
        if self.mask is not None and self.type != "bool":
            raise ValueError("mask only makes sense for a bool attribute")
        if self.size is not None and self.write is not None:
            raise ValueError("spectrum attributes are read-only here")
        if self.min is not None and self.max is not None and self.min >= self.max:
            raise ValueError(f"min ({self.min}) must be below max ({self.max})")
        return self


class CommandSpec(BaseModel):
    """One command: a request template and the reply that means success."""

    model_config = ConfigDict(extra="forbid")

    name: str
    argument: Literal["none", "int", "float", "str"] = "none"
    argument_range: tuple[float, float] | None = None
    send: str
    reply: str = "OK"
    returns: bool = Field(False, description="return the reply to the caller")
    description: str = ""

    @field_validator("reply")
    @classmethod
    def _regex(cls, value: str) -> str:
        return _check_regex(value)

    @model_validator(mode="after")
    def _consistent(self) -> CommandSpec:
        if not TANGO_NAME.match(self.name):
            raise ValueError(f"{self.name!r} is not a valid Tango command name")
        _check_template(self.send, set() if self.argument == "none" else {"arg"})
        return self


class ProtocolSpec(BaseModel):
    """A whole protocol file."""

    model_config = ConfigDict(extra="forbid")

    description: str = ""
    transport: Literal["tcp", "command"] = "tcp"
    terminator: str = "\n"
    timeout: float = Field(1.0, gt=0)
    period: float = Field(1.0, gt=0, description="default polling period (s)")
    identify: str | None = Field(None, description="request sent on connect; its reply is Identity")
    error_reply: str = Field(r"ERR\b\s*(?P<message>.*)", description="regex of the hardware's refusals")
    channels: int = Field(0, ge=0)
    attributes: list[AttributeSpec]
    commands: list[CommandSpec] = []

    @field_validator("error_reply")
    @classmethod
    def _regex(cls, value: str) -> str:
        return _check_regex(value)

    @model_validator(mode="after")
    def _consistent(self) -> ProtocolSpec:
        if any(a.per_channel for a in self.attributes) and self.channels == 0:
            raise ValueError("per_channel attributes need 'channels' (how many the hardware has)")
        seen: set[str] = set()
        for attr in expand(self):
            if not TANGO_NAME.match(attr.name):
                raise ValueError(f"{attr.name!r} is not a valid Tango attribute name")
            if attr.name.lower() in seen | {"state", "status", "heartbeat", "identity"}:
                raise ValueError(f"attribute {attr.name!r} is declared twice (or is reserved)")
            seen.add(attr.name.lower())
        names = [c.name.lower() for c in self.commands]
        if len(set(names)) != len(names):
            raise ValueError("a command name is declared twice")
        return self


@dataclass(frozen=True)
class ProtocolAttribute:
    """An attribute of one device, its templates filled in for its channel."""

    name: str
    spec: AttributeSpec
    query: str
    element: int | None
    channel: int | None

    @property
    def writable(self) -> bool:
        return self.spec.write is not None

    def empty(self) -> Any:
        """A value of the right type to send along with INVALID quality."""
        zero: Any = {"float": 0.0, "int": 0, "bool": False, "str": ""}[self.spec.type]
        return [zero] * self.spec.size if self.spec.size else zero

    def parse(self, reply: str, error_reply: re.Pattern[str]) -> Any:
        """The value in ``reply``; ReplyError if the hardware refused or the reply makes no sense."""
        refused = error_reply.fullmatch(reply.strip())
        if refused:
            message = refused.groupdict().get("message") or reply
            raise ReplyError(f"{self.query!r} refused: {message}")
        text = reply.strip()
        if self.element is not None:
            parts = text.split(self.spec.separator)
            if self.element >= len(parts):
                raise ReplyError(f"reply {_short(reply)} to {self.query!r} has no element {self.element}")
            text = parts[self.element].strip()
        if self.spec.size:
            parts = [p.strip() for p in text.split(self.spec.separator)]
            if len(parts) != self.spec.size:
                raise ReplyError(
                    f"reply {_short(reply)} to {self.query!r} has {len(parts)} values, expected {self.spec.size}"
                )
            return [self._convert(p, reply) for p in parts]
        return self._convert(text, reply)

    def _convert(self, text: str, reply: str) -> Any:
        spec = self.spec
        pattern = spec.reply or (DEFAULT_REPLY["int"] if spec.mask else DEFAULT_REPLY[spec.type])
        match = re.fullmatch(pattern, text)
        if match is None:
            raise ReplyError(f"reply {_short(reply)} to {self.query!r} is not a {spec.type}")
        value = match.groupdict().get("value", match.group(0))
        try:
            if spec.mask:
                return bool(int(value) & spec.mask)
            if spec.type == "float":
                return float(value)
            if spec.type == "int":
                return int(value)
            if spec.type == "bool":
                return value.strip().lower() in ("1", "true", "on", "yes")
        except ValueError as exc:
            raise ReplyError(f"reply {_short(reply)} to {self.query!r} is not a {spec.type}") from exc
        return value

    def write_request(self, value: Any) -> str:
        write = self.spec.write
        if isinstance(write, dict):
            return write["true" if value else "false"].format(ch=self.channel)
        assert write is not None
        return write.format(ch=self.channel, value=value)


def expand(spec: ProtocolSpec) -> list[ProtocolAttribute]:
    """Every attribute of a device, per-channel ones once per channel."""
    out = []
    for attr in spec.attributes:
        channels: list[int | None] = list(range(spec.channels)) if attr.per_channel else [None]
        for ch in channels:
            element = attr.element
            if isinstance(element, str):
                element = int(element.format(ch=ch))
            out.append(
                ProtocolAttribute(
                    name=attr.name.format(ch=ch),
                    spec=attr,
                    query=attr.query.format(ch=ch),
                    element=element,
                    channel=ch,
                )
            )
    return out


def _short(reply: str) -> str:
    return repr(reply if len(reply) <= 40 else reply[:37] + "...")
