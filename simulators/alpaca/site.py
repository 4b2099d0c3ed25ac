"""The observing site and the astropy transforms the simulated mount needs.

Equatorial coordinates are topocentric apparent ("JNow", ASCOM
``EquatorialSystem`` 1): astropy's ``TETE`` frame at the site's
``EarthLocation``. Hour angle is local apparent sidereal time minus right
ascension exactly, and Alt/Az is ``TETE → AltAz`` at the same instant,
without refraction (pressure 0; ``DoesRefraction`` is False).

The simulator never downloads anything: astropy's IERS auto-download is off
and the tables bundled with ``astropy-iers-data`` are used; a date beyond
them degrades accuracy with a warning instead of failing.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import astropy.units as u
from astropy.coordinates import TETE, AltAz, EarthLocation, SkyCoord
from astropy.time import Time
from astropy.utils import iers

iers.conf.auto_download = False
iers.conf.iers_degraded_accuracy = "warn"

# OAN San Pedro Mártir (Baja California), home of COLIBRI and its DDRAGO (VIS)
# and CAGIRE (NIR) cameras; approximate.
DEFAULT_LATITUDE = 31.0442  # deg, north positive
DEFAULT_LONGITUDE = -115.4637  # deg, east positive
DEFAULT_HEIGHT = 2800.0  # m above the ellipsoid


@dataclass(frozen=True)
class Site:
    """Where the telescope stands; all angles in degrees, right ascension and sidereal time in hours."""

    latitude: float = DEFAULT_LATITUDE
    longitude: float = DEFAULT_LONGITUDE
    height: float = DEFAULT_HEIGHT

    def __post_init__(self) -> None:
        if not -90.0 <= self.latitude <= 90.0:
            raise ValueError(f"site latitude {self.latitude} out of range [-90, 90] deg")
        if not -180.0 <= self.longitude <= 360.0:
            raise ValueError(f"site longitude {self.longitude} out of range [-180, 360] deg")

    @cached_property
    def location(self) -> EarthLocation:
        return EarthLocation.from_geodetic(self.longitude * u.deg, self.latitude * u.deg, self.height * u.m)

    @staticmethod
    def now() -> Time:
        return Time.now()

    def sidereal_time(self, when: Time) -> float:
        """Local apparent sidereal time, hours in [0, 24)."""
        return float(when.sidereal_time("apparent", longitude=self.location.lon).hour) % 24.0

    def altaz(self, ra: float, dec: float, when: Time) -> tuple[float, float]:
        """(altitude, azimuth) in degrees of topocentric apparent (ra hours, dec degrees)."""
        sky = SkyCoord(ra=ra * u.hourangle, dec=dec * u.deg, frame=TETE(obstime=when, location=self.location))
        horizontal = sky.transform_to(AltAz(obstime=when, location=self.location))
        return float(horizontal.alt.deg), float(horizontal.az.deg) % 360.0

    def radec(self, alt: float, az: float, when: Time) -> tuple[float, float]:
        """(right ascension hours, declination degrees), topocentric apparent, of (alt, az) in degrees."""
        horizontal = SkyCoord(alt=alt * u.deg, az=az * u.deg, frame=AltAz(obstime=when, location=self.location))
        sky = horizontal.transform_to(TETE(obstime=when, location=self.location))
        return float(sky.ra.hour) % 24.0, float(sky.dec.deg)

    def warm_up(self) -> None:
        """Load the IERS and ephemeris tables now rather than on the first request (about 1 s)."""
        when = self.now()
        self.sidereal_time(when)
        self.altaz(0.0, 0.0, when)

    def __str__(self) -> str:
        return f"lat {self.latitude:+.4f} deg, lon {self.longitude:+.4f} deg, height {self.height:g} m"
