"""What every benchmark shares: a facility in a temporary directory, a bare reference server, statistics, output.

Benchmarks start everything themselves: a temporary state directory, free
ports on 127.0.0.1, `dcs up` through the real CLI (``python -m clients.cli``)
with ``TANGO_HOST`` pointing at a fresh embedded database, and `dcs down` in
a ``finally``. Nothing talks to anything but 127.0.0.1.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
PROTOCOLS = ROOT / "facilities" / "protocols"
RESULTS = BENCH / "results"
HV_DEVICE = "dcs/hv/sipm"
BARE_DEVICE = "bench/bare/1"
BARE_SERVER = "BareDevice/bench"


# --------------------------------------------------------------------- small helpers
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def project_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.update(extra)
    return env


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``condition`` until truthy; raise after ``timeout`` seconds (bounded loop)."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = condition()
            if result:
                return result
        except Exception as exc:  # still starting
            last = exc
        time.sleep(0.05)
    raise RuntimeError(f"timed out after {timeout} s waiting for {what} (last error: {last})")


def now_stamp() -> str:
    return dt.datetime.now().strftime("%Y%m%d-%H%M%S")


def environment() -> dict[str, Any]:
    import tango

    return {
        "python": platform.python_version(),
        "pytango": tango.__version__,
        "tango": tango.constants.TgLibVers,
        "machine": platform.machine(),
        "system": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }


# --------------------------------------------------------------------- statistics
def percentile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100) of an already sorted list."""
    if not sorted_values:
        return float("nan")
    pos = (len(sorted_values) - 1) * q / 100.0
    low = int(pos)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (pos - low)


def summarize(samples: Iterable[float], scale: float = 1e6) -> dict[str, float]:
    """n, median, p95, mean, min, max of ``samples`` (seconds), scaled (default: to microseconds)."""
    values = sorted(s * scale for s in samples)
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "median": statistics.median(values),
        "p95": percentile(values, 95),
        "mean": statistics.fmean(values),
        "min": values[0],
        "max": values[-1],
    }


# --------------------------------------------------------------------- facility files
def hv_simulator_spec(port: int) -> dict[str, Any]:
    return {"module": "simulators.hv.server", "args": ["--port", port], "port": port}


def hv_server_spec(sim_port: int, protocol_file: Path | None = None, level: int = 1) -> dict[str, Any]:
    return {
        "level": level,
        "devices": {
            HV_DEVICE: {
                "class": "TextDevice",
                "properties": {
                    "ProtocolFile": str(protocol_file or PROTOCOLS / "hv_crate.yaml"),
                    "Host": "127.0.0.1",
                    "Port": sim_port,
                },
            }
        },
    }


def hv_facility_spec(name: str, sim_port: int, protocol_file: Path | None = None) -> dict[str, Any]:
    """One HV crate simulator and one TextDevice server on it, like the tests' ``hv_facility``."""
    return {
        "facility": name,
        "simulators": {"hv": hv_simulator_spec(sim_port)},
        "servers": {"TextDevice/hv": hv_server_spec(sim_port, protocol_file)},
    }


UP_SECONDS = re.compile(r"is up in ([0-9.]+) s")


class BenchFacility:
    """A facility in a temporary directory, run with the real `dcs` CLI on free ports.

    Use as a context manager: `dcs down` runs on exit whatever happened, and the
    directory is removed unless ``keep`` is set.
    """

    def __init__(self, prefix: str = "dcs-bench-", keep: bool = False) -> None:
        self.root = Path(tempfile.mkdtemp(prefix=prefix))
        self.tango_host = f"127.0.0.1:{free_port()}"
        self.state_dir = self.root / "var"
        self.file = self.root / "facility.yaml"
        self.keep = keep
        self.spec: dict[str, Any] = {}

    def __enter__(self) -> BenchFacility:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        try:
            if self.state_dir.exists():
                self.dcs("down", check=False, timeout=90)
        finally:
            if not self.keep:
                shutil.rmtree(self.root, ignore_errors=True)

    def env(self) -> dict[str, str]:
        return project_env(TANGO_HOST=self.tango_host, DCS_STATE_DIR=str(self.state_dir))

    def dcs(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "clients.cli", "--state-dir", str(self.state_dir), *args],
            capture_output=True, text=True, env=self.env(), cwd=self.root, timeout=timeout, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        if check and done.returncode != 0:
            raise RuntimeError(f"dcs {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        return done

    def write(self, spec: dict[str, Any], file: Path | None = None) -> Path:
        self.spec = spec
        path = file or self.file
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
        return path

    def up(self, file: Path | None = None, timeout: float = 60) -> dict[str, Any]:
        """Run `dcs up`; returns wall seconds of the whole command and the time dcs itself reported."""
        started = time.perf_counter()
        done = self.dcs("up", str(file or self.file), "--timeout", str(timeout), timeout=timeout * 4)
        wall = time.perf_counter() - started
        match = UP_SECONDS.search(done.stdout)
        return {"wall_s": wall, "reported_s": float(match.group(1)) if match else None, "stdout": done.stdout}

    def down(self) -> float:
        started = time.perf_counter()
        self.dcs("down", timeout=120)
        return time.perf_counter() - started

    def status(self) -> dict[str, Any]:
        return json.loads(self.dcs("status", "--json").stdout)

    def name(self, device: str) -> str:
        return f"tango://{self.tango_host}/{device}"

    def proxy(self, device: str, timeout_ms: int = 3000) -> Any:
        import tango

        dev = tango.DeviceProxy(self.name(device))
        dev.set_timeout_millis(timeout_ms)
        return dev

    def wait_device_on(self, device: str, timeout: float = 30) -> None:
        import tango

        dev = self.proxy(device)
        wait_for(lambda: dev.state() == tango.DevState.ON, timeout, f"{device} to be ON")

    def database(self) -> Any:
        import tango

        host, port = self.tango_host.rsplit(":", 1)
        return tango.Database(host, int(port))


# --------------------------------------------------------------------- the bare reference server
class BareServer:
    """``bench/bare_device.py`` registered in the facility's Tango database and run as its own process."""

    def __init__(
        self,
        facility: BenchFacility,
        instance: str = "bench",
        device: str = BARE_DEVICE,
        properties: dict[str, Any] | None = None,
    ) -> None:
        self.facility = facility
        self.instance = instance
        self.device = device
        self.properties = dict(properties or {})  # device properties, e.g. SimulatorPort for HardwareSetpoint
        self.server = f"BareDevice/{instance}"
        self.process: subprocess.Popen[bytes] | None = None
        self.log = facility.root / f"bare-{instance}.log"

    def __enter__(self) -> BareServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def start(self, timeout: float = 30) -> BareServer:
        import tango

        db = self.facility.database()
        info = tango.DbDevInfo()
        info.name, info._class, info.server = self.device, "BareDevice", self.server
        db.add_server(self.server, info, with_dserver=True)
        if self.properties:
            db.put_device_property(self.device, {k: [str(v)] for k, v in self.properties.items()})
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, str(BENCH / "bare_device.py"), self.instance],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=ROOT,
                env=project_env(TANGO_HOST=self.facility.tango_host), start_new_session=True,
            )  # fmt: skip
        proxy = self.facility.proxy(self.device)

        def answers() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"bare device server exited ({self.process.returncode}); see {self.log}")
            proxy.ping()
            return True

        wait_for(answers, timeout, f"{self.device} to answer")
        return self

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# --------------------------------------------------------------------- output
def console() -> Any:
    from rich.console import Console

    return Console(highlight=False, width=None if sys.stdout.isatty() else 140)


def table(title: str, columns: list[str], rows: list[list[Any]]) -> Any:
    from rich.table import Table

    out = Table(*columns, title=title, title_justify="left")
    for row in rows:
        out.add_row(*(fmt(v) for v in row))
    return out


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value != value:  # nan
            return "-"
        return f"{value:.3g}" if abs(value) < 10 else f"{value:,.1f}"
    return str(value)


def write_json(data: dict[str, Any], path: Path | None) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str))


def print_json(data: dict[str, Any]) -> None:
    print(json.dumps(data, default=str))


def add_common_arguments(parser: Any) -> None:
    parser.add_argument("--json-file", type=Path, default=None, help="also write the results as JSON to this file")
    parser.add_argument("--no-json", action="store_true", help="do not print the JSON line after the table")
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary facility directory (logs) for a look afterwards"
    )
