"""Simulated cameras: ``camera/0`` VIS (DDRAGO-like CCD) and ``camera/1`` NIR (CAGIRE-like HgCdTe).

Datasheet
    InterfaceVersion 4 (Platform 7). Monochrome (SensorType 0), 1 e-/ADU,
    MaxADU 65535, ExposureMin 0 s, ExposureMax 3600 s, resolution 1 ms,
    binning 1-4 on each axis independently (CanAsymmetricBin), one readout
    mode "Normal", a mechanical shutter, a cooler with readable power.
    CanAbortExposure, CanStopExposure, CanSetCCDTemperature,
    CanGetCoolerPower True; CanFastReadout and CanPulseGuide False. Sizes by
    default 256x256 (VIS, 13.5 µm) and 128x128 (NIR, 18 µm), small so that a
    JSON ImageArray stays cheap; ``--vis-size``/``--nir-size`` change them.

Exposures
    ``StartExposure(Duration, Light)`` checks the subframe (StartX + NumX <=
    CameraXSize / BinX, same in Y; else 0x401) and refuses while another
    exposure is running (0x40B). CameraState goes 2 (exposing, with
    PercentCompleted 0-100 through the exposure) for Duration seconds, then
    3 (reading) for ``--readout-time`` seconds, then 0 (idle) with
    ``ImageReady`` True. ``StopExposure`` ends the exposure early and keeps
    it (read out as usual, LastExposureDuration the shortened time);
    ``AbortExposure`` discards it. Both do nothing when no exposure runs.
    ``LastExposureStartTime`` is the UTC start, FITS style
    (``2026-11-21T19:25:46.123``); it and LastExposureDuration are 0x402
    before the first exposure. ``ImageArray`` before an image is ready is
    0x40B. The image: starfield.py (stars when Light is True; the same stars
    in every exposure of a camera, fresh noise each time).

Cooling
    The sensor starts at the heat-sink temperature (15 C), cooler off. With
    ``CoolerOn`` it relaxes exponentially (time constant 20 s) towards
    ``SetCCDTemperature`` (-100 to +40 C accepted), but no lower than 45 C
    below the heat sink; ``CoolerPower`` is 100 % while pulling down and
    then proportional to the temperature difference held. Cooler off: back
    towards the heat sink, power 0.

Fault ``camera_error``
    The camera fails: CameraState reads 5 (error), an exposure under way is
    lost, and every StartExposure answers ErrorNumber 0x500 (driver error)
    until the fault is cleared, which returns the camera to idle.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from simulators.alpaca.device import (
    DRIVER_ERROR,
    INVALID_OPERATION,
    INVALID_VALUE,
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
    number,
    put,
    utc_now,
)
from simulators.alpaca.starfield import Readout, Sensor, render

log = logging.getLogger("simulators.alpaca")

IDLE, WAITING, EXPOSING, READING, DOWNLOAD, ERROR = range(6)  # CameraState
DEFAULT_READOUT_TIME = 1.0  # s
HEAT_SINK_TEMPERATURE = 15.0  # C
MAX_COOLING = 45.0  # C below the heat sink the cooler can reach
COOLING_TIME_CONSTANT = 20.0  # s
SET_TEMPERATURE_RANGE = (-100.0, 40.0)  # C
MAX_BIN = 4
EXPOSURE_MAX = 3600.0  # s

VIS_SENSOR = Sensor("e2v CCD 42-40 (simulated)", 256, 256, 13.5)
NIR_SENSOR = Sensor("HgCdTe 2k (simulated)", 128, 128, 18.0, dark_rate=5.0, sky_rate=120.0, stars=15)

INTERFACE = interface(
    "AbortExposure:P BayerOffsetX:G BayerOffsetY:G BinX:GP BinY:GP CameraState:G CameraXSize:G CameraYSize:G "
    "CanAbortExposure:G CanAsymmetricBin:G CanFastReadout:G CanGetCoolerPower:G CanPulseGuide:G "
    "CanSetCCDTemperature:G CanStopExposure:G CCDTemperature:G CoolerOn:GP CoolerPower:G ElectronsPerADU:G "
    "ExposureMax:G ExposureMin:G ExposureResolution:G FastReadout:GP FullWellCapacity:G Gain:GP GainMax:G "
    "GainMin:G Gains:G HasShutter:G HeatSinkTemperature:G ImageArray:G ImageArrayVariant:G ImageReady:G "
    "IsPulseGuiding:G LastExposureDuration:G LastExposureStartTime:G MaxADU:G MaxBinX:G MaxBinY:G NumX:GP "
    "NumY:GP Offset:GP OffsetMax:G OffsetMin:G Offsets:G PercentCompleted:G PixelSizeX:G PixelSizeY:G "
    "PulseGuide:P ReadoutMode:GP ReadoutModes:G SensorName:G SensorType:G SetCCDTemperature:GP StartExposure:P "
    "StartX:GP StartY:GP StopExposure:P SubExposureDuration:GP"
)


@dataclass(frozen=True)
class ImageArray:
    """An image for the ``ImageArray`` member; the server encodes it as JSON or ImageBytes."""

    pixels: np.ndarray  # int32, shape (NumX, NumY)


@dataclass
class Exposure:
    started: float  # simulated s
    duration: float  # s requested
    light: bool
    readout: Readout
    seed: int
    ends: float  # simulated s the shutter closes (StopExposure brings it forward)


def fits_time(moment: datetime) -> str:
    """``2026-11-21T19:25:46.123``: FITS DATE-OBS style, UTC, no zone suffix."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}"


class Camera(AlpacaDevice):
    """A cooled monochrome camera taking synthetic star-field images (see the module docstring)."""

    device_type = "camera"
    interface_version = 4
    standard = INTERFACE
    faults = ("camera_error",)
    state_members = (
        "CameraState",
        "CCDTemperature",
        "CoolerPower",
        "HeatSinkTemperature",
        "ImageReady",
        "IsPulseGuiding",
        "PercentCompleted",
    )

    # Datasheet: capabilities and constants (the sensor's own numbers are members below).
    can_abort_exposure = constant("CanAbortExposure", True)
    can_asymmetric_bin = constant("CanAsymmetricBin", True)
    can_fast_readout = constant("CanFastReadout", False)
    can_get_cooler_power = constant("CanGetCoolerPower", True)
    can_pulse_guide = constant("CanPulseGuide", False)
    can_set_ccd_temperature = constant("CanSetCCDTemperature", True)
    can_stop_exposure = constant("CanStopExposure", True)
    electrons_per_adu = constant("ElectronsPerADU", 1.0)
    exposure_min = constant("ExposureMin", 0.0)
    exposure_max = constant("ExposureMax", EXPOSURE_MAX)
    exposure_resolution = constant("ExposureResolution", 0.001)
    has_shutter = constant("HasShutter", True)
    heat_sink_temperature = constant("HeatSinkTemperature", HEAT_SINK_TEMPERATURE)
    is_pulse_guiding = constant("IsPulseGuiding", False)
    max_bin_x = constant("MaxBinX", MAX_BIN)
    max_bin_y = constant("MaxBinY", MAX_BIN)
    readout_modes = constant("ReadoutModes", ["Normal"])
    sensor_type = constant("SensorType", 0)

    def __init__(
        self,
        number: int,
        clock: SimClock,
        sensor: Sensor,
        label: str,
        readout_time: float = DEFAULT_READOUT_TIME,
        seed: int = 0,
    ) -> None:
        super().__init__(number, f"DCS {label} camera simulator", f"Simulated {label} camera ({sensor.name})", clock)
        self.sensor = sensor
        self.readout_time = readout_time
        self.field_seed = seed * 1000 + number
        self.state = IDLE
        self.bin_x = self.bin_y = 1
        self.start_x = self.start_y = 0
        self.num_x, self.num_y = sensor.x_size, sensor.y_size
        self.cooler_on = False
        self.set_temperature = -20.0
        self.temperature = HEAT_SINK_TEMPERATURE
        self._exposure: Exposure | None = None
        self._finished: Exposure | None = None  # the exposure ImageArray serves
        self._image: np.ndarray | None = None
        self._exposures = 0
        self._last_duration: float | None = None
        self._last_start: datetime | None = None
        self._last = clock.now()

    # -- physics ----------------------------------------------------------------------

    def update(self, now: float) -> None:
        super().update(now)
        self._cool(max(0.0, now - self._last))
        self._last = now
        exposure = self._exposure
        if exposure is None:
            return
        if self.state == EXPOSING and now >= exposure.ends:
            self.state = READING
            self._last_duration = exposure.ends - exposure.started
        if self.state == READING and now >= exposure.ends + self.readout_time:
            self.state = IDLE
            self._exposure = None
            self._finished = exposure
            self._image = None
            log.info("%s: image %d ready (%.3f s)", self.path, exposure.seed, self._last_duration or 0.0)

    def _equilibrium(self) -> float:
        if not self.cooler_on:
            return HEAT_SINK_TEMPERATURE
        return max(self.set_temperature, HEAT_SINK_TEMPERATURE - MAX_COOLING)

    def _cool(self, elapsed: float) -> None:
        target = self._equilibrium()
        self.temperature = target + (self.temperature - target) * math.exp(-elapsed / COOLING_TIME_CONSTANT)

    # -- exposures ----------------------------------------------------------------------

    @put("StartExposure", Duration=number, Light=boolean)
    def start_exposure(self, duration: float, light: bool) -> None:
        in_range("Duration", duration, 0.0, EXPOSURE_MAX, " s")
        if self.fault == "camera_error":
            raise AlpacaError(
                DRIVER_ERROR, f"{self.path}: StartExposure failed: sensor readout error (simulated fault camera_error)"
            )
        if self.state in (EXPOSING, READING):
            raise AlpacaError(INVALID_OPERATION, f"{self.path}: StartExposure refused: an exposure is in progress")
        readout = self._readout()
        now = self.clock.now()
        self._exposures += 1
        self._exposure = Exposure(now, duration, light, readout, self._exposures, now + duration)
        self._finished = None
        self._image = None
        self._last_start = utc_now()
        self.state = EXPOSING
        log.info("%s: exposing %.3f s (%s), %dx%d binned %dx%d", self.path, duration, "light" if light else "dark",
                 readout.num_x, readout.num_y, readout.bin_x, readout.bin_y)  # fmt: skip
        self.update(now)  # a zero-second exposure goes straight to reading

    def _readout(self) -> Readout:
        width, height = self.sensor.x_size // self.bin_x, self.sensor.y_size // self.bin_y
        if self.start_x + self.num_x > width or self.start_y + self.num_y > height:
            raise AlpacaError(
                INVALID_VALUE,
                f"{self.path}: StartExposure refused: subframe {self.start_x}+{self.num_x} x {self.start_y}+{self.num_y} "
                f"exceeds the {width}x{height} binned chip (bin {self.bin_x}x{self.bin_y}); adjust StartX/NumX/StartY/NumY",
            )
        return Readout(self.start_x, self.start_y, self.num_x, self.num_y, self.bin_x, self.bin_y)

    @put("StopExposure")
    def stop_exposure(self) -> None:
        if self.state == EXPOSING and self._exposure is not None:
            self._exposure.ends = self.clock.now()
            log.info("%s: exposure stopped early", self.path)
            self.update(self._exposure.ends)

    @put("AbortExposure")
    def abort_exposure(self) -> None:
        if self.state in (EXPOSING, READING):
            self._exposure = None
            self.state = IDLE
            log.info("%s: exposure aborted", self.path)

    def on_fault(self, previous: str, fault: str) -> None:
        if fault == "camera_error":
            if self._exposure is not None:
                log.warning("%s: exposure %d lost (camera_error)", self.path, self._exposure.seed)
            self._exposure = None
            self.state = ERROR
        elif previous == "camera_error" and self.state == ERROR:
            self.state = IDLE

    @get("CameraState")
    def get_camera_state(self) -> int:
        return self.state

    @get("ImageReady")
    def get_image_ready(self) -> bool:
        return self._finished is not None

    @get("PercentCompleted")
    def get_percent_completed(self) -> int:
        if self.state == EXPOSING and self._exposure is not None:
            exposure = self._exposure
            if exposure.duration <= 0.0:
                return 100
            return int(min(100.0, max(0.0, 100.0 * (self.clock.now() - exposure.started) / exposure.duration)))
        if self.state == READING:
            return 100
        return 100 if self._finished is not None else 0

    @get("ImageArray")
    def get_image_array(self) -> ImageArray:
        exposure = self._finished
        if exposure is None:
            raise AlpacaError(INVALID_OPERATION, f"{self.path}: no image ready (take an exposure, wait for ImageReady)")
        if self._image is None:
            duration = self._last_duration if self._last_duration is not None else exposure.duration
            self._image = render(
                self.sensor, exposure.readout, duration, exposure.light, self.field_seed, exposure.seed
            )
        return ImageArray(self._image)

    @get("LastExposureDuration")
    def get_last_exposure_duration(self) -> float:
        if self._last_duration is None:
            raise AlpacaError(VALUE_NOT_SET, f"{self.path}: no exposure has been taken yet")
        return self._last_duration

    @get("LastExposureStartTime")
    def get_last_exposure_start_time(self) -> str:
        if self._last_start is None:
            raise AlpacaError(VALUE_NOT_SET, f"{self.path}: no exposure has been started yet")
        return fits_time(self._last_start)

    # -- geometry ------------------------------------------------------------------------

    @get("CameraXSize")
    def get_camera_x_size(self) -> int:
        return self.sensor.x_size

    @get("CameraYSize")
    def get_camera_y_size(self) -> int:
        return self.sensor.y_size

    @get("PixelSizeX")
    def get_pixel_size_x(self) -> float:
        return self.sensor.pixel_size

    @get("PixelSizeY")
    def get_pixel_size_y(self) -> float:
        return self.sensor.pixel_size

    @get("MaxADU")
    def get_max_adu(self) -> int:
        return self.sensor.max_adu

    @get("FullWellCapacity")
    def get_full_well_capacity(self) -> float:
        return float(self.sensor.max_adu)

    @get("SensorName")
    def get_sensor_name(self) -> str:
        return self.sensor.name

    @get("BinX")
    def get_bin_x(self) -> int:
        return self.bin_x

    @put("BinX", BinX=integer)
    def set_bin_x(self, value: int) -> None:
        self.bin_x = int(in_range("BinX", value, 1, MAX_BIN))

    @get("BinY")
    def get_bin_y(self) -> int:
        return self.bin_y

    @put("BinY", BinY=integer)
    def set_bin_y(self, value: int) -> None:
        self.bin_y = int(in_range("BinY", value, 1, MAX_BIN))

    @get("NumX")
    def get_num_x(self) -> int:
        return self.num_x

    @put("NumX", NumX=integer)
    def set_num_x(self, value: int) -> None:
        self.num_x = int(in_range("NumX", value, 1, self.sensor.x_size))

    @get("NumY")
    def get_num_y(self) -> int:
        return self.num_y

    @put("NumY", NumY=integer)
    def set_num_y(self, value: int) -> None:
        self.num_y = int(in_range("NumY", value, 1, self.sensor.y_size))

    @get("StartX")
    def get_start_x(self) -> int:
        return self.start_x

    @put("StartX", StartX=integer)
    def set_start_x(self, value: int) -> None:
        self.start_x = int(in_range("StartX", value, 0, self.sensor.x_size - 1))

    @get("StartY")
    def get_start_y(self) -> int:
        return self.start_y

    @put("StartY", StartY=integer)
    def set_start_y(self, value: int) -> None:
        self.start_y = int(in_range("StartY", value, 0, self.sensor.y_size - 1))

    @get("ReadoutMode")
    def get_readout_mode(self) -> int:
        return 0

    @put("ReadoutMode", ReadoutMode=integer)
    def set_readout_mode(self, mode: int) -> None:
        in_range("ReadoutMode", mode, 0, 0)

    # -- cooling ---------------------------------------------------------------------------

    @get("CCDTemperature")
    def get_ccd_temperature(self) -> float:
        return round(self.temperature, 3)

    @get("SetCCDTemperature")
    def get_set_ccd_temperature(self) -> float:
        return self.set_temperature

    @put("SetCCDTemperature", SetCCDTemperature=number)
    def set_set_ccd_temperature(self, value: float) -> None:
        self.set_temperature = in_range("SetCCDTemperature", value, *SET_TEMPERATURE_RANGE, " C")
        log.info("%s: CCD set point %.1f C", self.path, value)

    @get("CoolerOn")
    def get_cooler_on(self) -> bool:
        return self.cooler_on

    @put("CoolerOn", CoolerOn=boolean)
    def set_cooler_on(self, on: bool) -> None:
        if on != self.cooler_on:
            log.info("%s: cooler %s", self.path, "on" if on else "off")
        self.cooler_on = on

    @get("CoolerPower")
    def get_cooler_power(self) -> float:
        if not self.cooler_on:
            return 0.0
        target = self._equilibrium()
        if self.temperature - target > 0.5:
            return 100.0
        return round(max(0.0, 100.0 * (HEAT_SINK_TEMPERATURE - target) / MAX_COOLING), 1)
