"""TextDevice: any text-protocol hardware, its attributes and commands declared in a protocol file.

One Tango class serves every telnet/SCPI-style instrument and every
command-line utility: the protocol file (``ProtocolFile``) declares the
attributes and commands, the device properties say where this unit is
(``Host`` and ``Port`` for TCP, ``Program`` for a local tool).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import tango
from tango import AttrWriteType
from tango.server import attribute, command, device_property

from device_servers.common.device import DcsDevice, Poll, ReplyError, device_error
from device_servers.common.link import CommandLineLink, HardwareLink, QueryLink, TcpLineLink
from device_servers.common.serve import serve
from device_servers.common.yamlfile import load_yaml_model
from device_servers.control.text_protocol import (
    CommandSpec,
    ProtocolAttribute,
    ProtocolSpec,
    expand,
)

log = logging.getLogger(__name__)

TANGO_TYPES: dict[str, Any] = {"float": float, "int": int, "bool": bool, "str": str}
ARGUMENT_TYPES: dict[str, Any] = {"none": None, "int": int, "float": float, "str": str}


def load_protocol(path: str | Path) -> ProtocolSpec:
    """Read and validate a protocol file (raises ConfigFileError naming file, line and key)."""
    return load_yaml_model(path, ProtocolSpec)


class TextDevice(DcsDevice):
    """A text-protocol instrument (TCP line protocol or a command-line tool), declared in YAML."""

    ProtocolFile = device_property(dtype=str, doc="Protocol file (YAML); relative paths start at the server's working directory")
    Host = device_property(dtype=str, default_value="127.0.0.1", doc="Instrument host (tcp transport)")
    Port = device_property(dtype=int, default_value=0, doc="Instrument TCP port (tcp transport)")
    Program = device_property(dtype=(str,), default_value=[], doc="Tool and leading arguments (command transport)")
    PollPeriod = device_property(dtype=float, default_value=0.0, doc="Overrides the protocol's default period when > 0 (s)")

    def init_device(self) -> None:
        self.protocol: ProtocolSpec | None = None
        self.attributes_by_name: dict[str, ProtocolAttribute] = {}
        self._replies: dict[str, str] = {}
        super().init_device()

    def create_link(self) -> HardwareLink:
        protocol = load_protocol(self.ProtocolFile or "")
        self.protocol = protocol
        self._error_reply = re.compile(protocol.error_reply)
        self.attributes_by_name = {a.name: a for a in expand(protocol)}
        link: QueryLink
        if protocol.transport == "tcp":
            if not self.Port:
                raise ValueError("property Port is not set (the instrument's TCP port)")
            link = TcpLineLink(self.Host, self.Port, protocol.terminator, protocol.timeout)
        else:
            if not self.Program:
                raise ValueError("property Program is not set (the command-line tool to run)")
            link = CommandLineLink(self.Program, protocol.timeout)
        default_period = self.PollPeriod if self.PollPeriod > 0 else protocol.period
        for attr in self.attributes_by_name.values():
            self.add_poll(
                Poll(
                    name=attr.name,
                    period=attr.spec.period or default_period,
                    read=lambda attr=attr: self._read(attr),
                    empty=attr.empty(),
                )
            )
        return link

    def create_dynamic_attributes(self) -> None:
        for attr in self.attributes_by_name.values():
            self.add_attribute(self._tango_attribute(attr))
        if self.protocol is not None:
            for spec in self.protocol.commands:
                self.add_command(self._tango_command(spec), True)

    # ------------------------------------------------------------------ hardware
    def begin_poll_cycle(self) -> None:
        # Attributes due together that send the same request share one reply (e.g. "VMON? ALL").
        self._replies = {}

    def on_connected(self) -> None:
        if self.protocol is not None and self.protocol.identify:
            self._identity = self._query(self.protocol.identify)

    def _query(self, request: str) -> str:
        assert isinstance(self.link, QueryLink)
        return self.link.query(request)

    def _read(self, attr: ProtocolAttribute) -> Any:
        reply = self._replies.get(attr.query)
        if reply is None:
            reply = self._replies[attr.query] = self._query(attr.query)
        return attr.parse(reply, self._error_reply)

    def _expect(self, request: str, expected: str) -> str:
        reply = self._query(request)
        refused = self._error_reply.fullmatch(reply.strip())
        if refused:
            raise ReplyError(refused.groupdict().get("message") or reply)
        if not re.fullmatch(expected, reply.strip()):
            raise ReplyError(f"unexpected reply {reply!r} to {request!r} (expected {expected!r})")
        return reply

    # ------------------------------------------------------------------ Tango side
    def _tango_attribute(self, attr: ProtocolAttribute) -> attribute:
        spec = attr.spec
        dtype: Any = TANGO_TYPES[spec.type]
        options: dict[str, Any] = {
            "name": attr.name,
            "dtype": (dtype,) if spec.size else dtype,
            "access": AttrWriteType.READ_WRITE if attr.writable else AttrWriteType.READ,
            "fget": self.read_polled,
            "unit": spec.unit,
            "doc": spec.description,
        }
        if spec.size:
            options["max_dim_x"] = spec.size
        if attr.writable:
            options["fset"] = self._write
        if spec.label:
            options["label"] = spec.label.format(ch=attr.channel)
        if spec.format:
            options["format"] = spec.format
        for ours, tangos in (
            ("min", "min_value"),
            ("max", "max_value"),
            ("min_alarm", "min_alarm"),
            ("max_alarm", "max_alarm"),
            ("min_warning", "min_warning"),
            ("max_warning", "max_warning"),
            ("abs_change", "abs_change"),
            ("rel_change", "rel_change"),
            ("archive_abs_change", "archive_abs_change"),
            ("archive_rel_change", "archive_rel_change"),
        ):
            value = getattr(spec, ours)
            if value is not None:
                # Tango parses these as the attribute's own type: an int attribute wants "5", not "5.0".
                options[tangos] = str(int(value)) if spec.type == "int" and float(value).is_integer() else str(value)
        if spec.type in ("float", "int") and spec.abs_change is None and spec.rel_change is None:
            # Tango wants a criterion to detect changes; without one declared, any change counts.
            options["abs_change"] = "1" if spec.type == "int" else "1e-9"
            options.setdefault("archive_abs_change", options["abs_change"])
        return attribute(**options)

    def _write(self, tango_attr: tango.WAttribute) -> None:
        attr = self.attributes_by_name[tango_attr.get_name()]
        value = tango_attr.get_write_value()
        request = attr.write_request(value)
        self.hardware_call(
            f"write {attr.name} = {value!r}", lambda: self._expect(request, attr.spec.write_reply)
        )
        # The hardware acknowledged; the poller reads the value back next (within a millisecond or so),
        # which keeps the request thread to one round trip.
        self.poll_soon(attr.name)

    def _tango_command(self, spec: CommandSpec) -> command:
        # pytango calls a dynamic command's function with the argument only: close over the device.
        def run_command(argument: Any) -> str:
            return self._run_command(spec, argument)

        def run_void() -> str:
            return self._run_command(spec, None)

        run_command.__name__ = run_void.__name__ = spec.name
        takes = ARGUMENT_TYPES[spec.argument]
        return command(
            f=run_command if takes is not None else run_void,
            dtype_in=takes,
            dtype_out=str,
            doc_in=spec.description,
            doc_out="the instrument's reply",
        )

    def _run_command(self, spec: CommandSpec, argument: Any) -> str:
        if spec.argument_range is not None and argument is not None:
            low, high = spec.argument_range
            if not low <= argument <= high:
                raise device_error(
                    "DCS_ArgumentOutOfRange",
                    f"{self.get_name()}: {spec.name}({argument}) refused: argument must be between {low:g} and {high:g}",
                    spec.name,
                )
        request = spec.send.format(arg=argument)
        reply = self.hardware_call(f"{spec.name}({'' if argument is None else argument})", lambda: self._expect(request, spec.reply))
        return reply if spec.returns else "OK"

    @attribute(dtype=str, doc="What the instrument says it is (the reply to the protocol's identify request)")
    def Identity(self) -> str:
        return self._identity


def main(args: list[str] | None = None) -> None:
    """Console script ``TextDevice <instance>``."""
    serve((TextDevice,), "TextDevice", args)


if __name__ == "__main__":
    main()
