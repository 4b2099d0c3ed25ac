"""Hardware links: the one object through which a device talks to its hardware.

A link knows one protocol and one address. It connects with a timeout, and
any failure raises :class:`LinkError` with a message naming the address and
the cause; the device's poller decides when to reconnect (see
:class:`Backoff`). Links are thread-safe: the poller thread and Tango's
request threads share one link.
"""

from __future__ import annotations

import shlex
import shutil
import socket
import subprocess
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence


class LinkError(Exception):
    """The hardware could not be reached or did not answer in time."""


class Backoff:
    """Delays between reconnection attempts: doubling, capped, reset on success."""

    def __init__(self, initial: float = 0.5, maximum: float = 5.0, factor: float = 2.0) -> None:
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self._next = initial

    def next_delay(self) -> float:
        delay = self._next
        self._next = min(self._next * self.factor, self.maximum)
        return delay

    def reset(self) -> None:
        self._next = self.initial


class HardwareLink(ABC):
    """Base of every link: connect, close, and say where the hardware is."""

    def __init__(self, timeout: float = 1.0) -> None:
        self.timeout = timeout
        self.lock = threading.RLock()

    @property
    @abstractmethod
    def address(self) -> str:
        """Where the hardware is, as operators would write it (host:port, a path)."""

    @property
    @abstractmethod
    def connected(self) -> bool:
        """True while the link believes the hardware is reachable."""

    @abstractmethod
    def connect(self) -> None:
        """Open the link within ``timeout``; raise LinkError otherwise."""

    @abstractmethod
    def close(self) -> None:
        """Drop the connection; safe to call at any time."""


class QueryLink(HardwareLink):
    """A link that answers one text request with one text reply."""

    @abstractmethod
    def query(self, request: str) -> str:
        """Send ``request`` and return the reply without its terminator."""


class TcpLineLink(QueryLink):
    """Line-based text protocol over TCP (telnet/SCPI style): one reply line per request."""

    def __init__(
        self,
        host: str,
        port: int,
        terminator: str = "\n",
        timeout: float = 1.0,
        encoding: str = "ascii",
    ) -> None:
        super().__init__(timeout)
        self.host = host
        self.port = port
        self.terminator = terminator.encode(encoding)
        self.encoding = encoding
        self._sock: socket.socket | None = None
        self._buffer = b""

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def connected(self) -> bool:
        return self._sock is not None

    def connect(self) -> None:
        with self.lock:
            self.close()
            try:
                sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
            except OSError as exc:
                raise LinkError(f"cannot connect to {self.address}: {_os_reason(exc)}") from exc
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(self.timeout)
            self._sock = sock
            self._buffer = b""

    def close(self) -> None:
        with self.lock:
            if self._sock is not None:
                try:
                    self._sock.close()
                except OSError:
                    pass
            self._sock = None
            self._buffer = b""

    def query(self, request: str) -> str:
        with self.lock:
            if self._sock is None:
                raise LinkError(f"not connected to {self.address}")
            try:
                self._sock.sendall(request.encode(self.encoding) + self.terminator)
                return self._read_line(request)
            except LinkError:
                self.close()
                raise
            except OSError as exc:
                # After a failed exchange the stream may hold a late reply: never reuse it.
                self.close()
                raise LinkError(f"{self.address}: {request!r} failed: {_os_reason(exc)}") from exc

    def _read_line(self, request: str) -> str:
        assert self._sock is not None
        deadline = time.monotonic() + self.timeout
        while self.terminator not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LinkError(
                    f"{self.address}: no reply to {request!r} within {self.timeout:g} s"
                )
            self._sock.settimeout(remaining)
            try:
                chunk = self._sock.recv(4096)
            except TimeoutError as exc:
                raise LinkError(
                    f"{self.address}: no reply to {request!r} within {self.timeout:g} s"
                ) from exc
            if not chunk:
                raise LinkError(f"{self.address}: connection closed by the hardware")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(self.terminator)
        return line.decode(self.encoding, errors="replace").rstrip("\r")


class CommandLineLink(QueryLink):
    """Wraps an existing command-line utility: each request is the tool's arguments.

    ``query("read 3")`` runs ``<program> read 3`` and returns its standard
    output; a non-zero exit status is an error carrying the tool's stderr.
    """

    def __init__(self, program: Sequence[str], timeout: float = 5.0) -> None:
        super().__init__(timeout)
        self.program = list(program)
        self._connected = False

    @property
    def address(self) -> str:
        return shlex.join(self.program)

    @property
    def connected(self) -> bool:
        return self._connected

    def connect(self) -> None:
        if not self.program or shutil.which(self.program[0]) is None:
            self._connected = False
            raise LinkError(f"command-line tool not found: {self.address!r}")
        self._connected = True

    def close(self) -> None:
        self._connected = False

    def query(self, request: str) -> str:
        argv = self.program + shlex.split(request)
        try:
            done = subprocess.run(
                argv, capture_output=True, text=True, timeout=self.timeout, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise LinkError(f"{shlex.join(argv)}: no answer within {self.timeout:g} s") from exc
        except OSError as exc:
            self._connected = False
            raise LinkError(f"{shlex.join(argv)}: {_os_reason(exc)}") from exc
        if done.returncode != 0:
            reason = done.stderr.strip() or f"exit status {done.returncode}"
            raise CommandRefused(f"{shlex.join(argv)}: {reason}")
        return done.stdout.strip()


class CommandRefused(Exception):
    """The hardware (or tool) answered, but refused the request."""


def _os_reason(exc: OSError) -> str:
    if isinstance(exc, socket.timeout):
        return "timed out"
    return exc.strerror or str(exc) or type(exc).__name__
