"""Alpaca UDP discovery responder: ``alpacadiscovery1`` in, ``{"AlpacaPort": n}`` back to the sender.

The socket is bound to the wildcard address whatever ``--host`` is: Linux
delivers broadcasts (how clients such as ``alpaca.discovery.search_ipv4``
ask) only to sockets bound to it. ``SO_REUSEADDR`` lets several Alpaca
servers on one host share the standard port 32227, as ASCOM recommends;
each then answers every broadcast.
"""

from __future__ import annotations

import json
import logging
import socket
import threading

log = logging.getLogger("simulators.alpaca")

DISCOVERY_PORT = 32227
QUERY = b"alpacadiscovery1"


class DiscoveryResponder:
    """Answers discovery queries on ``port`` from a daemon thread until ``close``."""

    def __init__(self, port: int, alpaca_port: int) -> None:
        self.alpaca_port = alpaca_port
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._socket.bind(("", port))
        except OSError:
            self._socket.close()
            raise
        self._socket.settimeout(0.2)
        self.port = int(self._socket.getsockname()[1])
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="alpaca-discovery", daemon=True)

    def start(self) -> DiscoveryResponder:
        self._thread.start()
        log.info("discovery responder on UDP port %d (AlpacaPort %d)", self.port, self.alpaca_port)
        return self

    def close(self) -> None:
        self._closed.set()
        self._thread.join(timeout=1.0)
        self._socket.close()

    def _serve(self) -> None:
        reply = json.dumps({"AlpacaPort": self.alpaca_port}).encode()
        while not self._closed.is_set():
            try:
                data, sender = self._socket.recvfrom(1024)
            except TimeoutError:
                continue
            except OSError:
                if self._closed.is_set():
                    return
                raise
            if not data.startswith(QUERY):
                log.debug("ignored %d-byte datagram from %s (not an Alpaca discovery query)", len(data), sender)
                continue
            log.debug("discovery query from %s:%d", *sender)
            try:
                self._socket.sendto(reply, sender)
            except OSError as error:
                log.warning("cannot answer discovery query from %s:%d: %s", *sender, error)
