"""Simulated mount (``telescope/0``): a German equatorial mount on the site of site.py.

Datasheet
    AlignmentMode 2 (German polar), EquatorialSystem 1 (topocentric
    apparent), no refraction, TrackingRates [0] (sidereal), aperture 1.3 m,
    focal length 4.875 m, InterfaceVersion 4 (Platform 7: Connect/Disconnect).
    CanPark, CanUnpark, CanFindHome, CanSetTracking, CanSlewAsync,
    CanSlewAltAzAsync, CanSync True; everything else False.

Positions
    The mount starts parked, not tracking, disconnected. Park is on the
    meridian 30 deg from the zenith towards the equator (HA 0, Dec = latitude
    -/+ 30: Alt 60, Az 180 in the north); home is the celestial pole
    (HA 0, Dec +/-90: Alt = |latitude|, Az 0 or 180). AtPark is set when a
    Park slew arrives and cleared by Unpark; AtHome is set when a FindHome
    slew arrives and cleared by any other slew.

Motion
    Both axes move at ``--slew-rate`` deg/s (simulated time), together, so a
    slew lasts max(|dHA| x 15, |dDec|) / rate; ``Slewing`` is True meanwhile,
    during Park and FindHome too. A slew to equatorial coordinates chases the
    target's moving hour angle and ends exactly on its RA/Dec; tracking then
    holds RA/Dec fixed (the hour angle follows sidereal time). Without
    tracking the axes stand still: HA/Dec and Alt/Az fixed, RA drifting.
    A new slew supersedes the running one; AbortSlew stops where it is.

Reported values
    RightAscension/SiderealTime in hours, the rest in degrees; SideOfPier 0
    (pierEast) for hour angles in [0, 12) h, 1 (pierWest) otherwise;
    UTCDate ``2026-11-21T19:25:46.123Z``.

Refusals
    0x401 coordinates out of range or a target below the horizon (altitude
    < 0); 0x408 slewing, syncing, homing, aborting or tracking while parked;
    0x40B SlewToCoordinatesAsync/SyncToCoordinates without tracking,
    SlewToAltAzAsync with tracking, a sync while slewing; 0x402 target
    coordinates read before being set.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from astropy.time import Time

from simulators.alpaca.device import (
    INVALID_OPERATION,
    INVALID_VALUE,
    PARKED,
    VALUE_NOT_SET,
    AlpacaDevice,
    AlpacaError,
    SimClock,
    boolean,
    constant,
    get,
    in_range,
    integer,
    interface,
    iso_utc,
    number,
    put,
    utc_now,
)
from simulators.alpaca.site import Site

log = logging.getLogger("simulators.alpaca")

DEFAULT_SLEW_RATE = 3.0  # deg/s
HORIZON = 0.0  # deg, lowest altitude a slew may target
PARK_ZENITH_DISTANCE = 30.0  # deg, park position on the meridian
APERTURE_DIAMETER = 1.3  # m
APERTURE_AREA = math.pi * (0.65**2 - 0.25**2)  # m^2, secondary obstruction subtracted
FOCAL_LENGTH = 4.875  # m
PIER_EAST, PIER_WEST = 0, 1

INTERFACE = interface(
    "AbortSlew:P AlignmentMode:G Altitude:G ApertureArea:G ApertureDiameter:G AtHome:G AtPark:G AxisRates:G "
    "Azimuth:G CanFindHome:G CanMoveAxis:G CanPark:G CanPulseGuide:G CanSetDeclinationRate:G CanSetGuideRates:G "
    "CanSetPark:G CanSetPierSide:G CanSetRightAscensionRate:G CanSetTracking:G CanSlew:G CanSlewAltAz:G "
    "CanSlewAltAzAsync:G CanSlewAsync:G CanSync:G CanSyncAltAz:G CanUnpark:G Declination:G DeclinationRate:GP "
    "DestinationSideOfPier:G DoesRefraction:GP EquatorialSystem:G FindHome:P FocalLength:G GuideRateDeclination:GP "
    "GuideRateRightAscension:GP IsPulseGuiding:G MoveAxis:P Park:P PulseGuide:P RightAscension:G "
    "RightAscensionRate:GP SetPark:P SideOfPier:GP SiderealTime:G SiteElevation:GP SiteLatitude:GP "
    "SiteLongitude:GP Slewing:G SlewSettleTime:GP SlewToAltAz:P SlewToAltAzAsync:P SlewToCoordinates:P "
    "SlewToCoordinatesAsync:P SlewToTarget:P SlewToTargetAsync:P SyncToAltAz:P SyncToCoordinates:P "
    "SyncToTarget:P TargetDeclination:GP TargetRightAscension:GP Tracking:GP TrackingRate:GP TrackingRates:G "
    "Unpark:P UTCDate:GP"
)


def wrap_hours(hours: float) -> float:
    """Into [0, 24)."""
    return hours % 24.0


def wrap_hour_angle(hours: float) -> float:
    """Into [-12, 12)."""
    return (hours + 12.0) % 24.0 - 12.0


@dataclass
class Slew:
    """A slew in progress, from (HA, Dec) towards a target given by RA (moving HA) or by HA (fixed)."""

    start_ha: float  # h
    start_dec: float  # deg
    by_ra: bool  # True: ``target`` is a right ascension; False: an hour angle
    target: float  # h
    target_dec: float  # deg
    started: float  # simulated s
    duration: float  # simulated s
    arrival: str = ""  # "park" or "home": what arriving means

    def target_ha(self, lst: float) -> float:
        return wrap_hour_angle(lst - self.target) if self.by_ra else self.target

    def progress(self, now: float) -> float:
        if self.duration <= 0.0:
            return 1.0
        return min(1.0, max(0.0, (now - self.started) / self.duration))

    def position(self, now: float, lst: float) -> tuple[float, float]:
        fraction = self.progress(now)
        ha = self.start_ha + fraction * wrap_hour_angle(self.target_ha(lst) - self.start_ha)
        return wrap_hour_angle(ha), self.start_dec + fraction * (self.target_dec - self.start_dec)


class Telescope(AlpacaDevice):
    """The mount: pointing, tracking, slews, park and home (see the module docstring)."""

    device_type = "telescope"
    interface_version = 4
    standard = INTERFACE
    faults = ("mount_silent",)
    state_members = (
        "Altitude",
        "AtHome",
        "AtPark",
        "Azimuth",
        "Declination",
        "IsPulseGuiding",
        "RightAscension",
        "SideOfPier",
        "SiderealTime",
        "Slewing",
        "Tracking",
        "UTCDate",
    )

    # Datasheet: capabilities and constants.
    alignment_mode = constant("AlignmentMode", 2)
    aperture_area = constant("ApertureArea", APERTURE_AREA)
    aperture_diameter = constant("ApertureDiameter", APERTURE_DIAMETER)
    focal_length = constant("FocalLength", FOCAL_LENGTH)
    equatorial_system = constant("EquatorialSystem", 1)
    does_refraction = constant("DoesRefraction", False)
    declination_rate = constant("DeclinationRate", 0.0)
    right_ascension_rate = constant("RightAscensionRate", 0.0)
    is_pulse_guiding = constant("IsPulseGuiding", False)
    slew_settle_time = constant("SlewSettleTime", 0)
    can_find_home = constant("CanFindHome", True)
    can_park = constant("CanPark", True)
    can_unpark = constant("CanUnpark", True)
    can_set_tracking = constant("CanSetTracking", True)
    can_slew_async = constant("CanSlewAsync", True)
    can_slew_altaz_async = constant("CanSlewAltAzAsync", True)
    can_sync = constant("CanSync", True)
    can_slew = constant("CanSlew", False)
    can_slew_altaz = constant("CanSlewAltAz", False)
    can_sync_altaz = constant("CanSyncAltAz", False)
    can_pulse_guide = constant("CanPulseGuide", False)
    can_set_declination_rate = constant("CanSetDeclinationRate", False)
    can_set_right_ascension_rate = constant("CanSetRightAscensionRate", False)
    can_set_guide_rates = constant("CanSetGuideRates", False)
    can_set_park = constant("CanSetPark", False)
    can_set_pier_side = constant("CanSetPierSide", False)

    def __init__(self, number: int, clock: SimClock, site: Site, slew_rate: float = DEFAULT_SLEW_RATE) -> None:
        super().__init__(number, "DCS mount simulator", "Simulated German equatorial mount (COLIBRI-like)", clock)
        self.site = site
        self.slew_rate = slew_rate
        self.tracking = False
        self.at_park = True
        self.at_home = False
        # The pointing when no slew runs: HA (h) if not tracking, RA (h) if tracking; and Dec (deg).
        self._coordinate, self._dec = self.park_position
        self._slew: Slew | None = None
        self.target_ra: float | None = None
        self.target_dec: float | None = None
        self._instant: tuple[Time, float] | None = None

    @property
    def park_position(self) -> tuple[float, float]:
        """(HA h, Dec deg) of the park position."""
        towards_equator = -PARK_ZENITH_DISTANCE if self.site.latitude >= 0 else PARK_ZENITH_DISTANCE
        return 0.0, self.site.latitude + towards_equator

    @property
    def home_position(self) -> tuple[float, float]:
        """(HA h, Dec deg) of the home position: the visible celestial pole."""
        return 0.0, 90.0 if self.site.latitude >= 0 else -90.0

    # -- physics ----------------------------------------------------------------------

    def update(self, now: float) -> None:
        super().update(now)
        self._instant = None  # one sky instant per request, computed when first needed
        if self._slew is not None and self._slew.progress(now) >= 1.0:
            self._arrive()

    def _sky(self) -> tuple[Time, float]:
        """(UTC instant, local apparent sidereal time h) of the request being answered."""
        if self._instant is None:
            when = self.site.now()
            self._instant = (when, self.site.sidereal_time(when))
        return self._instant

    def _hadec(self) -> tuple[float, float]:
        _, lst = self._sky()
        if self._slew is not None:
            return self._slew.position(self.clock.now(), lst)
        if self.tracking:
            return wrap_hour_angle(lst - self._coordinate), self._dec
        return self._coordinate, self._dec

    def _radec(self) -> tuple[float, float]:
        ha, dec = self._hadec()
        _, lst = self._sky()
        return wrap_hours(lst - ha), dec

    def _hold(self, ha: float, dec: float) -> None:
        """Make (ha, dec) the resting pointing, in the representation tracking needs."""
        _, lst = self._sky()
        self._coordinate = wrap_hours(lst - ha) if self.tracking else wrap_hour_angle(ha)
        self._dec = dec

    def _arrive(self) -> None:
        slew, self._slew = self._slew, None
        assert slew is not None
        if slew.arrival == "park":
            self.tracking = False
            self.at_park = True
        elif slew.arrival == "home":
            self.at_home = True
        if self.tracking and slew.by_ra:
            self._coordinate, self._dec = slew.target, slew.target_dec  # exactly on the requested RA/Dec
        else:
            _, lst = self._sky()
            self._hold(slew.target_ha(lst), slew.target_dec)
        log.info("%s: slew ended%s", self.path, f" ({slew.arrival})" if slew.arrival else "")

    def _start_slew(self, by_ra: bool, target: float, dec: float, arrival: str = "") -> None:
        _, lst = self._sky()
        ha, start_dec = self._hadec()
        slew = Slew(ha, start_dec, by_ra, target, dec, self.clock.now(), 0.0, arrival)
        distance = max(abs(wrap_hour_angle(slew.target_ha(lst) - ha)) * 15.0, abs(dec - start_dec))
        slew.duration = distance / self.slew_rate
        self._slew = slew
        self.at_park = False
        self.at_home = False
        log.info(
            "%s: slewing %.2f deg in %.2f s%s", self.path, distance, slew.duration, f" to {arrival}" * bool(arrival)
        )
        if slew.duration <= 0.0:
            self._arrive()

    def _stop(self) -> None:
        if self._slew is not None:
            ha, dec = self._hadec()
            self._slew = None
            self._hold(ha, dec)

    def _not_parked(self, operation: str) -> None:
        if self.at_park:
            raise AlpacaError(PARKED, f"{self.path}: {operation} refused: the mount is parked (Unpark first)")

    def _above_horizon(self, operation: str, alt: float) -> None:
        if alt < HORIZON:
            raise AlpacaError(
                INVALID_VALUE, f"{self.path}: {operation} refused: target below the horizon (altitude {alt:.2f} deg)"
            )

    @staticmethod
    def _equatorial(ra: float, dec: float) -> None:
        in_range("RightAscension", ra, 0.0, 24.0, " h", high_open=True)
        in_range("Declination", dec, -90.0, 90.0, " deg")

    # -- state --------------------------------------------------------------------------

    @get("RightAscension")
    def get_right_ascension(self) -> float:
        return self._radec()[0]

    @get("Declination")
    def get_declination(self) -> float:
        return self._hadec()[1]

    @get("Altitude")
    def get_altitude(self) -> float:
        when, _ = self._sky()
        return self.site.altaz(*self._radec(), when)[0]

    @get("Azimuth")
    def get_azimuth(self) -> float:
        when, _ = self._sky()
        return self.site.altaz(*self._radec(), when)[1]

    @get("SiderealTime")
    def get_sidereal_time(self) -> float:
        return self._sky()[1]

    @get("SideOfPier")
    def get_side_of_pier(self) -> int:
        return PIER_EAST if self._hadec()[0] >= 0.0 else PIER_WEST

    @get("DestinationSideOfPier", RightAscension=number, Declination=number)
    def get_destination_side_of_pier(self, ra: float, dec: float) -> int:
        self._equatorial(ra, dec)
        return PIER_EAST if wrap_hour_angle(self._sky()[1] - ra) >= 0.0 else PIER_WEST

    @get("Slewing")
    def get_slewing(self) -> bool:
        return self._slew is not None

    @get("AtPark")
    def get_at_park(self) -> bool:
        return self.at_park

    @get("AtHome")
    def get_at_home(self) -> bool:
        return self.at_home

    @get("Tracking")
    def get_tracking(self) -> bool:
        return self.tracking

    @put("Tracking", Tracking=boolean)
    def set_tracking(self, tracking: bool) -> None:
        if tracking and self.at_park:
            self._not_parked("Tracking=True")
        if tracking == self.tracking:
            return
        ha, dec = self._hadec()
        self.tracking = tracking
        if self._slew is None:
            self._hold(ha, dec)
        log.info("%s: tracking %s", self.path, "on" if tracking else "off")

    @get("TrackingRate")
    def get_tracking_rate(self) -> int:
        return 0

    @put("TrackingRate", TrackingRate=integer)
    def set_tracking_rate(self, rate: int) -> None:
        if rate != 0:
            raise AlpacaError(INVALID_VALUE, f"{self.path}: TrackingRate {rate} not supported (only 0, sidereal)")

    @get("TrackingRates")
    def get_tracking_rates(self) -> list[int]:
        return [0]

    @get("TargetRightAscension")
    def get_target_right_ascension(self) -> float:
        if self.target_ra is None:
            raise AlpacaError(VALUE_NOT_SET, f"{self.path}: TargetRightAscension has not been set")
        return self.target_ra

    @put("TargetRightAscension", TargetRightAscension=number)
    def set_target_right_ascension(self, ra: float) -> None:
        self.target_ra = in_range("TargetRightAscension", ra, 0.0, 24.0, " h", high_open=True)

    @get("TargetDeclination")
    def get_target_declination(self) -> float:
        if self.target_dec is None:
            raise AlpacaError(VALUE_NOT_SET, f"{self.path}: TargetDeclination has not been set")
        return self.target_dec

    @put("TargetDeclination", TargetDeclination=number)
    def set_target_declination(self, dec: float) -> None:
        self.target_dec = in_range("TargetDeclination", dec, -90.0, 90.0, " deg")

    @get("UTCDate")
    def get_utc_date(self) -> str:
        return iso_utc(utc_now())

    # -- motion -------------------------------------------------------------------------

    @put("SlewToCoordinatesAsync", RightAscension=number, Declination=number)
    def slew_to_coordinates_async(self, ra: float, dec: float) -> None:
        self._equatorial(ra, dec)
        self._not_parked("SlewToCoordinatesAsync")
        self.target_ra, self.target_dec = ra, dec
        self._slew_to_target("SlewToCoordinatesAsync")

    @put("SlewToTargetAsync")
    def slew_to_target_async(self) -> None:
        self._not_parked("SlewToTargetAsync")
        self._slew_to_target("SlewToTargetAsync")

    def _slew_to_target(self, operation: str) -> None:
        ra, dec = self.get_target_right_ascension(), self.get_target_declination()
        if not self.tracking:
            raise AlpacaError(INVALID_OPERATION, f"{self.path}: {operation} refused: tracking is off (set Tracking)")
        when, _ = self._sky()
        self._above_horizon(operation, self.site.altaz(ra, dec, when)[0])
        self._start_slew(True, ra, dec)

    @put("SlewToAltAzAsync", Azimuth=number, Altitude=number)
    def slew_to_altaz_async(self, az: float, alt: float) -> None:
        in_range("Azimuth", az, 0.0, 360.0, " deg", high_open=True)
        in_range("Altitude", alt, -90.0, 90.0, " deg")
        self._not_parked("SlewToAltAzAsync")
        if self.tracking:
            raise AlpacaError(
                INVALID_OPERATION, f"{self.path}: SlewToAltAzAsync refused: tracking is on (set Tracking False)"
            )
        self._above_horizon("SlewToAltAzAsync", alt)
        when, lst = self._sky()
        ra, dec = self.site.radec(alt, az, when)
        self._start_slew(False, wrap_hour_angle(lst - ra), dec)

    @put("SyncToCoordinates", RightAscension=number, Declination=number)
    def sync_to_coordinates(self, ra: float, dec: float) -> None:
        self._equatorial(ra, dec)
        self._not_parked("SyncToCoordinates")
        self.target_ra, self.target_dec = ra, dec
        self._sync("SyncToCoordinates")

    @put("SyncToTarget")
    def sync_to_target(self) -> None:
        self._not_parked("SyncToTarget")
        self._sync("SyncToTarget")

    def _sync(self, operation: str) -> None:
        ra, dec = self.get_target_right_ascension(), self.get_target_declination()
        if not self.tracking:
            raise AlpacaError(INVALID_OPERATION, f"{self.path}: {operation} refused: tracking is off (set Tracking)")
        if self._slew is not None:
            raise AlpacaError(INVALID_OPERATION, f"{self.path}: {operation} refused: the mount is slewing")
        self._coordinate, self._dec = ra, dec
        self.at_home = False
        log.info("%s: synced to RA %.5f h, Dec %.4f deg", self.path, ra, dec)

    @put("AbortSlew")
    def abort_slew(self) -> None:
        self._not_parked("AbortSlew")
        if self._slew is not None:
            log.info("%s: slew aborted", self.path)
        self._stop()

    @put("Park")
    def park(self) -> None:
        if self.at_park:
            return
        self.set_tracking(False)
        ha, dec = self.park_position
        self._start_slew(False, ha, dec, "park")

    @put("Unpark")
    def unpark(self) -> None:
        if self._slew is not None and self._slew.arrival == "park":
            self._stop()
        if self.at_park:
            log.info("%s: unparked", self.path)
        self.at_park = False

    @put("FindHome")
    def find_home(self) -> None:
        self._not_parked("FindHome")
        self.set_tracking(False)
        ha, dec = self.home_position
        self._start_slew(False, ha, dec, "home")

    # -- axes and site ------------------------------------------------------------------

    @get("AxisRates", Axis=integer)
    def get_axis_rates(self, axis: int) -> list[dict[str, float]]:
        in_range("Axis", axis, 0, 2)
        return []

    @get("CanMoveAxis", Axis=integer)
    def get_can_move_axis(self, axis: int) -> bool:
        in_range("Axis", axis, 0, 2)
        return False

    @get("SiteLatitude")
    def get_site_latitude(self) -> float:
        return self.site.latitude

    @get("SiteLongitude")
    def get_site_longitude(self) -> float:
        return self.site.longitude

    @get("SiteElevation")
    def get_site_elevation(self) -> float:
        return self.site.height
