"""A tiny timestamping TCP proxy for bench_safety.py (``--proxy``): when did the dome's PUT leave DCS?

It sits between the Dome device and the Alpaca simulator (the Dome's
``Port`` property names the proxy), copies bytes both ways unchanged, and
notes ``time.time()`` the moment a chunk from the client holding an Alpaca
request line for a watched member arrives (``PUT /api/v1/dome/0/closeshutter``).
Every request of that one device goes through it, so it adds a hop to each
of them: :func:`added_latency` measures how much, against a direct connection.

127.0.0.1 only. Threads, no dependencies; ``close()`` stops everything.
"""

from __future__ import annotations

import http.client
import re
import socket
import statistics
import threading
import time
from typing import Any

REQUEST_LINE = re.compile(rb"(GET|PUT) (/api/v1/[a-z]+/\d+/[a-z]+)")


class TimestampProxy:
    """Forward 127.0.0.1:<port> to 127.0.0.1:<upstream>; record when watched requests arrive."""

    def __init__(self, upstream_port: int, watch: tuple[str, ...] = ("PUT /api/v1/dome/0/closeshutter",)) -> None:
        self.upstream_port = upstream_port
        self.watch = {w.encode() for w in watch}
        self.seen: list[tuple[float, str]] = []  # (time.time() at arrival, "PUT /api/v1/...")
        self.requests = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sockets: set[socket.socket] = set()
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self.port = int(self._listener.getsockname()[1])
        self._thread = threading.Thread(target=self._accept, name="safety-proxy", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._sockets.update((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, from_client: bool) -> None:
        tail = b""
        try:
            while True:
                chunk = source.recv(65536)
                arrived = time.time()
                if not chunk:
                    break
                if from_client:
                    window = tail + chunk
                    for match in REQUEST_LINE.finditer(window):
                        if match.start() < len(tail):
                            continue  # seen with the previous chunk already
                        self.requests += 1
                        line = match.group(0)
                        if line in self.watch:
                            with self._lock:
                                self.seen.append((arrived, line.decode()))
                    tail = window[-64:]
                target.sendall(chunk)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()
            with self._lock:
                self._sockets.discard(source)
                self._sockets.discard(target)

    def arrivals(self, line: str) -> list[float]:
        with self._lock:
            return [t for t, seen in self.seen if seen == line]

    def close(self) -> None:
        self._stop.set()
        try:
            self._listener.close()
        except OSError:
            pass
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


def _connection(port: int) -> http.client.HTTPConnection:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=3)
    conn.connect()
    assert conn.sock is not None
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return conn


def _get(conn: http.client.HTTPConnection, path: str, i: int) -> float:
    started = time.perf_counter()
    conn.request("GET", f"{path}?ClientID=9&ClientTransactionID={i + 1}")
    conn.getresponse().read()
    return time.perf_counter() - started


def added_latency(proxy_port: int, direct_port: int, rounds: int = 50) -> dict[str, Any]:
    """Round trips of a dome GET on a kept-alive connection through the proxy and directly, alternating.

    The Dome device keeps its connection alive too, so the difference of medians is what the hop adds to
    each of its requests (both directions: request and reply each cross the proxy once).
    """
    path = "/api/v1/dome/0/shutterstatus"
    via_conn, direct_conn = _connection(proxy_port), _connection(direct_port)
    via, direct = [], []
    try:
        for i in range(3):  # warm-up
            _get(via_conn, path, i), _get(direct_conn, path, i)
        for i in range(rounds):
            via.append(_get(via_conn, path, i))
            direct.append(_get(direct_conn, path, i))
    finally:
        via_conn.close()
        direct_conn.close()
    return {
        "rounds": rounds,
        "via_proxy_ms_median": statistics.median(via) * 1e3,
        "direct_ms_median": statistics.median(direct) * 1e3,
        "added_ms_median": (statistics.median(via) - statistics.median(direct)) * 1e3,
        "via_proxy_ms_p95": sorted(via)[int(0.95 * (len(via) - 1))] * 1e3,
        "direct_ms_p95": sorted(direct)[int(0.95 * (len(direct) - 1))] * 1e3,
    }
