"""Simulated dome (``dome/0``): a rotating dome with one shutter.

Datasheet
    InterfaceVersion 3 (Platform 7). CanFindHome, CanPark, CanSetAzimuth,
    CanSetAltitude, CanSetShutter, CanSyncAzimuth True; CanSetPark and
    CanSlave False (``Slaved`` is always False; setting it True is 0x400).

Azimuth
    Starts at the park azimuth (180 deg), AtPark True, shutter closed,
    disconnected. SlewToAzimuth, Park (180 deg) and FindHome (0 deg) turn the
    dome the short way round at ``--dome-rate`` deg/s; ``Slewing`` is True
    while the azimuth or the opening's altitude (SlewToAltitude, 0-90 deg)
    moves. AtPark/AtHome are set on arrival and cleared by any other slew.

Shutter
    ``ShutterStatus``: 0 open, 1 closed, 2 opening, 3 closing, 4 error. A
    full stroke takes ``--shutter-time`` seconds; reversing mid-stroke
    continues from where the shutter is. AbortSlew stops the azimuth, the
    altitude and the shutter: a shutter stopped part-way reports 4 (the
    seed's "intermediate") until it is opened or closed again.

Fault ``shutter_stuck``
    The shutter motor stalls: a stroke under way or commanded later keeps
    reporting 2 (opening) or 3 (closing) and never completes, which is how a
    close that "did not move" looks to a client. Clearing the fault (``none``)
    lets the stroke finish.
"""

from __future__ import annotations

import logging
import math

from simulators.alpaca.device import (
    NOT_IMPLEMENTED,
    AlpacaDevice,
    AlpacaError,
    SimClock,
    boolean,
    constant,
    get,
    in_range,
    interface,
    number,
    put,
)

log = logging.getLogger("simulators.alpaca")

DEFAULT_DOME_RATE = 5.0  # deg/s
DEFAULT_SHUTTER_TIME = 10.0  # s for a full stroke
HOME_AZIMUTH = 0.0  # deg
PARK_AZIMUTH = 180.0  # deg
OPEN, CLOSED, OPENING, CLOSING, ERROR = range(5)  # ShutterStatus

INTERFACE = interface(
    "AbortSlew:P Altitude:G AtHome:G AtPark:G Azimuth:G CanFindHome:G CanPark:G CanSetAltitude:G CanSetAzimuth:G "
    "CanSetPark:G CanSetShutter:G CanSlave:G CanSyncAzimuth:G CloseShutter:P FindHome:P OpenShutter:P Park:P "
    "SetPark:P ShutterStatus:G Slaved:GP Slewing:G SlewToAltitude:P SlewToAzimuth:P SyncToAzimuth:P"
)


def azimuth_offset(start: float, target: float) -> float:
    """Signed shortest rotation from ``start`` to ``target``, in (-180, 180] deg."""
    return -((start - target + 180.0) % 360.0 - 180.0)


class Dome(AlpacaDevice):
    """The dome: azimuth, opening altitude and shutter (see the module docstring)."""

    device_type = "dome"
    interface_version = 3
    standard = INTERFACE
    faults = ("shutter_stuck",)
    state_members = ("Altitude", "AtHome", "AtPark", "Azimuth", "ShutterStatus", "Slewing")

    # Datasheet: capabilities.
    can_find_home = constant("CanFindHome", True)
    can_park = constant("CanPark", True)
    can_set_altitude = constant("CanSetAltitude", True)
    can_set_azimuth = constant("CanSetAzimuth", True)
    can_set_park = constant("CanSetPark", False)
    can_set_shutter = constant("CanSetShutter", True)
    can_slave = constant("CanSlave", False)
    can_sync_azimuth = constant("CanSyncAzimuth", True)
    slaved = constant("Slaved", False)

    def __init__(
        self,
        number: int,
        clock: SimClock,
        rate: float = DEFAULT_DOME_RATE,
        shutter_time: float = DEFAULT_SHUTTER_TIME,
    ) -> None:
        super().__init__(number, "DCS dome simulator", "Simulated rotating dome with one shutter", clock)
        self.rate = rate
        self.shutter_time = shutter_time
        self.azimuth = PARK_AZIMUTH
        self.altitude = 90.0
        self.at_park = True
        self.at_home = False
        self.shutter = 0.0  # fraction open: 0 closed, 1 open
        self._shutter_direction = 0  # +1 opening, -1 closing, 0 stopped
        self._azimuth_target: float | None = None
        self._altitude_target: float | None = None
        self._arrival = ""  # "park" or "home" once the azimuth target is reached
        self._last = clock.now()

    # -- physics ----------------------------------------------------------------------

    def update(self, now: float) -> None:
        super().update(now)
        elapsed, self._last = max(0.0, now - self._last), now
        if self._azimuth_target is not None:
            offset = azimuth_offset(self.azimuth, self._azimuth_target)
            step = self.rate * elapsed
            if abs(offset) <= step:
                self.azimuth = self._azimuth_target
                self._azimuth_target = None
                self.at_park = self._arrival == "park"
                self.at_home = self._arrival == "home"
                log.info(
                    "%s: at azimuth %.1f deg%s", self.path, self.azimuth, f" ({self._arrival})" * bool(self._arrival)
                )
            else:
                self.azimuth = (self.azimuth + math.copysign(step, offset)) % 360.0
        if self._altitude_target is not None:
            offset = self._altitude_target - self.altitude
            step = self.rate * elapsed
            if abs(offset) <= step:
                self.altitude, self._altitude_target = self._altitude_target, None
            else:
                self.altitude += math.copysign(step, offset)
        if self._shutter_direction and self.fault != "shutter_stuck":
            self.shutter = min(1.0, max(0.0, self.shutter + self._shutter_direction * elapsed / self.shutter_time))
            if self.shutter in (0.0, 1.0):
                self._shutter_direction = 0
                log.info("%s: shutter %s", self.path, "open" if self.shutter else "closed")

    def shutter_status(self) -> int:
        if self._shutter_direction > 0:
            return OPENING
        if self._shutter_direction < 0:
            return CLOSING
        if self.shutter >= 1.0:
            return OPEN
        if self.shutter <= 0.0:
            return CLOSED
        return ERROR

    def _slew_azimuth(self, azimuth: float, arrival: str = "") -> None:
        self._azimuth_target = azimuth % 360.0
        self._arrival = arrival
        self.at_park = False
        self.at_home = False
        log.info("%s: slewing to azimuth %.1f deg%s", self.path, azimuth, f" ({arrival})" * bool(arrival))

    # -- members ------------------------------------------------------------------------

    @get("Azimuth")
    def get_azimuth(self) -> float:
        return self.azimuth

    @get("Altitude")
    def get_altitude(self) -> float:
        return self.altitude

    @get("AtHome")
    def get_at_home(self) -> bool:
        return self.at_home

    @get("AtPark")
    def get_at_park(self) -> bool:
        return self.at_park

    @get("Slewing")
    def get_slewing(self) -> bool:
        return self._azimuth_target is not None or self._altitude_target is not None

    @get("ShutterStatus")
    def get_shutter_status(self) -> int:
        return self.shutter_status()

    @put("Slaved", Slaved=boolean)
    def set_slaved(self, slaved: bool) -> None:
        if slaved:
            raise AlpacaError(NOT_IMPLEMENTED, f"{self.path}: slaving is not supported (CanSlave is False)")

    @put("SlewToAzimuth", Azimuth=number)
    def slew_to_azimuth(self, azimuth: float) -> None:
        self._slew_azimuth(in_range("Azimuth", azimuth, 0.0, 360.0, " deg", high_open=True))

    @put("SlewToAltitude", Altitude=number)
    def slew_to_altitude(self, altitude: float) -> None:
        self._altitude_target = in_range("Altitude", altitude, 0.0, 90.0, " deg")

    @put("SyncToAzimuth", Azimuth=number)
    def sync_to_azimuth(self, azimuth: float) -> None:
        self.azimuth = in_range("Azimuth", azimuth, 0.0, 360.0, " deg", high_open=True)
        log.info("%s: azimuth synced to %.1f deg", self.path, azimuth)

    @put("Park")
    def park(self) -> None:
        if not self.at_park:
            self._slew_azimuth(PARK_AZIMUTH, "park")

    @put("FindHome")
    def find_home(self) -> None:
        self._slew_azimuth(HOME_AZIMUTH, "home")

    @put("OpenShutter")
    def open_shutter(self) -> None:
        if self.shutter < 1.0:
            self._shutter_direction = 1
            log.info("%s: opening shutter", self.path)

    @put("CloseShutter")
    def close_shutter(self) -> None:
        if self.shutter > 0.0:
            self._shutter_direction = -1
            log.info("%s: closing shutter", self.path)

    @put("AbortSlew")
    def abort_slew(self) -> None:
        if self.get_slewing() or self._shutter_direction:
            log.info(
                "%s: slew aborted (azimuth %.1f deg, shutter %.0f %% open)", self.path, self.azimuth, self.shutter * 100
            )
        self._azimuth_target = None
        self._altitude_target = None
        self._arrival = ""
        self._shutter_direction = 0
