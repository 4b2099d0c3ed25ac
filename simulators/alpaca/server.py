"""ASCOM Alpaca simulator: one Alpaca server hosting the observatory's mount, dome, cameras and filter wheels.

DCS's mount/dome/camera/filter-wheel device servers are Alpaca clients
(shared/specs/observatory.md); this server stands in for the hardware so that
they, the tests and ``dcs`` scenarios run without an observatory. Run it with::

    python -m simulators.alpaca.server --port 0 --discovery-port 0

It prints exactly one line on stdout, ``alpaca simulator listening on
HOST:PORT``, once it accepts connections, and logs to stderr. SIGTERM or
Ctrl-C stops it with exit code 0; 1 means it could not listen (HTTP or
discovery port), 2 bad arguments.

Devices (``/api/v1/{type}/{number}/{member}``)
    ``telescope/0`` the mount (telescope.py), ``dome/0`` (dome.py),
    ``camera/0`` VIS and ``camera/1`` NIR (camera.py, images from
    starfield.py), ``filterwheel/0`` VIS and ``filterwheel/1`` NIR
    (filterwheel.py). Each starts disconnected; members other than the
    common identity ones answer 0x407 until ``Connected`` is set or
    ``Connect`` has completed (``Connecting`` false again). Physics is
    computed from the monotonic clock on every request, times scaled by
    ``--time-scale``; the sky (sidereal time, Alt/Az, site.py) follows real UTC.

Protocol
    GET takes query parameters, PUT a form-encoded body; parameter names are
    case-insensitive in both. Replies are JSON: ``Value`` (getters),
    ``ClientTransactionID`` (echoed, 0 when absent), ``ServerTransactionID``
    (1, 2, 3... across the server), ``ErrorNumber``, ``ErrorMessage``.
    HTTP 400 (plain text) for what cannot be interpreted: an unknown device
    type or number, a device type not in lower case, a member outside the
    device's interface or called with the wrong verb, a missing or
    unparseable parameter (``RightAscension=abc``, ``Connected=maybe``), a
    ClientID or ClientTransactionID that is not an unsigned integer. HTTP 200
    with ErrorNumber otherwise: 0x400 interface members this simulator does
    not implement, 0x401 values out of range, 0x402 values not yet set,
    0x407 not connected, 0x408 parked, 0x40B invalid operation, 0x500 an
    injected hardware fault. ``ImageArray`` is JSON (``Type`` 2, ``Rank``
    2, ``Value[x][y]``) or, when the request accepts
    ``application/imagebytes``, Alpaca ImageBytes (Int32 image, UInt16 on
    the wire); errors are always JSON.

Management API and discovery
    ``/management/apiversions`` ([1]), ``/management/v1/description``,
    ``/management/v1/configureddevices``. UDP discovery on
    ``--discovery-port`` (default 32227, 0 = off; see discovery.py):
    ``alpacadiscovery1`` is answered ``{"AlpacaPort": PORT}``.

Fault injection (simulator only; DCS device servers never use this path)
    ``PUT /simulator/fault`` with form fields ``device`` (``telescope/0``,
    ``dome/0``, ``camera/1``...) and ``fault``:

    ``mount_silent`` (telescope) or ``silent`` (any device)
        accept the device's requests but never answer them, until cleared;
        requests held meanwhile are then closed unanswered, not executed.
        Other devices, the management API and this endpoint keep answering.
    ``shutter_stuck`` (dome)
        the shutter stalls: opening/closing is reported forever, never completed.
    ``camera_error`` (camera)
        CameraState 5; an exposure under way is lost and StartExposure
        answers ErrorNumber 0x500 until cleared.
    ``none``
        clear the device's fault (a stalled shutter resumes, the camera idles).

    The reply is an Alpaca envelope whose ``Value`` maps every device to its
    fault; ``GET /simulator/fault`` returns the same map. An unknown device or
    fault is HTTP 400. Example::

        curl -X PUT -d device=dome/0 -d fault=shutter_stuck http://127.0.0.1:PORT/simulator/fault

Why the standard library's ThreadingHTTPServer and no web framework: the
protocol is a handful of fixed URL shapes, and the simulator must control the
socket itself for the silent-device fault (accept, read, never answer, close
later), which frameworks hide behind their own worker and timeout handling.
One thread per connection matches how clients (alpyca keeps one session per
device) talk to it, and it adds no dependency to DCS.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import re
import signal
import struct
import sys
import threading
from collections.abc import Iterable
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import numpy as np

from simulators.alpaca.camera import DEFAULT_READOUT_TIME, NIR_SENSOR, VIS_SENSOR, Camera, ImageArray
from simulators.alpaca.device import AlpacaDevice, AlpacaError, BadRequest, SimClock, listing
from simulators.alpaca.discovery import DISCOVERY_PORT, DiscoveryResponder
from simulators.alpaca.dome import DEFAULT_DOME_RATE, DEFAULT_SHUTTER_TIME, Dome
from simulators.alpaca.filterwheel import DEFAULT_FILTER_TIME, NIR_FILTERS, VIS_FILTERS, FilterWheel
from simulators.alpaca.site import DEFAULT_HEIGHT, DEFAULT_LATITUDE, DEFAULT_LONGITUDE, Site
from simulators.alpaca.starfield import Sensor
from simulators.alpaca.telescope import DEFAULT_SLEW_RATE, Telescope
from simulators.arguments import port as _port

log = logging.getLogger("simulators.alpaca")

DEFAULT_PORT = 11111  # the usual Alpaca port
SERVER_NAME = "DCS Alpaca simulator"
MANUFACTURER = "DCS"
VERSION = "1.0"
MAX_BODY = 64 * 1024  # bytes; Alpaca PUT bodies are a few form fields
MAX_CLIENT_NUMBER = 4_294_967_295
JSON_TYPE = "application/json; charset=utf-8"
IMAGEBYTES_TYPE = "application/imagebytes"
IMAGE_INT32, TRANSMIT_UINT16 = 2, 8  # ImageBytes element type codes
_DIGITS = re.compile(r"\d+")


class AlpacaHttpServer(ThreadingHTTPServer):
    """HTTP front end: one thread per connection, all sharing the devices."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], devices: Iterable[AlpacaDevice], location: str) -> None:
        super().__init__(address, AlpacaRequestHandler)
        self.devices = {(device.device_type, device.number): device for device in devices}
        self.location = location
        self.stopping = threading.Event()
        self._transactions = itertools.count(1)
        self._transaction_lock = threading.Lock()

    def next_transaction(self) -> int:
        with self._transaction_lock:
            return next(self._transactions)

    def request_exit(self) -> None:
        """Stop serving; safe from a signal handler."""
        self.stopping.set()
        threading.Thread(target=self.shutdown, name="alpaca-shutdown", daemon=True).start()

    def device(self, device_type: str, number_text: str) -> AlpacaDevice:
        if device_type != device_type.lower():
            raise BadRequest(f"device type {device_type!r} must be lower case")
        if not _DIGITS.fullmatch(number_text):
            raise BadRequest(f"bad device number {number_text!r} (a non-negative integer)")
        device = self.devices.get((device_type, int(number_text)))
        if device is None:
            raise BadRequest(
                f"no device {device_type}/{number_text} on this server (configured: {listing(self.devices.values())})"
            )
        return device

    def fault_map(self) -> dict[str, str]:
        return {device.path: device.fault for device in self.devices.values()}


class AlpacaRequestHandler(BaseHTTPRequestHandler):
    """Routes /api/v1, /management and /simulator requests."""

    protocol_version = "HTTP/1.1"
    server_version = f"dcs-alpaca-simulator/{VERSION}"
    # Headers and body go out in two writes; without this, Nagle's algorithm and
    # the client's delayed ACK add ~40 ms to every answer on a kept-alive connection.
    disable_nagle_algorithm = True
    server: AlpacaHttpServer

    def do_GET(self) -> None:  # noqa: N802 (name fixed by BaseHTTPRequestHandler)
        self._dispatch("GET")

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch("PUT")

    def _dispatch(self, verb: str) -> None:
        url = urlsplit(self.path)
        parts = url.path.strip("/").split("/")
        try:
            body = self._read_body()
            query = url.query if verb == "GET" else body.decode("utf-8", errors="replace")
            if parts[0] == "api":
                self._device_request(verb, parts, query)
            elif parts[0] == "management":
                self._management(verb, parts, query)
            elif parts[0] == "simulator":
                self._simulator(verb, parts, query)
            elif parts == [""]:
                self._send(200, self._index().encode(), "text/plain; charset=utf-8")
            else:
                self._send(404, f"not found: {url.path} (Alpaca devices are under /api/v1/)\n".encode(), "text/plain")
        except BadRequest as error:
            log.warning("400 %s %s: %s", verb, self.path, error)
            self._send(400, f"{error}\n".encode(), "text/plain; charset=utf-8")
        except Exception as error:  # a simulator bug must not look like a silent device
            log.exception("%s %s failed", verb, self.path)
            self._send(500, f"internal simulator error: {error}\n".encode(), "text/plain; charset=utf-8")

    # -- /api/v1/{type}/{number}/{member} ----------------------------------------------------

    def _device_request(self, verb: str, parts: list[str], query: str) -> None:
        if len(parts) != 5 or parts[1] != "v1":
            raise BadRequest(f"bad Alpaca URL {self.path!r} (expected /api/v1/<device type>/<number>/<member>)")
        device = self.server.device(parts[2], parts[3])
        if device.silent:
            return self._hold(device)
        member = parts[4]
        if member != member.lower():
            raise BadRequest(f"member {member!r} must be lower case in the URL")
        params = _parameters(query)
        client_transaction = _client_number(params, "ClientTransactionID")
        _client_number(params, "ClientID")
        transaction = self.server.next_transaction()
        try:
            value = device.call(verb, member, params)
        except AlpacaError as error:
            log.info("%s %s/%s: error 0x%X %s", verb, device.path, member, error.number, error.message)
            self._reply(client_transaction, transaction, error_number=error.number, error_message=error.message)
            return
        if isinstance(value, ImageArray):
            return self._image(value, client_transaction, transaction)
        self._reply(client_transaction, transaction, value=value, has_value=verb == "GET")

    def _hold(self, device: AlpacaDevice) -> None:
        """Silent device: keep the request unanswered until the fault is cleared, then hang up."""
        log.info("%s %s held unanswered (%s)", self.command, self.path, device.fault)
        while not device.wait_unsilenced(0.25) and not self.server.stopping.is_set():
            pass
        self.close_connection = True

    def _image(self, image: ImageArray, client_transaction: int, transaction: int) -> None:
        pixels = image.pixels
        if IMAGEBYTES_TYPE in self.headers.get("Accept", "").lower():
            num_x, num_y = pixels.shape
            header = struct.pack(
                "<iiIIiiiiiii", 1, 0, client_transaction, transaction, 44,
                IMAGE_INT32, TRANSMIT_UINT16, 2, num_x, num_y, 0,
            )  # fmt: skip
            self._send(200, header + pixels.astype("<u2").tobytes(), IMAGEBYTES_TYPE)
            return
        envelope = {"Type": 2, "Rank": 2, "Value": pixels.tolist()}
        envelope.update(_envelope(client_transaction, transaction))
        self._send(200, json.dumps(envelope).encode(), JSON_TYPE)

    # -- /management ---------------------------------------------------------------------------

    def _management(self, verb: str, parts: list[str], query: str) -> None:
        if verb != "GET":
            raise BadRequest("the management API takes GET only")
        params = _parameters(query)
        client_transaction = _client_number(params, "ClientTransactionID")
        _client_number(params, "ClientID")
        route = "/".join(parts[1:])
        devices = self.server.devices.values()
        value: Any
        if route == "apiversions":
            value = [1]
        elif route == "v1/description":
            value = {
                "ServerName": SERVER_NAME,
                "Manufacturer": MANUFACTURER,
                "ManufacturerVersion": VERSION,
                "Location": self.server.location,
            }
        elif route == "v1/configureddevices":
            value = [
                {
                    "DeviceName": device.name,
                    "DeviceType": _DEVICE_TYPE_NAMES[device.device_type],
                    "DeviceNumber": device.number,
                    "UniqueID": device.unique_id,
                }
                for device in devices
            ]
        else:
            raise BadRequest(
                f"unknown management URL {self.path!r} (apiversions, v1/description, v1/configureddevices)"
            )
        self._reply(client_transaction, self.server.next_transaction(), value=value, has_value=True)

    # -- /simulator/fault -------------------------------------------------------------------------

    def _simulator(self, verb: str, parts: list[str], query: str) -> None:
        if parts[1:] != ["fault"]:
            raise BadRequest(f"unknown simulator URL {self.path!r} (only /simulator/fault)")
        if verb == "PUT":
            params = _parameters(query)
            path, fault = params.get("device", ""), params.get("fault", "").strip().lower()
            device_type, _, number_text = path.strip().partition("/")
            device = self.server.device(device_type, number_text)
            try:
                device.set_fault(fault)
            except ValueError as error:
                raise BadRequest(str(error)) from None
        self._reply(0, self.server.next_transaction(), value=self.server.fault_map(), has_value=True)

    # -- plumbing ---------------------------------------------------------------------------------

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            raise BadRequest("chunked request bodies are not supported (send Content-Length)")
        text = self.headers.get("Content-Length") or "0"
        if not _DIGITS.fullmatch(text.strip()) or int(text) > MAX_BODY:
            self.close_connection = True
            raise BadRequest(f"bad Content-Length {text!r} (at most {MAX_BODY} bytes)")
        return self.rfile.read(int(text))

    def _reply(
        self,
        client_transaction: int,
        transaction: int,
        value: Any = None,
        has_value: bool = False,
        error_number: int = 0,
        error_message: str = "",
    ) -> None:
        envelope: dict[str, Any] = {"Value": _jsonable(value)} if has_value else {}
        envelope.update(_envelope(client_transaction, transaction, error_number, error_message))
        self._send(200, json.dumps(envelope).encode(), JSON_TYPE)

    def _send(self, status: int, payload: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)

    def _index(self) -> str:
        lines = [f"{SERVER_NAME} {VERSION}: ASCOM Alpaca API v1", "devices:"]
        lines += [f"  /api/v1/{device.path}/  {device.name}" for device in self.server.devices.values()]
        lines += ["management: /management/apiversions, /management/v1/description, /management/v1/configureddevices"]
        lines += ["faults: PUT /simulator/fault device=<type>/<number> fault=<name|none>", ""]
        return "\n".join(lines)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (signature of the base class)
        log.debug("%s %s", self.client_address[0], format % args)


_DEVICE_TYPE_NAMES = {"telescope": "Telescope", "dome": "Dome", "camera": "Camera", "filterwheel": "FilterWheel"}


def _parameters(query: str) -> dict[str, str]:
    """Query or form fields by lower-case name; the first occurrence of a name wins."""
    params: dict[str, str] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        params.setdefault(name.lower(), value)
    return params


def _client_number(params: dict[str, str], name: str) -> int:
    """ClientID / ClientTransactionID: 0 when absent, HTTP 400 when not an unsigned 32-bit integer."""
    text = params.get(name.lower())
    if text is None:
        return 0
    if not _DIGITS.fullmatch(text.strip()) or int(text) > MAX_CLIENT_NUMBER:
        raise BadRequest(f"bad {name} {text!r} (an integer 0 to {MAX_CLIENT_NUMBER})")
    return int(text)


def _envelope(
    client_transaction: int, transaction: int, error_number: int = 0, error_message: str = ""
) -> dict[str, Any]:
    return {
        "ClientTransactionID": client_transaction,
        "ServerTransactionID": transaction,
        "ErrorNumber": error_number,
        "ErrorMessage": error_message,
    }


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return value


# -- assembly and command line --------------------------------------------------------------------


def build_devices(args: argparse.Namespace, clock: SimClock, site: Site) -> list[AlpacaDevice]:
    """The observatory: one mount, one dome, a VIS and a NIR camera, each camera's filter wheel."""
    vis_sensor = _resized(VIS_SENSOR, args.vis_size)
    nir_sensor = _resized(NIR_SENSOR, args.nir_size)
    return [
        Telescope(0, clock, site, args.slew_rate),
        Dome(0, clock, args.dome_rate, args.shutter_time),
        Camera(0, clock, vis_sensor, "VIS", args.readout_time, args.seed),
        Camera(1, clock, nir_sensor, "NIR", args.readout_time, args.seed),
        FilterWheel(0, clock, VIS_FILTERS, "VIS", args.filter_time),
        FilterWheel(1, clock, NIR_FILTERS, "NIR", args.filter_time),
    ]


def _resized(sensor: Sensor, size: tuple[int, int] | None) -> Sensor:
    if size is None:
        return sensor
    return replace(sensor, x_size=size[0], y_size=size[1])


def _positive(text: str) -> float:
    value = float(text)
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value



def _size(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d+)[xX](\d+)", text.strip())
    if not match or not all(0 < int(group) <= 16384 for group in match.groups()):
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT in pixels (1 to 16384), got {text!r}")
    return int(match.group(1)), int(match.group(2))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m simulators.alpaca.server",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Simulate the observatory's ASCOM Alpaca devices in one server: telescope/0 (mount),\n"
            "dome/0, camera/0 (VIS), camera/1 (NIR), filterwheel/0 (VIS), filterwheel/1 (NIR).\n"
            "\n"
            "Once ready it prints exactly one line on stdout,\n"
            "  alpaca simulator listening on HOST:PORT\n"
            "and logs to stderr. SIGTERM or Ctrl-C stops it with exit code 0."
        ),
        epilog=(
            "fault injection (simulator only):\n"
            "  PUT /simulator/fault  device=telescope/0 fault=mount_silent   never answer the mount\n"
            "                        device=dome/0      fault=shutter_stuck  shutter never completes a stroke\n"
            "                        device=camera/N    fault=camera_error   CameraState 5, exposures fail 0x500\n"
            "                        device=<any>       fault=silent         never answer that device\n"
            "                        device=<any>       fault=none           clear\n"
            "  GET /simulator/fault  current faults"
        ),
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument(
        "--port", type=_port, default=DEFAULT_PORT, help="HTTP port; 0 picks a free one (default: %(default)s)"
    )
    parser.add_argument(
        "--discovery-port",
        type=_port,
        default=DISCOVERY_PORT,
        help="UDP discovery port, 0 = no discovery (default: %(default)s)",
    )
    parser.add_argument(
        "--slew-rate", type=_positive, default=DEFAULT_SLEW_RATE, help="mount slew rate, deg/s (default: %(default)s)"
    )
    parser.add_argument(
        "--dome-rate",
        type=_positive,
        default=DEFAULT_DOME_RATE,
        help="dome rotation rate, deg/s (default: %(default)s)",
    )
    parser.add_argument(
        "--shutter-time",
        type=_positive,
        default=DEFAULT_SHUTTER_TIME,
        help="full shutter stroke, s (default: %(default)s)",
    )
    parser.add_argument(
        "--filter-time",
        type=_non_negative,
        default=DEFAULT_FILTER_TIME,
        help="filter wheel time per slot, s (default: %(default)s)",
    )
    parser.add_argument(
        "--readout-time",
        type=_non_negative,
        default=DEFAULT_READOUT_TIME,
        help="camera readout time, s (default: %(default)s)",
    )
    parser.add_argument(
        "--site-lat", type=float, default=DEFAULT_LATITUDE, help="site latitude, deg north (default: %(default)s)"
    )
    parser.add_argument(
        "--site-lon", type=float, default=DEFAULT_LONGITUDE, help="site longitude, deg east (default: %(default)s)"
    )
    parser.add_argument(
        "--site-height", type=float, default=DEFAULT_HEIGHT, help="site height, m (default: %(default)s)"
    )
    parser.add_argument(
        "--time-scale",
        type=_positive,
        default=1.0,
        help="speed-up of every simulated duration (slews, shutter, filters, exposures, readout, cooling); "
        "the sky keeps real time (default: %(default)s)",
    )
    parser.add_argument("--vis-size", type=_size, default=None, help="VIS sensor WIDTHxHEIGHT (default: 256x256)")
    parser.add_argument("--nir-size", type=_size, default=None, help="NIR sensor WIDTHxHEIGHT (default: 128x128)")
    parser.add_argument("--seed", type=int, default=0, help="star field and noise seed (default: %(default)s)")
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="stderr log level (default: %(default)s)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        site = Site(args.site_lat, args.site_lon, args.site_height)
    except ValueError as error:
        parser.error(str(error))
    clock = SimClock(args.time_scale)
    site.warm_up()  # load astropy's tables before the first request rather than during it
    devices = build_devices(args, clock, site)

    try:
        httpd = AlpacaHttpServer((args.host, args.port), devices, f"simulated site {site}")
    except OSError as error:
        log.error("cannot listen on %s:%s: %s", args.host, args.port, error)
        return 1
    port = int(httpd.server_address[1])
    discovery: DiscoveryResponder | None = None
    if args.discovery_port:
        try:
            discovery = DiscoveryResponder(args.discovery_port, port).start()
        except OSError as error:
            log.error(
                "cannot listen for discovery on UDP port %d: %s (use --discovery-port 0 to disable)",
                args.discovery_port,
                error,
            )
            httpd.server_close()
            return 1
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: httpd.request_exit())

    # The one line on stdout: a parent process reads it to learn the port.
    print(f"alpaca simulator listening on {args.host}:{port}", flush=True)
    log.info(
        "devices %s; site %s; slew %g deg/s, dome %g deg/s, shutter %g s, filter %g s/slot, readout %g s, time x%g",
        listing(devices), site, args.slew_rate, args.dome_rate, args.shutter_time, args.filter_time,
        args.readout_time, args.time_scale,
    )  # fmt: skip
    try:
        httpd.serve_forever(poll_interval=0.1)
    finally:
        httpd.server_close()
        if discovery is not None:
            discovery.close()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
