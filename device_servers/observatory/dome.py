"""Dome (``obs/dome/1``): the dome and its shutter, an ASCOM Alpaca dome."""

from __future__ import annotations

from enum import IntEnum
from typing import Any

from tango import DevState
from tango.server import attribute, command

from device_servers.common.serve import serve
from device_servers.observatory.alpaca_device import AlpacaDevice


class ShutterStatus(IntEnum):
    """Alpaca's ShutterState values."""

    Open = 0
    Closed = 1
    Opening = 2
    Closing = 3
    Error = 4


class Dome(AlpacaDevice):
    """The dome: azimuth, park and home, and the shutter."""

    DEVICE_TYPE = "dome"
    MEMBERS = (
        ("Azimuth", "azimuth", 0.0),
        ("Slewing", "slewing", False),
        ("AtHome", "athome", False),
        ("AtPark", "atpark", False),
        ("ShutterStatus", "shutterstatus", int(ShutterStatus.Error)),
    )

    @attribute(dtype=float, unit="deg", format="%.2f", doc="Dome azimuth", abs_change="0.01")
    def Azimuth(self) -> tuple[Any, float, Any]:
        return self.polled("Azimuth")

    @attribute(dtype=bool, doc="The dome is rotating")
    def Slewing(self) -> tuple[Any, float, Any]:
        return self.polled("Slewing")

    @attribute(dtype=bool, doc="At the home position")
    def AtHome(self) -> tuple[Any, float, Any]:
        return self.polled("AtHome")

    @attribute(dtype=bool, doc="Parked")
    def AtPark(self) -> tuple[Any, float, Any]:
        return self.polled("AtPark")

    @attribute(dtype=ShutterStatus, doc="Open, Closed, Opening, Closing or Error")
    def ShutterStatus(self) -> tuple[Any, float, Any]:
        return self.polled("ShutterStatus")

    @command(doc_in="Open the shutter (returns at once; watch ShutterStatus)")
    def OpenShutter(self) -> None:
        self.alpaca_action("OpenShutter", "openshutter")

    @command(doc_in="Close the shutter (returns at once; watch ShutterStatus)")
    def CloseShutter(self) -> None:
        self.alpaca_action("CloseShutter", "closeshutter")

    @command(dtype_in=float, doc_in="Azimuth (deg)")
    def SlewToAzimuth(self, azimuth: float) -> None:
        self.alpaca_action("SlewToAzimuth", "slewtoazimuth", Azimuth=azimuth)

    @command(doc_in="Find the home position")
    def FindHome(self) -> None:
        self.alpaca_action("FindHome", "findhome")

    @command(doc_in="Park the dome")
    def Park(self) -> None:
        self.alpaca_action("Park", "park")

    @command(doc_in="Stop the dome and the shutter at once")
    def AbortSlew(self) -> None:
        self.alpaca_action("AbortSlew", "abortslew")

    def refine_condition(self, state: DevState, status: str) -> tuple[DevState, str]:
        if state != DevState.ON:
            return state, status
        shutter = ShutterStatus(self.value("ShutterStatus"))
        moving = bool(self.value("Slewing")) or shutter in (ShutterStatus.Opening, ShutterStatus.Closing)
        self.set_moving(moving)
        text = f"shutter {shutter.name.lower()}, azimuth {self.value('Azimuth'):.1f} deg" + (", rotating" if self.value("Slewing") else "")
        if shutter == ShutterStatus.Error:
            return DevState.FAULT, text
        if moving:
            return DevState.MOVING, text
        return (DevState.OPEN if shutter == ShutterStatus.Open else DevState.CLOSE), text


def main(args: list[str] | None = None) -> None:
    """Console script ``Dome <instance>``."""
    serve((Dome,), "Dome", args)


if __name__ == "__main__":
    main()
