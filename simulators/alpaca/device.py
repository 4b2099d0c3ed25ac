"""What every simulated Alpaca device shares: errors, parameters, the member table, Connected and faults.

A device class reads like a datasheet. Its ASCOM interface is declared once
as a string (``interface("AbortSlew:P Altitude:G Tracking:GP ...")``, G for
GET, P for PUT), and each implemented member is a method decorated with
``@get("Name")`` or ``@put("Name", Param=type, ...)``. The server routes a
request with ``device.call(verb, member, params)``:

* an implemented member runs under the device lock, after ``update()`` has
  brought the physics to the present;
* a member of the interface the simulator does not implement answers
  ErrorNumber 0x400 (NotImplemented);
* anything else (a name outside the interface, GET on a PUT-only member, a
  missing or unparseable parameter) raises ``BadRequest``: HTTP 400.

Parameter names are matched case-insensitively, in GET queries and PUT
bodies alike. Members need ``Connected`` True (else 0x407) except the
common members a client reads before connecting (``Connected``,
``Connecting``, ``Connect``, ``Disconnect``, ``Description``, ``DriverInfo``,
``DriverVersion``, ``InterfaceVersion``, ``Name``, ``SupportedActions``).

Time comes from a ``SimClock``: monotonic seconds multiplied by
``--time-scale``, so every duration (slews, shutter, filters, exposures,
readout, cooling, connecting) runs that much faster while the sky (sidereal
time, Alt/Az) stays on the real UTC clock.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, TypeVar

log = logging.getLogger("simulators.alpaca")

# ASCOM Alpaca error numbers (shared/specs/observatory.md).
NOT_IMPLEMENTED = 0x400
INVALID_VALUE = 0x401
VALUE_NOT_SET = 0x402
NOT_CONNECTED = 0x407
PARKED = 0x408
SLAVED = 0x409
INVALID_OPERATION = 0x40B
ACTION_NOT_IMPLEMENTED = 0x40C
OPERATION_CANCELLED = 0x40E
DRIVER_ERROR = 0x500  # first driver-specific number; the simulator's injected hardware faults use it

CONNECT_TIME = 0.2  # s (simulated) that Connect() and Disconnect() keep Connecting true

# Members that answer whether or not the device is connected.
_UNCONNECTED_MEMBERS = frozenset(
    {
        "connected",
        "connecting",
        "connect",
        "disconnect",
        "description",
        "driverinfo",
        "driverversion",
        "interfaceversion",
        "name",
        "supportedactions",
    }
)

COMMON_INTERFACE = (
    "Action:P CommandBlind:P CommandBool:P CommandString:P Connect:P Connected:GP Connecting:G "
    "Description:G DeviceState:G Disconnect:P DriverInfo:G DriverVersion:G InterfaceVersion:G Name:G "
    "SupportedActions:G"
)


class AlpacaError(Exception):
    """An ASCOM error: HTTP 200 with a non-zero ErrorNumber and this message."""

    def __init__(self, number: int, message: str) -> None:
        super().__init__(message)
        self.number = number
        self.message = message


class BadRequest(Exception):
    """A request the server cannot interpret: HTTP 400 with this text."""


class SimClock:
    """Simulated seconds since start: monotonic time multiplied by ``scale``."""

    def __init__(self, scale: float = 1.0) -> None:
        if not scale > 0:
            raise ValueError(f"time scale must be > 0, got {scale}")
        self.scale = scale
        self._start = time.monotonic()

    def now(self) -> float:
        return (time.monotonic() - self._start) * self.scale


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso_utc(moment: datetime) -> str:
    """``2026-11-21T19:25:46.123Z``: the form of ``UTCDate`` and ``DeviceState``'s TimeStamp."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


# -- parameters -------------------------------------------------------------------------


def number(text: str) -> float:
    """A float parameter; non-numbers are a malformed request (finite checks are the member's job)."""
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"not a number: {text!r}") from None


def integer(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ValueError(f"not an integer: {text!r}") from None


def boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered == "true":
        return True
    if lowered == "false":
        return False
    raise ValueError(f"not a boolean (True or False): {text!r}")


def string(text: str) -> str:
    return text


Converter = Callable[[str], Any]


def in_range(name: str, value: float, low: float, high: float, unit: str = "", high_open: bool = False) -> float:
    """``value`` if finite and within [low, high] (or [low, high)); else InvalidValue (0x401)."""
    upper_ok = value < high if high_open else value <= high
    if not (math.isfinite(value) and low <= value and upper_ok):
        bracket = ")" if high_open else "]"
        raise AlpacaError(INVALID_VALUE, f"{name} {value:g} out of range [{low:g}, {high:g}{bracket}{unit}")
    return value


# -- member table -------------------------------------------------------------------------


@dataclass(frozen=True)
class Member:
    """One implemented Alpaca member: its verb, its parameters and the method answering it."""

    name: str
    verb: str
    params: tuple[tuple[str, Converter], ...]
    function: Callable[..., Any]


F = TypeVar("F", bound=Callable[..., Any])


def _member(verb: str, name: str, params: dict[str, Converter]) -> Callable[[F], F]:
    def mark(function: F) -> F:
        members = getattr(function, "_alpaca_members", [])
        members.append(Member(name, verb, tuple(params.items()), function))
        function._alpaca_members = members  # type: ignore[attr-defined]
        return function

    return mark


def get(name: str, **params: Converter) -> Callable[[F], F]:
    """Declare a GET member; ``params`` are its query parameters, in the method's argument order."""
    return _member("GET", name, params)


def put(name: str, **params: Converter) -> Callable[[F], F]:
    """Declare a PUT member; ``params`` are its form parameters, in the method's argument order."""
    return _member("PUT", name, params)


def constant(name: str, value: Any) -> Callable[..., Any]:
    """A GET member that always answers ``value``: capabilities and datasheet numbers."""

    @get(name)
    def getter(self: Any) -> Any:
        return value

    getter.__name__ = f"get_{name.lower()}"
    return getter


@dataclass(frozen=True)
class Standard:
    """A member of an ASCOM interface: its proper name and the verbs it takes."""

    name: str
    verbs: frozenset[str]


def interface(spec: str) -> dict[str, Standard]:
    """Parse ``"Name:GP Other:G"`` into {lower-case name: Standard}."""
    verbs = {"G": "GET", "P": "PUT"}
    table: dict[str, Standard] = {}
    for word in spec.split():
        name, _, flags = word.partition(":")
        table[name.lower()] = Standard(name, frozenset(verbs[flag] for flag in flags))
    return table


class AlpacaDevice:
    """Base of every simulated device: the common members, connection state, faults, the lock.

    Subclasses set ``device_type``, ``interface_version``, ``standard`` (their
    interface besides the common members), ``faults`` (the fault names they
    accept besides ``none`` and ``silent``) and ``state_members`` (what
    ``DeviceState`` reports), and override ``update(now)`` to advance their
    physics to simulated time ``now``.
    """

    device_type: ClassVar[str] = ""
    interface_version: ClassVar[int] = 1
    standard: ClassVar[dict[str, Standard]] = {}
    faults: ClassVar[tuple[str, ...]] = ()
    state_members: ClassVar[tuple[str, ...]] = ()
    driver_version: ClassVar[str] = "1.0"
    _members: ClassVar[dict[tuple[str, str], Member]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        members: dict[tuple[str, str], Member] = {}
        for klass in reversed(cls.__mro__):
            for attribute in vars(klass).values():
                for member in getattr(attribute, "_alpaca_members", ()):
                    members[(member.verb, member.name.lower())] = member
        cls._members = members

    def __init__(self, number: int, name: str, description: str, clock: SimClock) -> None:
        self.number = number
        self.name = name
        self.description = description
        self.clock = clock
        self.lock = threading.RLock()
        self.connected = False
        self._connecting_until: float | None = None
        self._connecting_to = False
        self.fault = "none"
        self._unsilenced = threading.Event()
        self._unsilenced.set()

    @property
    def path(self) -> str:
        """``telescope/0``: how URLs, logs and error messages name the device."""
        return f"{self.device_type}/{self.number}"

    @property
    def unique_id(self) -> str:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"dcs-alpaca-simulator/{self.path}"))

    # -- dispatch ---------------------------------------------------------------------

    def call(self, verb: str, name: str, params: dict[str, str]) -> Any:
        """Answer one request; ``params`` has lower-case names. Raises AlpacaError or BadRequest."""
        member = self._members.get((verb, name))
        if member is None:
            standard = self.standard.get(name) or COMMON.get(name)
            other = "PUT" if verb == "GET" else "GET"
            if standard is not None and verb in standard.verbs:
                raise AlpacaError(NOT_IMPLEMENTED, f"{self.path}: {standard.name} is not implemented by this simulator")
            if standard is not None or (other, name) in self._members:
                raise BadRequest(f"{self.path}: {name} does not take {verb} (use {other})")
            raise BadRequest(f"{self.path}: unknown member {name!r} for a {self.device_type}")
        arguments = [self._argument(member, pname, convert, params) for pname, convert in member.params]
        with self.lock:
            self.update(self.clock.now())
            if name not in _UNCONNECTED_MEMBERS and not self.connected:
                raise AlpacaError(NOT_CONNECTED, f"{self.path}: {member.name} refused: not connected (set Connected)")
            return member.function(self, *arguments)

    def _argument(self, member: Member, pname: str, convert: Converter, params: dict[str, str]) -> Any:
        text = params.get(pname.lower())
        if text is None or (text.strip() == "" and convert is not string):
            raise BadRequest(f"{self.path}: {member.name}: missing parameter {pname}")
        try:
            return convert(text)
        except ValueError as error:
            raise BadRequest(f"{self.path}: {member.name}: bad parameter {pname}: {error}") from None

    def update(self, now: float) -> None:
        """Advance the physics to simulated time ``now`` (seconds); called before every member."""
        if self._connecting_until is not None and now >= self._connecting_until:
            self.connected = self._connecting_to
            self._connecting_until = None
            log.info("%s %s", self.path, "connected" if self.connected else "disconnected")

    # -- faults -----------------------------------------------------------------------

    def set_fault(self, fault: str) -> None:
        """Inject a fault (``none`` clears); raises ValueError for a fault this device does not know."""
        known = ("none", "silent", *self.faults)
        if fault not in known:
            raise ValueError(f"{self.path} has no fault {fault!r} (known: {', '.join(known)})")
        with self.lock:
            self.update(self.clock.now())
            previous, self.fault = self.fault, fault
            self.on_fault(previous, fault)
        if self.silent:
            self._unsilenced.clear()
        else:
            self._unsilenced.set()
        if fault == "none":
            log.info("%s: faults cleared", self.path)
        else:
            log.warning("%s: fault %s injected", self.path, fault)

    def on_fault(self, previous: str, fault: str) -> None:
        """Hook for subclasses: react to a fault change (called under the lock, physics up to date)."""

    @property
    def silent(self) -> bool:
        """True while requests to this device must go unanswered."""
        return self.fault in ("silent", "mount_silent")

    def wait_unsilenced(self, timeout: float) -> bool:
        return self._unsilenced.wait(timeout)

    # -- common members ----------------------------------------------------------------

    @get("Connected")
    def get_connected(self) -> bool:
        return self.connected

    @put("Connected", Connected=boolean)
    def set_connected(self, connected: bool) -> None:
        self._connecting_until = None
        if connected != self.connected:
            log.info("%s %s", self.path, "connected" if connected else "disconnected")
        self.connected = connected

    @put("Connect")
    def connect(self) -> None:
        self._start_connecting(True)

    @put("Disconnect")
    def disconnect(self) -> None:
        self._start_connecting(False)

    def _start_connecting(self, to: bool) -> None:
        if self.connected == to and self._connecting_until is None:
            return
        self._connecting_to = to
        self._connecting_until = self.clock.now() + CONNECT_TIME

    @get("Connecting")
    def get_connecting(self) -> bool:
        return self._connecting_until is not None

    @get("Description")
    def get_description(self) -> str:
        return self.description

    @get("DriverInfo")
    def get_driver_info(self) -> str:
        return f"DCS Alpaca simulator, {self.device_type} driver (simulated hardware, no real device)"

    @get("DriverVersion")
    def get_driver_version(self) -> str:
        return self.driver_version

    @get("InterfaceVersion")
    def get_interface_version(self) -> int:
        return self.interface_version

    @get("Name")
    def get_name(self) -> str:
        return self.name

    @get("SupportedActions")
    def get_supported_actions(self) -> list[str]:
        return []

    @get("DeviceState")
    def get_device_state(self) -> list[dict[str, Any]]:
        state: list[dict[str, Any]] = []
        for member_name in self.state_members:
            member = self._members[("GET", member_name.lower())]
            try:
                state.append({"Name": member_name, "Value": member.function(self)})
            except AlpacaError:
                continue  # unknown values are left out, never reported as errors
        state.append({"Name": "TimeStamp", "Value": iso_utc(utc_now())})
        return state


COMMON = interface(COMMON_INTERFACE)


def listing(devices: Iterable[AlpacaDevice]) -> str:
    return ", ".join(device.path for device in devices)
