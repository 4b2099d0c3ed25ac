"""The true conditions at the site, which every simulated sensor reads.

Each quantity drifts as an Ornstein-Uhlenbeck process (a random walk pulled
back towards a mean), which looks like slow real weather; the wind adds
gusts that arrive at random, rise at once and die away in a few seconds.
Rain never starts by itself: it comes only from an injection or a scenario,
so a test never sees rain it did not ask for.

Injecting a quantity (``INJECT`` on the pseudo-device ``weather``) holds it
at that value; releasing it (``value: null``) lets it drift on from there.
Every draw comes from the ``random.Random`` handed in, and time advances by
the nominal cycle length, so a given seed gives the same weather at the same
cycle number however fast the host runs.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

WEATHER_DEVICE = "weather"


@dataclass(frozen=True)
class Drift:
    """How one quantity wanders: around ``mean``, spread ``sigma``, memory ``tau`` seconds."""

    mean: float
    sigma: float
    tau: float
    low: float = -math.inf
    high: float = math.inf


@dataclass(frozen=True)
class WeatherQuantity:
    """One site quantity: name (as INJECT addresses it), unit, start value and drift."""

    name: str
    unit: str
    start: float
    drift: Drift | None  # None: constant unless injected
    doc: str


# Start values are those of the seed's sample STATUS reply, so a fresh
# simulator answers much like the sample.
QUANTITIES: tuple[WeatherQuantity, ...] = (
    WeatherQuantity("temperature", "Celcius", 12.1, Drift(12.0, 1.5, 3600.0), "outside air temperature"),
    WeatherQuantity("humidity", "percent", 64.5, Drift(64.0, 8.0, 1800.0, 2.0, 100.0), "outside relative humidity"),
    WeatherQuantity("pressure", "mbar", 769.0, Drift(769.0, 0.8, 7200.0), "air pressure at site elevation"),
    WeatherQuantity("wind_speed", "m/s", 3.0, Drift(3.0, 1.2, 300.0, 0.0), "mean wind speed; gusts come on top"),
    WeatherQuantity("wind_direction", "deg", 205.0, Drift(205.0, 25.0, 900.0), "where the wind comes from (N=0, E=90)"),
    WeatherQuantity("cloud_cover", "fraction", 0.1, Drift(0.1, 0.08, 1200.0, 0.0, 1.0), "0 clear to 1 overcast"),
    WeatherQuantity("rain_rate", "mm/h", 0.0, None, "rain intensity; 0 unless injected"),
    WeatherQuantity("inside_temperature", "Celcius", 20.3, Drift(20.3, 0.3, 3600.0), "dome/control-room air"),
    WeatherQuantity("inside_humidity", "percent", 45.6, Drift(45.6, 2.0, 3600.0, 0.0, 100.0), "dome/control-room air"),
)
QUANTITY_NAMES = tuple(quantity.name for quantity in QUANTITIES)

GUST_RATE = 1.0 / 45.0  # gusts per second
GUST_MEAN = 3.0  # m/s, mean extra speed of a gust (exponentially distributed)
GUST_DECAY = 4.0  # s, time constant of a gust dying away


class Weather:
    """Site conditions; ``advance(dt)`` moves them on by ``dt`` seconds."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.values: dict[str, float] = {quantity.name: quantity.start for quantity in QUANTITIES}
        self.held: set[str] = set()
        self.gust = 0.0  # m/s currently added to the mean wind

    def __getitem__(self, name: str) -> float:
        """A quantity as the sensors see it (wind speed including the current gust)."""
        if name == "wind_speed" and name not in self.held:
            return self.values[name] + self.gust
        return self.values[name]

    def hold(self, name: str, value: float) -> None:
        """Pin ``name`` at ``value`` until released."""
        self.values[name] = value
        self.held.add(name)
        if name == "wind_speed":
            self.gust = 0.0

    def release(self, name: str) -> None:
        """Let ``name`` drift again, starting from where it was held."""
        self.held.discard(name)

    def advance(self, dt: float) -> None:
        for quantity in QUANTITIES:
            if quantity.drift is None or quantity.name in self.held:
                continue
            self.values[quantity.name] = self._step(self.values[quantity.name], quantity.drift, dt)
        self.values["wind_direction"] %= 360.0
        self._advance_gust(dt)

    def _step(self, value: float, drift: Drift, dt: float) -> float:
        # Exact discretisation of the Ornstein-Uhlenbeck process, so the
        # statistics do not depend on the cycle length.
        pull = math.exp(-dt / drift.tau)
        spread = drift.sigma * math.sqrt(1.0 - pull * pull)
        value = drift.mean + (value - drift.mean) * pull + spread * self.rng.gauss(0.0, 1.0)
        return min(drift.high, max(drift.low, value))

    def _advance_gust(self, dt: float) -> None:
        self.gust *= math.exp(-dt / GUST_DECAY)
        # Always draw, held or not, so holding the wind does not shift the
        # random sequence every other quantity sees afterwards.
        arrives = self.rng.random() < 1.0 - math.exp(-GUST_RATE * dt)
        strength = self.rng.expovariate(1.0 / GUST_MEAN)
        if arrives and "wind_speed" not in self.held:
            self.gust += strength
