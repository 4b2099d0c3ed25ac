"""The link to one GET ECC server: SOAP 1.1 over HTTP through zeep, with DCS's own WSDL.

Every call has an HTTP timeout, so an ECC server that stops answering is
a LinkError within seconds instead of a hung device.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from enum import IntEnum
from importlib import resources
from typing import Any
from xml.sax.saxutils import escape

import requests
import zeep
from lxml import etree
from zeep.exceptions import Error as ZeepError
from zeep.transports import Transport

from device_servers.common.device import ReplyError
from device_servers.common.link import HardwareLink, LinkError

SERVICE = "{urn:ecc}ecc"


class CoboState(IntEnum):
    """The CoBo state machine, with GET's own integers."""

    Off = 0
    Idle = 1
    Described = 2
    Prepared = 3
    Ready = 4
    Running = 5
    Paused = 6


class Transition(IntEnum):
    none = 0
    describing = 1
    preparing = 2
    configuring = 3
    starting = 4
    stopping = 5
    pausing = 6
    resuming = 7
    breaking_up = 8
    resetting = 9


# (operation, from, to): only adjacent steps exist.
STEPS: dict[str, tuple[CoboState, CoboState]] = {
    "Describe": (CoboState.Idle, CoboState.Described),
    "Prepare": (CoboState.Described, CoboState.Prepared),
    "Configure": (CoboState.Prepared, CoboState.Ready),
    "Start": (CoboState.Ready, CoboState.Running),
    "Stop": (CoboState.Running, CoboState.Ready),
}
# One step back from each state ("Reset" in the user interface).
BACK: dict[CoboState, str] = {
    CoboState.Ready: "Breakup",
    CoboState.Prepared: "Undo",
    CoboState.Described: "Undo",
}


@dataclass(frozen=True)
class EccState:
    """What GetState says."""

    error_code: int
    error_message: str
    state: CoboState
    transition: int


@dataclass(frozen=True)
class ConfigSet:
    """A describe/prepare/configure triple, shown to users as ``describe/prepare/configure``."""

    describe: str
    prepare: str
    configure: str

    @property
    def name(self) -> str:
        return f"{self.describe}/{self.prepare}/{self.configure}"

    @classmethod
    def parse(cls, name: str) -> ConfigSet:
        parts = name.split("/")
        if len(parts) != 3 or not all(parts):
            raise ValueError(f"{name!r} is not describe/prepare/configure (e.g. cobo0/experiment/experiment)")
        return cls(*parts)

    def xml(self) -> str:
        return (
            "<ConfigId>"
            f'<SubConfigId type="describe">{escape(self.describe)}</SubConfigId>'
            f'<SubConfigId type="prepare">{escape(self.prepare)}</SubConfigId>'
            f'<SubConfigId type="configure">{escape(self.configure)}</SubConfigId>'
            "</ConfigId>"
        )


@dataclass(frozen=True)
class DataLink:
    """One data source and the data router its data goes to."""

    source: str
    router: str
    ip: str
    port: int
    kind: str = "TCP"

    @classmethod
    def parse(cls, line: str) -> DataLink:
        """``CoBo[0] DataRouter0 127.0.0.1 46005 TCP`` (the form of the DataLinks property)."""
        parts = line.split()
        if len(parts) not in (4, 5) or not parts[3].isdigit():
            raise ValueError(f"data link {line!r} is not 'SOURCE ROUTER IP PORT [TYPE]'")
        kind = parts[4] if len(parts) == 5 else "TCP"
        if kind not in ("ICE", "TCP", "FDT", "ZBUF"):
            raise ValueError(f"data link {line!r}: router type must be ICE, TCP, FDT or ZBUF")
        return cls(parts[0], parts[1], parts[2], int(parts[3]), kind)


def data_link_set(links: list[DataLink]) -> str:
    """The DataLinkSet XML that Configure carries."""
    root = etree.Element("DataLinkSet")
    for link in links:
        item = etree.SubElement(root, "DataLink")
        etree.SubElement(item, "DataSender", id=link.source)
        etree.SubElement(
            item, "DataRouter", name=link.router, ipAddress=link.ip, port=str(link.port), type=link.kind
        )
    return etree.tostring(root, encoding="unicode")


def parse_config_ids(text: str) -> list[ConfigSet]:
    """The ConfigId children of GetConfigIDs' Text, whatever its root element is called."""
    try:
        root = etree.fromstring(text.encode())
    except etree.XMLSyntaxError as exc:
        raise ReplyError(f"GetConfigIDs returned malformed XML: {exc}") from exc
    out = []
    for config in root.iter("ConfigId"):
        parts = {sub.get("type"): (sub.text or "").strip() for sub in config.iter("SubConfigId")}
        if all(parts.get(k) for k in ("describe", "prepare", "configure")):
            out.append(ConfigSet(parts["describe"], parts["prepare"], parts["configure"]))
    return sorted(set(out), key=lambda c: c.name)


class EccLink(HardwareLink):
    """SOAP calls to one ECC server."""

    def __init__(self, host: str, port: int, timeout: float = 3.0) -> None:
        super().__init__(timeout)
        self.host = host
        self.port = port
        self._service: Any = None
        self._call_lock = threading.Lock()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def connected(self) -> bool:
        return self._service is not None

    def connect(self) -> None:
        wsdl = resources.files("device_servers.daq").joinpath("ecc.wsdl")
        with resources.as_file(wsdl) as path:
            client = zeep.Client(
                wsdl=str(path),
                transport=Transport(timeout=self.timeout, operation_timeout=self.timeout),
            )
        self._client = client
        self._service = client.create_service(SERVICE, f"http://{self.host}:{self.port}/")
        self.get_state()  # proves the server answers

    def close(self) -> None:
        self._service = None

    def _call(self, operation: str, **arguments: str) -> Any:
        service = self._service
        if service is None:
            raise LinkError(f"not connected to ECC server {self.address}")
        try:
            with self._call_lock:
                return getattr(service, operation)(**arguments)
        except requests.Timeout as exc:
            self.close()
            raise LinkError(f"ECC server {self.address} did not answer {operation} within {self.timeout:g} s") from exc
        except requests.RequestException as exc:
            self.close()
            raise LinkError(f"ECC server {self.address} unreachable ({operation}): {_reason(exc)}") from exc
        except ZeepError as exc:
            raise ReplyError(f"ECC server {self.address}: {operation} answered with a SOAP error: {exc}") from exc

    def get_state(self) -> EccState:
        reply = self._call("GetState")
        try:
            state = CoboState(int(reply.State))
        except ValueError as exc:
            raise ReplyError(f"ECC server {self.address}: unknown state {reply.State}") from exc
        return EccState(int(reply.ErrorCode), reply.ErrorMessage or "", state, int(reply.Transition))

    def get_config_ids(self) -> list[ConfigSet]:
        reply = self._call("GetConfigIDs")
        self._check(reply, "GetConfigIDs")
        return parse_config_ids(reply.Text or "")

    def transition(self, operation: str, config: ConfigSet | None, table: str = "") -> None:
        """Ask for a transition; ReplyError carries the ECC server's ErrorMessage when refused."""
        reply = self._call(operation, configID=config.xml() if config else "", table=table)
        self._check(reply, operation)

    def _check(self, reply: Any, operation: str) -> None:
        if int(reply.ErrorCode) != 0:
            raise ReplyError(f"{operation} refused by the ECC server (error {reply.ErrorCode}): {reply.ErrorMessage}")


def _reason(exc: Exception) -> str:
    text = str(exc)
    for marker in ("Connection refused", "Name or service not known", "No route to host", "Connection reset"):
        if marker in text:
            return marker
    return text if len(text) < 160 else text[:157] + "..."
