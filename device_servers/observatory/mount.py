"""Mount (``obs/mount/1``): the telescope mount, an ASCOM Alpaca telescope."""

from __future__ import annotations

from typing import Any

from tango import AttrWriteType, DevState
from tango.server import attribute, command

from device_servers.common.serve import serve
from device_servers.observatory.alpaca_device import AlpacaDevice


class Mount(AlpacaDevice):
    """The telescope mount: pointing, slews, tracking, park and home."""

    DEVICE_TYPE = "telescope"
    MEMBERS = (
        ("Slewing", "slewing", False),
        ("AtPark", "atpark", False),
        ("AtHome", "athome", False),
        ("Tracking", "tracking", False),
        ("RightAscension", "rightascension", 0.0),
        ("Declination", "declination", 0.0),
        ("Altitude", "altitude", 0.0),
        ("Azimuth", "azimuth", 0.0),
        ("SiderealTime", "siderealtime", 0.0),
    )

    @attribute(dtype=bool, doc="A slew is in progress")
    def Slewing(self) -> tuple[Any, float, Any]:
        return self.polled("Slewing")

    @attribute(dtype=bool, doc="Parked")
    def AtPark(self) -> tuple[Any, float, Any]:
        return self.polled("AtPark")

    @attribute(dtype=bool, doc="At the home position")
    def AtHome(self) -> tuple[Any, float, Any]:
        return self.polled("AtHome")

    @attribute(dtype=bool, access=AttrWriteType.READ_WRITE, doc="Sidereal tracking on")
    def Tracking(self) -> tuple[Any, float, Any]:
        return self.polled("Tracking")

    @Tracking.write
    def Tracking(self, on: bool) -> None:
        self.alpaca_action("Tracking", "tracking", Tracking=str(on).lower())

    @attribute(dtype=float, unit="h", format="%.6f", doc="Right ascension (hours)", abs_change="1e-6")
    def RightAscension(self) -> tuple[Any, float, Any]:
        return self.polled("RightAscension")

    @attribute(dtype=float, unit="deg", format="%.5f", doc="Declination", abs_change="1e-5")
    def Declination(self) -> tuple[Any, float, Any]:
        return self.polled("Declination")

    @attribute(dtype=float, unit="deg", format="%.4f", doc="Altitude above the horizon", abs_change="1e-4")
    def Altitude(self) -> tuple[Any, float, Any]:
        return self.polled("Altitude")

    @attribute(dtype=float, unit="deg", format="%.4f", doc="Azimuth (N=0, E=90)", abs_change="1e-4")
    def Azimuth(self) -> tuple[Any, float, Any]:
        return self.polled("Azimuth")

    @attribute(dtype=float, unit="h", format="%.6f", doc="Local apparent sidereal time", abs_change="1e-5")
    def SiderealTime(self) -> tuple[Any, float, Any]:
        return self.polled("SiderealTime")

    @attribute(dtype=float, unit="h", format="%.6f", doc="Hour angle: sidereal time minus right ascension, -12 to 12")
    def HourAngle(self) -> float:
        hours = (self.value("SiderealTime") - self.value("RightAscension")) % 24.0
        return hours - 24.0 if hours > 12.0 else hours

    @command(dtype_in=(float,), doc_in="[right ascension (h), declination (deg)]: slew, returns at once")
    def SlewToCoordinates(self, target: list[float]) -> None:
        ra, dec = _pair(target, "SlewToCoordinates needs [ra_hours, dec_degrees]")
        self.alpaca_action("SlewToCoordinates", "slewtocoordinatesasync", RightAscension=ra, Declination=dec)

    @command(dtype_in=(float,), doc_in="[azimuth (deg), altitude (deg)]: slew, returns at once")
    def SlewToAltAz(self, target: list[float]) -> None:
        az, alt = _pair(target, "SlewToAltAz needs [azimuth, altitude]")
        self.alpaca_action("SlewToAltAz", "slewtoaltazasync", Azimuth=az, Altitude=alt)

    @command(doc_in="Park the mount (returns at once)")
    def Park(self) -> None:
        self.alpaca_action("Park", "park")

    @command(doc_in="Leave the park position")
    def Unpark(self) -> None:
        self.alpaca_action("Unpark", "unpark")

    @command(doc_in="Find the home position")
    def FindHome(self) -> None:
        self.alpaca_action("FindHome", "findhome")

    @command(doc_in="Stop any slew at once")
    def AbortSlew(self) -> None:
        self.alpaca_action("AbortSlew", "abortslew")

    def refine_condition(self, state: DevState, status: str) -> tuple[DevState, str]:
        if state != DevState.ON:
            return state, status
        slewing = self.value("Slewing")
        self.set_moving(bool(slewing))
        where = f"RA {self.value('RightAscension'):.4f} h, Dec {self.value('Declination'):+.3f} deg, Alt {self.value('Altitude'):.2f} deg"
        if slewing:
            return DevState.MOVING, f"slewing; {where}"
        if self.value("AtPark"):
            return DevState.STANDBY, f"parked; {where}"
        return DevState.ON, f"{'tracking' if self.value('Tracking') else 'not tracking'}; {where}"


def _pair(values: list[float], message: str) -> tuple[float, float]:
    if len(values) != 2:
        raise ValueError(message)
    return float(values[0]), float(values[1])


def main(args: list[str] | None = None) -> None:
    """Console script ``Mount <instance>``."""
    serve((Mount,), "Mount", args)


if __name__ == "__main__":
    main()
