"""Camera (``obs/camera/vis``, ``obs/camera/nir``): an ASCOM Alpaca camera that writes FITS files.

``StartExposure`` returns at once. When the camera has read out, the image
is downloaded in a worker thread and written with astropy as FITS, its
header holding the time, exposure, filter, pointing (RA/Dec and Alt/Az from
the mount), the site, a weather summary, the object and the ids of what
asked for it (request, sequence, plan). ``LastImageFile`` names the file.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
from enum import IntEnum
from pathlib import Path
from typing import Any

import numpy as np
import tango
from astropy.io import fits
from tango import AttrWriteType, DevState
from tango.server import attribute, command, device_property

from device_servers.common.serve import serve
from device_servers.observatory.alpaca_device import AlpacaDevice

log = logging.getLogger(__name__)


class CameraState(IntEnum):
    """Alpaca's CameraState values."""

    Idle = 0
    Waiting = 1
    Exposing = 2
    Reading = 3
    Download = 4
    Error = 5


class Camera(AlpacaDevice):
    """A science camera: exposures, cooling, FITS files."""

    DEVICE_TYPE = "camera"
    MEMBERS = (
        ("CameraState", "camerastate", int(CameraState.Error)),
        ("CCDTemperature", "ccdtemperature", 0.0),
        ("SetCCDTemperature", "setccdtemperature", 0.0),
        ("CoolerOn", "cooleron", False),
        ("CoolerPower", "coolerpower", 0.0),
        ("PercentCompleted", "percentcompleted", 0),
        ("ImageReady", "imageready", False),
    )

    Instrument = device_property(dtype=str, default_value="VIS", doc="Instrument name for the FITS header")
    FilterWheel = device_property(dtype=str, default_value="", doc="This camera's filter wheel device, if any")
    Mount = device_property(dtype=str, default_value="obs/mount/1", doc="The mount device (pointing in headers)")
    Weather = device_property(dtype=str, default_value="obs/weather/1", doc="The weather device (summary in headers)")
    DataDir = device_property(dtype=str, default_value="$DCS_STATE_DIR/images", doc="Where FITS files are written")
    SiteName = device_property(dtype=str, default_value="OAN-SPM")
    SiteLatitude = device_property(dtype=float, default_value=31.0442)
    SiteLongitude = device_property(dtype=float, default_value=-115.4637)
    SiteHeight = device_property(dtype=float, default_value=2800.0)

    def init_device(self) -> None:
        self._exposure: dict[str, Any] | None = None  # metadata of the exposure being taken
        self._downloading = False
        self._lock = threading.Lock()
        self.set_change_event("LastImageFile", True, False)
        self.set_archive_event("LastImageFile", True, False)
        super().init_device()
        self.publish("LastImageFile", "")

    # ------------------------------------------------------------------ attributes
    @attribute(dtype=CameraState, doc="Idle, Waiting, Exposing, Reading, Download or Error")
    def CameraState(self) -> tuple[Any, float, Any]:
        return self.polled("CameraState")

    @attribute(dtype=float, unit="degC", format="%.2f", abs_change="0.01", doc="CCD temperature")
    def CCDTemperature(self) -> tuple[Any, float, Any]:
        return self.polled("CCDTemperature")

    @attribute(dtype=float, unit="degC", access=AttrWriteType.READ_WRITE, abs_change="0.01", min_value="-80", max_value="30")
    def SetCCDTemperature(self) -> tuple[Any, float, Any]:
        return self.polled("SetCCDTemperature")

    @SetCCDTemperature.write
    def SetCCDTemperature(self, celsius: float) -> None:
        self.alpaca_action(f"set CCD temperature {celsius}", "setccdtemperature", SetCCDTemperature=celsius)

    @attribute(dtype=bool, access=AttrWriteType.READ_WRITE, doc="Cooler on")
    def CoolerOn(self) -> tuple[Any, float, Any]:
        return self.polled("CoolerOn")

    @CoolerOn.write
    def CoolerOn(self, on: bool) -> None:
        self.alpaca_action("switch the cooler", "cooleron", CoolerOn=str(on).lower())

    @attribute(dtype=float, unit="%", abs_change="0.1", doc="Cooler power")
    def CoolerPower(self) -> tuple[Any, float, Any]:
        return self.polled("CoolerPower")

    @attribute(dtype=int, unit="%", abs_change="1", doc="Progress of the exposure")
    def PercentCompleted(self) -> tuple[Any, float, Any]:
        return self.polled("PercentCompleted")

    @attribute(dtype=bool, doc="An image is ready on the camera")
    def ImageReady(self) -> tuple[Any, float, Any]:
        return self.polled("ImageReady")

    @attribute(dtype=str, doc="The last FITS file written")
    def LastImageFile(self) -> tuple[Any, float, Any]:
        return self.polled("LastImageFile")

    # ------------------------------------------------------------------ commands
    @command(
        dtype_in=str,
        doc_in='JSON: {"duration": s, "light": true, "object": "...", "request_id": ..., "sequence_id": ..., "plan_id": ...}',
    )
    def StartExposure(self, request: str) -> None:
        try:
            asked = json.loads(request) if request.strip().startswith("{") else {"duration": float(request)}
            duration = float(asked["duration"])
        except (ValueError, KeyError, TypeError) as exc:
            raise self.refusal("StartExposure", f"give a duration in seconds or JSON with 'duration' ({exc})") from exc
        if duration < 0:
            raise self.refusal("StartExposure", f"duration {duration} s is negative")
        with self._lock:
            if self._exposure is not None:
                raise self.refusal("StartExposure", "an exposure is already running (AbortExposure first)")
            light = bool(asked.get("light", True))
            self.alpaca_action("StartExposure", "startexposure", Duration=duration, Light=str(light).lower())
            self._exposure = {**asked, "duration": duration, "light": light, **self._context()}

    @command(doc_in="Stop now and discard the image")
    def AbortExposure(self) -> None:
        with self._lock:
            self.alpaca_action("AbortExposure", "abortexposure")
            self._exposure = None

    @command(doc_in="Stop now and keep the image (it is read out and written)")
    def StopExposure(self) -> None:
        self.alpaca_action("StopExposure", "stopexposure")

    # ------------------------------------------------------------------ the work
    def _context(self) -> dict[str, Any]:
        """What the header says about the world when the exposure starts (best effort, never blocking long)."""
        context: dict[str, Any] = {"date_obs": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")[:-6]}
        for key, device, attributes in (
            ("mount", self.Mount, ("RightAscension", "Declination", "Altitude", "Azimuth")),
            ("filter", self.FilterWheel, ("Filter",)),
            ("weather", self.Weather, ("Summary", "IsSafe")),
        ):
            if not device:
                continue
            try:
                proxy = tango.DeviceProxy(device)
                proxy.set_timeout_millis(500)
                context[key] = {a: v.value for a, v in zip(attributes, proxy.read_attributes(list(attributes)), strict=True)}
            except tango.DevFailed as exc:
                context[key] = {"error": exc.args[0].desc.strip()}
        return context

    def refine_condition(self, state: DevState, status: str) -> tuple[DevState, str]:
        if state != DevState.ON:
            return state, status
        camera = CameraState(self.value("CameraState"))
        busy = camera in (CameraState.Waiting, CameraState.Exposing, CameraState.Reading, CameraState.Download)
        self.set_moving(busy or self._exposure is not None)
        if self._exposure is not None and self.value("ImageReady") and not self._downloading:
            self._downloading = True
            threading.Thread(target=self._save_image, name=f"fits {self.get_name()}", daemon=True).start()
        cooling = f"CCD {self.value('CCDTemperature'):.1f} degC" + (f" -> {self.value('SetCCDTemperature'):.1f}" if self.value("CoolerOn") else ", cooler off")
        if camera == CameraState.Error:
            return DevState.FAULT, f"camera error; {cooling}"
        if busy or self._downloading:
            return DevState.RUNNING, f"{camera.name.lower()} {self.value('PercentCompleted')} %; {cooling}"
        return DevState.ON, f"idle; {cooling}"

    def _save_image(self) -> None:
        exposure = self._exposure
        try:
            pixels = np.asarray(self.alpaca().get("imagearray"), dtype=np.int32).T  # Alpaca is [x][y]; FITS rows are y
            path = self._write_fits(pixels, exposure or {})
            self.publish("LastImageFile", str(path))
            log.info("%s: wrote %s", self.get_name(), path)
        except Exception as exc:  # report it on the device, never lose the thread silently
            log.exception("%s: image not saved", self.get_name())
            self.publish("LastImageFile", f"ERROR: {exc}")
        finally:
            with self._lock:
                if self._exposure is exposure:
                    self._exposure = None
            self._downloading = False
            self.poll_soon(*(name for name, _, _ in self.MEMBERS))

    def _write_fits(self, pixels: np.ndarray, exposure: dict[str, Any]) -> Path:
        header = fits.Header()
        header["DATE-OBS"] = (exposure.get("date_obs", ""), "exposure start (UTC)")
        header["EXPTIME"] = (exposure.get("duration", 0.0), "[s] exposure time")
        header["IMAGETYP"] = ("LIGHT" if exposure.get("light", True) else "DARK", "")
        header["INSTRUME"] = (self.Instrument, "")
        header["OBJECT"] = (str(exposure.get("object", "")), "")
        filter_info = exposure.get("filter", {})
        header["FILTER"] = (str(filter_info.get("Filter", "")), filter_info.get("error", "")[:60])
        mount = exposure.get("mount", {})
        if "error" not in mount and mount:
            header["RA"] = (mount["RightAscension"] * 15.0, "[deg] right ascension (apparent)")
            header["DEC"] = (mount["Declination"], "[deg] declination (apparent)")
            header["ALT"] = (mount["Altitude"], "[deg] altitude")
            header["AZ"] = (mount["Azimuth"], "[deg] azimuth")
        else:
            header["COMMENT"] = f"pointing unknown: {mount.get('error', 'no mount')}"[:70]
        header["OBSERVAT"] = (self.SiteName, "")
        header["SITELAT"] = (self.SiteLatitude, "[deg]")
        header["SITELONG"] = (self.SiteLongitude, "[deg] east")
        header["SITEELEV"] = (self.SiteHeight, "[m]")
        weather = exposure.get("weather", {})
        header["WXSAFE"] = (bool(weather.get("IsSafe", False)), "weather safe at exposure start")
        header["WEATHER"] = (str(weather.get("Summary", weather.get("error", "")))[:68], "")
        for key, fits_key in (("request_id", "REQID"), ("sequence_id", "SEQID"), ("plan_id", "PLANID"), ("album_id", "ALBUMID")):
            if key in exposure:
                header[fits_key] = (str(exposure[key]), f"{key.replace('_', ' ')} that asked for it")
        header["CCD-TEMP"] = (self.value("CCDTemperature"), "[degC]")
        folder = Path(os.path.expandvars(self.DataDir)) / exposure.get("date_obs", "unknown")[:10]
        folder.mkdir(parents=True, exist_ok=True)
        stamp = exposure.get("date_obs", "").replace(":", "").replace("-", "")
        path = folder / f"{self.Instrument.lower()}_{stamp}.fits"
        fits.PrimaryHDU(data=pixels, header=header).writeto(path, overwrite=True)
        return path


def main(args: list[str] | None = None) -> None:
    """Console script ``Camera <instance>``."""
    serve((Camera,), "Camera", args)


if __name__ == "__main__":
    main()
