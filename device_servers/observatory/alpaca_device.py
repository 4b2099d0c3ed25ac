"""The base of the Alpaca device servers: one ASCOM Alpaca device, polled member by member.

A subclass lists the Alpaca members it publishes (``MEMBERS``: attribute
name, Alpaca member, empty value) and declares the matching attributes; the
base polls them (faster while something moves), keeps ``Connected``,
``LastConnection`` and ``LastMaintenance`` (the seed's status list), and runs
actions through :meth:`alpaca_action`, which turns Alpaca errors into Tango
errors naming the device, the action and the cause.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, ClassVar

from tango.server import attribute, device_property

from device_servers.common.device import DcsDevice, Poll
from device_servers.observatory.alpaca_link import AlpacaLink


class AlpacaDevice(DcsDevice):
    """One device on an Alpaca server."""

    DEVICE_TYPE: ClassVar[str] = ""
    MEMBERS: ClassVar[tuple[tuple[str, str, Any], ...]] = ()  # (attribute, alpaca member, empty value)

    Host = device_property(dtype=str, default_value="127.0.0.1", doc="Alpaca server host")
    Port = device_property(dtype=int, default_value=11111, doc="Alpaca server port")
    DeviceNumber = device_property(dtype=int, default_value=0, doc="Alpaca device number")
    Timeout = device_property(dtype=float, default_value=2.0, doc="HTTP timeout per request (s)")
    PollPeriod = device_property(dtype=float, default_value=1.0, doc="Polling period while nothing moves (s)")
    MovingPeriod = device_property(dtype=float, default_value=0.2, doc="Polling period while something moves (s)")
    LastMaintenanceDate = device_property(dtype=str, default_value="", doc="Date of the last maintenance (status list)")

    def init_device(self) -> None:
        for name in ("Connected", "LastConnection", "LastMaintenance"):
            self.set_change_event(name, True, False)
            self.set_archive_event(name, True, False)
        super().init_device()
        self.publish("Connected", False)
        self.publish("LastConnection", "")
        self.publish("LastMaintenance", self.LastMaintenanceDate)

    def create_link(self) -> AlpacaLink:
        for name, member, empty in self.MEMBERS:
            self.add_poll(Poll(name, self.PollPeriod, read=lambda member=member: self.alpaca().get(member), empty=empty))
        return AlpacaLink(self.Host, self.Port, self.DEVICE_TYPE, self.DeviceNumber, self.Timeout)

    def alpaca(self) -> AlpacaLink:
        assert isinstance(self.link, AlpacaLink)
        return self.link

    @attribute(dtype=bool, doc="The Alpaca device is connected")
    def Connected(self) -> tuple[Any, float, Any]:
        return self.polled("Connected")

    @attribute(dtype=str, doc="When the connection was last established (UTC)")
    def LastConnection(self) -> tuple[Any, float, Any]:
        return self.polled("LastConnection")

    @attribute(dtype=str, doc="Date of the last maintenance")
    def LastMaintenance(self) -> tuple[Any, float, Any]:
        return self.polled("LastMaintenance")

    def on_connected(self) -> None:
        self.publish("Connected", True)
        self.publish("LastConnection", dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))

    def on_disconnected(self, reason: str) -> None:
        self.publish("Connected", False)

    def alpaca_action(self, action: str, member: str, **params: Any) -> Any:
        """PUT an Alpaca member from a command; every attribute is read again right after."""
        result = self.hardware_call(action, lambda: self.alpaca().put(member, **params))
        self._moving = None  # whatever it was: read everything again now
        self.set_moving(True)
        return result

    def set_moving(self, moving: bool) -> None:
        """Poll at MovingPeriod while something moves, at PollPeriod otherwise."""
        if moving == getattr(self, "_moving", None):
            return
        self._moving = moving
        period = self.MovingPeriod if moving else self.PollPeriod
        for name, _, _ in self.MEMBERS:
            self._polls[name].period = period
        if moving:  # an action just started: look at once, then at the moving period
            self.poll_soon(*(name for name, _, _ in self.MEMBERS))

    def value(self, name: str) -> Any:
        return self.polled(name)[0]
