"""The Tango database: find one at TANGO_HOST, or describe the embedded one DCS starts.

The embedded database is the database device server that ships with
pytango (``tango.databaseds``) on a sqlite file; it is the standard Tango
database API, so every Tango tool works against it. In production
TANGO_HOST points at the standard MariaDB-backed server instead.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import tango

DEFAULT_TANGO_HOST = "127.0.0.1:10000"
SQLITE_FILE = "tango_database.db"


def split_tango_host(tango_host: str) -> tuple[str, int]:
    """``host:port`` (the first of a comma-separated list) as a pair."""
    first = tango_host.split(",")[0].strip()
    host, _, port = first.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"TANGO_HOST {tango_host!r} is not host:port")
    return host, int(port)


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections at host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def database_answers(tango_host: str, timeout: float = 2.0) -> bool:
    """True when a Tango database answers at ``tango_host``."""
    host, port = split_tango_host(tango_host)
    if not port_open(host, port, timeout):
        return False
    try:
        db = tango.Database(host, port)
        db.set_timeout_millis(int(timeout * 1000))
        db.get_info()
    except tango.DevFailed:
        return False
    return True


def is_local(host: str) -> bool:
    """Whether DCS may start a database for this host (it is this machine)."""
    if host in ("localhost", "127.0.0.1", "::1", "0.0.0.0"):
        return True
    names = {socket.gethostname(), socket.getfqdn()}
    return host in names


def embedded_database_command(tango_host: str, state_dir: Path) -> tuple[list[str], dict[str, str]]:
    """argv and extra environment of the embedded database server for ``tango_host``."""
    host, port = split_tango_host(tango_host)
    argv = [sys.executable, "-m", "tango.databaseds.database", "--host", host, "--port", str(port), "2"]
    env = {"PYTANGO_DATABASE_NAME": str((state_dir / SQLITE_FILE).resolve())}
    return argv, env


def connect(tango_host: str | None = None) -> tango.Database:
    """A tango.Database for ``tango_host`` (default: the environment's TANGO_HOST)."""
    if tango_host is None:
        tango_host = os.environ.get("TANGO_HOST", DEFAULT_TANGO_HOST)
    host, port = split_tango_host(tango_host)
    return tango.Database(host, port)
