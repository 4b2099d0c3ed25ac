"""Synthetic star field: the pixels the simulated cameras read out.

An image is bias + dark current + sky + a few gaussian stars, with shot
noise and read noise, binned on the chip (charge summed before the single
readout, so bias and read noise are added once per binned pixel) and
clipped to [0, MaxADU]. The stars come from ``field_seed`` (the same sky in
every exposure of a camera), the noise from ``exposure_seed`` (one per
exposure), so an image is fully determined by the two seeds and the
exposure settings. Signals are counted directly in ADU.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Sensor:
    """Detector datasheet; sizes in unbinned pixels, rates in ADU per second per unbinned pixel."""

    name: str
    x_size: int
    y_size: int
    pixel_size: float  # µm
    max_adu: int = 65535
    bias: float = 1000.0  # ADU
    read_noise: float = 5.0  # ADU rms
    dark_rate: float = 0.5
    sky_rate: float = 40.0
    stars: int = 25
    star_peak_rates: tuple[float, float] = (2_000.0, 40_000.0)  # ADU/s at the centre, log-uniform
    seeing_fwhm: float = 3.0  # pixels

    def __post_init__(self) -> None:
        if self.x_size < 1 or self.y_size < 1:
            raise ValueError(f"sensor {self.name}: size must be at least 1x1, got {self.x_size}x{self.y_size}")


@dataclass(frozen=True)
class Readout:
    """The part of the chip read out: start and size in binned pixels, and the binning."""

    start_x: int
    start_y: int
    num_x: int
    num_y: int
    bin_x: int
    bin_y: int


def render(
    sensor: Sensor, readout: Readout, duration: float, light: bool, field_seed: int, exposure_seed: int
) -> np.ndarray:
    """The image as int32 with shape (num_x, num_y): element [x][y], Alpaca's ImageArray order."""
    x0, y0 = readout.start_x * readout.bin_x, readout.start_y * readout.bin_y
    width, height = readout.num_x * readout.bin_x, readout.num_y * readout.bin_y
    signal = np.full((width, height), sensor.dark_rate * duration)
    if light:
        signal += sensor.sky_rate * duration
        _add_stars(signal, sensor, x0, y0, duration, np.random.default_rng(field_seed))
    noise = np.random.default_rng([field_seed, exposure_seed])
    electrons = noise.poisson(signal).astype(np.float64)
    binned = electrons.reshape(readout.num_x, readout.bin_x, readout.num_y, readout.bin_y).sum(axis=(1, 3))
    binned += sensor.bias + noise.normal(0.0, sensor.read_noise, binned.shape)
    return np.clip(np.rint(binned), 0, sensor.max_adu).astype(np.int32)


def _add_stars(signal: np.ndarray, sensor: Sensor, x0: int, y0: int, duration: float, rng: np.random.Generator) -> None:
    """Add the field's stars (whole-sensor coordinates) to ``signal``, which starts at (x0, y0)."""
    xs = rng.uniform(0.0, sensor.x_size, sensor.stars)
    ys = rng.uniform(0.0, sensor.y_size, sensor.stars)
    low, high = np.log10(sensor.star_peak_rates)
    peaks = 10.0 ** rng.uniform(low, high, sensor.stars) * duration
    sigma = sensor.seeing_fwhm / 2.3548
    reach = int(np.ceil(5.0 * sigma))
    width, height = signal.shape
    for x, y, peak in zip(xs - x0, ys - y0, peaks, strict=True):
        left, right = max(0, int(x) - reach), min(width, int(x) + reach + 1)
        bottom, top = max(0, int(y) - reach), min(height, int(y) + reach + 1)
        if left >= right or bottom >= top:
            continue  # outside the read-out region
        gx = np.arange(left, right)[:, None] + 0.5 - x
        gy = np.arange(bottom, top)[None, :] + 0.5 - y
        signal[left:right, bottom:top] += peak * np.exp(-(gx**2 + gy**2) / (2.0 * sigma**2))
