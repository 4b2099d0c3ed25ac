"""The link to one ASCOM Alpaca device: REST over HTTP, with DCS's own timeouts and errors.

Why not alpyca here (it is used in the conformance tests): it holds one
process-wide lock for the whole of every HTTP request and gives every
property a fixed 5 s timeout, so in a device server one silent device would
hold up every other Alpaca call of the process for 5 s at a time: a stuck
mount must never delay closing the dome. This client is small: GET with
query parameters, PUT with a form body, ``ClientID`` and
``ClientTransactionID``, and the Alpaca error envelope turned into
exceptions that name the device, the member and the cause.
"""

from __future__ import annotations

import itertools
import os
from typing import Any

import requests

from device_servers.common.device import ReplyError
from device_servers.common.link import HardwareLink, LinkError

# Alpaca error numbers (ASCOM), as named in the standard.
NOT_IMPLEMENTED = 0x400
INVALID_VALUE = 0x401
VALUE_NOT_SET = 0x402
NOT_CONNECTED = 0x407
PARKED = 0x408
SLAVED = 0x409
INVALID_OPERATION = 0x40B
OPERATION_CANCELLED = 0x40E
ERROR_NAMES = {
    NOT_IMPLEMENTED: "not implemented",
    INVALID_VALUE: "invalid value",
    VALUE_NOT_SET: "value not set",
    NOT_CONNECTED: "not connected",
    PARKED: "parked",
    SLAVED: "slaved",
    INVALID_OPERATION: "invalid operation",
    OPERATION_CANCELLED: "operation cancelled",
}
_transactions = itertools.count(1)
_CLIENT_ID = os.getpid() % 65536


class AlpacaError(ReplyError):
    """The device answered with an Alpaca error."""

    def __init__(self, number: int, message: str) -> None:
        self.number = number
        name = ERROR_NAMES.get(number, "driver error")
        super().__init__(f"{message} (Alpaca error {number:#x}, {name})")


class AlpacaLink(HardwareLink):
    """One device on an Alpaca server: ``/api/v1/{device_type}/{number}/{member}``."""

    def __init__(self, host: str, port: int, device_type: str, number: int = 0, timeout: float = 2.0) -> None:
        super().__init__(timeout)
        self.host, self.port = host, port
        self.device_type, self.number = device_type.lower(), number
        self.base = f"http://{host}:{port}/api/v1/{self.device_type}/{number}"
        self._session: requests.Session | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port} ({self.device_type} {self.number})"

    @property
    def connected(self) -> bool:
        return self._session is not None

    def connect(self) -> None:
        self._session = requests.Session()
        try:
            if not self.get("connected"):
                self.put("connected", Connected="true")
            if not self.get("connected"):
                raise LinkError(f"{self.address} did not connect")
        except LinkError:
            self.close()
            raise

    def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            session.close()

    def get(self, member: str, **params: Any) -> Any:
        return self._call("GET", member, params)["Value"]

    def put(self, member: str, **params: Any) -> Any:
        return self._call("PUT", member, params).get("Value")

    def _call(self, method: str, member: str, params: dict[str, Any]) -> dict[str, Any]:
        session = self._session
        if session is None:
            raise LinkError(f"not connected to {self.address}")
        params = {**params, "ClientID": _CLIENT_ID, "ClientTransactionID": next(_transactions)}
        url = f"{self.base}/{member.lower()}"
        try:
            if method == "GET":
                response = session.get(url, params=params, timeout=self.timeout)
            else:
                response = session.put(url, data=params, timeout=self.timeout)
        except requests.Timeout as exc:
            self.close()
            raise LinkError(f"{self.address} did not answer {member} within {self.timeout:g} s") from exc
        except requests.RequestException as exc:
            self.close()
            raise LinkError(f"{self.address} unreachable ({member}): {_reason(exc)}") from exc
        if response.status_code != 200:
            raise ReplyError(f"{self.address}: {method} {member} refused with HTTP {response.status_code}: {response.text[:120]}")
        try:
            body = response.json()
        except ValueError as exc:
            raise ReplyError(f"{self.address}: {member} answered with no JSON") from exc
        number = int(body.get("ErrorNumber", 0) or 0)
        if number:
            raise AlpacaError(number, f"{self.address}: {member}: {body.get('ErrorMessage') or 'error'}")
        return body


def _reason(exc: Exception) -> str:
    text = str(exc)
    for marker in ("Connection refused", "Connection reset", "Name or service not known"):
        if marker in text:
            return marker
    return text if len(text) < 160 else text[:157] + "..."
