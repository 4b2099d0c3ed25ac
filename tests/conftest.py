"""Fixtures that start real things: a Tango database, simulators and device servers.

Every fixture picks free ports and works in a temporary directory, so test
runs never collide (pytest-xdist safe). Devices are addressed with fully
qualified names (``tango://host:port/dom/fam/member``), so tests do not
depend on the TANGO_HOST of the process running them.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import tango
import yaml

ROOT = Path(__file__).resolve().parents[1]
PROTOCOLS = ROOT / "facilities" / "protocols"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(condition: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    """Poll ``condition`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = condition()
            if result:
                return result
        except Exception as exc:  # a device still starting raises; keep waiting
            last_error = exc
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last error: {last_error})")


def project_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env.update(extra)
    return env


class Simulator:
    """A simulator module run as a separate process on a TCP port the test controls.

    The module takes ``--port`` and prints a line containing "listening" once it accepts connections.
    """

    module = ""

    def __init__(self, port: int | None = None, module: str | None = None) -> None:
        self.module = module or self.module
        self.port = port or free_port()
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> Simulator:
        self.process = subprocess.Popen(
            [sys.executable, "-m", self.module, "--port", str(self.port)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=project_env(), cwd=ROOT,
        )  # fmt: skip
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert "listening" in line, f"{self.module} did not start: {line!r}"
        return self

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait()
        self.process = None

    def pause(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def request(self, line: str, timeout: float = 2.0) -> str:
        """Send one line, return the reply line."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as sock:
            sock.sendall(line.encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
        return data.decode().strip()


class HvSimulator(Simulator):
    """The HV crate simulator (docs/hv-protocol.md)."""

    module = "simulators.hv.server"


@dataclass
class Facility:
    """A facility brought up with `dcs up` in a temporary state directory."""

    root: Path
    tango_host: str
    file: Path
    spec: dict[str, Any] = field(default_factory=dict)

    @property
    def state_dir(self) -> Path:
        return self.root / "var"

    def env(self) -> dict[str, str]:
        return project_env(TANGO_HOST=self.tango_host, DCS_STATE_DIR=str(self.state_dir))

    def dcs(self, *args: str, check: bool = True, timeout: float = 120, input: str | None = None) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "clients.cli", *args],
            capture_output=True, text=True, env=self.env(), cwd=self.root, timeout=timeout,
            input=input, stdin=None if input is not None else subprocess.DEVNULL,
        )  # fmt: skip
        if check and done.returncode != 0:
            raise AssertionError(f"dcs {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        return done

    def name(self, device: str) -> str:
        return f"tango://{self.tango_host}/{device}"

    def proxy(self, device: str) -> tango.DeviceProxy:
        dev = tango.DeviceProxy(self.name(device))
        dev.set_timeout_millis(3000)
        return dev

    def write(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.file.write_text(yaml.safe_dump(spec, sort_keys=False))

    def status(self) -> dict[str, Any]:
        import json

        return json.loads(self.dcs("status", "--json").stdout)


def hv_server_spec(port: int, level: int = 1, device: str = "dcs/hv/sipm", **attributes: dict[str, Any]) -> dict[str, Any]:
    return {
        "level": level,
        "devices": {
            device: {
                "class": "TextDevice",
                "properties": {"ProtocolFile": str(PROTOCOLS / "hv_crate.yaml"), "Host": "127.0.0.1", "Port": port},
                **({"attributes": attributes} if attributes else {}),
            }
        },
    }


@pytest.fixture
def facility_dir(tmp_path: Path) -> Iterator[Facility]:
    """An empty facility (no file written yet); `dcs down` is run at the end whatever happened."""
    fac = Facility(tmp_path, f"127.0.0.1:{free_port()}", tmp_path / "facility.yaml")
    yield fac
    if fac.state_dir.exists():
        fac.dcs("down", check=False, timeout=90)


@pytest.fixture
def hv_simulator() -> Iterator[HvSimulator]:
    sim = HvSimulator().start()
    yield sim
    sim.kill()


@pytest.fixture
def hv_facility(facility_dir: Facility, hv_simulator: HvSimulator) -> Facility:
    """The HV crate device served by a real TextDevice server against a simulator the test controls."""
    facility_dir.write({"facility": "hvtest", "servers": {"TextDevice/hv": hv_server_spec(hv_simulator.port)}})
    facility_dir.dcs("up", str(facility_dir.file), "--timeout", "60")
    dev = facility_dir.proxy("dcs/hv/sipm")
    wait_for(lambda: dev.state() == tango.DevState.ON, what="dcs/hv/sipm to be ON")
    return facility_dir
