"""End-to-end tests of the HV crate simulator over a real TCP socket.

Each test starts its own simulator subprocess on a free port, so tests are
independent and can run in parallel. Timing assertions are deliberately
loose: the physics runs in real time and CI machines are slow.
"""

from __future__ import annotations

import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LISTENING_RE = re.compile(r"^hv simulator listening on (\S+):(\d+)$")
IDN = "DCS-SIM,HV16,HV0001,1.0"
STARTUP_TIMEOUT = 15.0
REPLY_TIMEOUT = 3.0

STAT_ON = 1
STAT_RAMP_UP = 2
STAT_RAMP_DOWN = 4
STAT_TRIPPED = 8


def project_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0, period: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(period)
    return predicate()


class Client:
    """Line client with its own buffer, so a read timeout leaves it usable."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=REPLY_TIMEOUT)
        self._buffer = b""

    def send(self, line: str) -> None:
        self.sock.sendall(line.encode("ascii") + b"\n")

    def read_line(self, timeout: float = REPLY_TIMEOUT) -> str:
        """Next reply line; raises TimeoutError if none arrives in time."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no reply")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(4096)
            except TimeoutError:
                raise TimeoutError("no reply") from None
            if not chunk:
                raise ConnectionError("connection closed by the simulator")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode("ascii")

    def ask(self, line: str, timeout: float = REPLY_TIMEOUT) -> str:
        self.send(line)
        return self.read_line(timeout)

    def ask_float(self, line: str) -> float:
        return float(self.ask(line))

    def ask_int(self, line: str) -> int:
        return int(self.ask(line))

    def is_closed_by_peer(self, timeout: float = REPLY_TIMEOUT) -> bool:
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(4096) == b""
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self.sock.close()


@dataclass
class Simulator:
    proc: subprocess.Popen[str]
    port: int
    log_path: Path
    clients: list[Client]

    def connect(self) -> Client:
        client = Client(self.port)
        self.clients.append(client)
        return client

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def start_simulator(tmp_path: Path) -> Iterator[Callable[..., Simulator]]:
    """Factory starting simulator subprocesses; all are killed afterwards."""
    started: list[Simulator] = []

    def start(*extra_args: str) -> Simulator:
        log_path = tmp_path / f"hv-{len(started)}.log"
        with open(log_path, "w") as log_file:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "simulators.hv.server",
                    "--port",
                    "0",
                    "--tick",
                    "0.01",
                    *extra_args,
                ],
                cwd=ROOT,
                env=project_env(),
                stdout=subprocess.PIPE,
                stderr=log_file,
                text=True,
            )
        simulator = Simulator(proc, 0, log_path, [])
        started.append(simulator)
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], STARTUP_TIMEOUT)
        line = proc.stdout.readline() if ready else ""
        match = LISTENING_RE.match(line.strip())
        assert match, f"no listening line (got {line!r}); log:\n{simulator.log()}"
        simulator.port = int(match.group(2))
        return simulator

    yield start

    for simulator in started:
        for client in simulator.clients:
            client.close()
        if simulator.proc.poll() is None:
            simulator.proc.kill()
        simulator.proc.wait(timeout=10)
        if simulator.proc.stdout is not None:
            simulator.proc.stdout.close()


@pytest.fixture
def sim(start_simulator: Callable[..., Simulator]) -> Simulator:
    return start_simulator()


@pytest.fixture
def hv(sim: Simulator) -> Client:
    return sim.connect()


def test_idn(hv: Client) -> None:
    assert hv.ask("*IDN?") == IDN


def test_defaults(hv: Client) -> None:
    assert hv.ask("VSET? 0") == "0.000"
    assert hv.ask("VMON? 0") == "0.000"
    assert hv.ask("IMON? 0") == "0.0000"
    assert hv.ask("PWR? 0") == "0"
    assert hv.ask("RAMP? 0") == "5.00"
    assert hv.ask("ILIM? 0") == "2.0000"
    assert hv.ask("STAT? 0") == "0"


def test_set_and_readback(hv: Client) -> None:
    assert hv.ask("VSET 3 45") == "OK"
    assert hv.ask("VSET? 3") == "45.000"
    assert hv.ask("VSET 3 12.3456") == "OK"
    assert hv.ask("VSET? 3") == "12.346"
    assert hv.ask("RAMP 3 12.5") == "OK"
    assert hv.ask("RAMP? 3") == "12.50"
    assert hv.ask("ILIM 3 1.5") == "OK"
    assert hv.ask("ILIM? 3") == "1.5000"
    assert hv.ask("VSET? 4") == "0.000", "other channels must be unaffected"
    # A setpoint alone does not move an output that is off.
    time.sleep(0.1)
    assert hv.ask("VMON? 3") == "0.000"
    assert hv.ask("PWR? 3") == "0"


def test_keywords_case_insensitive_blank_lines_and_crlf(hv: Client) -> None:
    hv.send("")
    hv.send("   \r")
    assert hv.ask("*idn?\r") == IDN, "blank lines must not be answered"
    assert hv.ask("vset 1 7") == "OK"
    assert hv.ask("Vset? 1") == "7.000"
    assert hv.ask("stat? all").count(",") == 15


def test_pipelined_replies_in_order(hv: Client) -> None:
    hv.sock.sendall(b"VSET 2 11\nVSET? 2\nFOO\n*IDN?\n")
    replies = [hv.read_line() for _ in range(4)]
    assert replies[:2] == ["OK", "11.000"]
    assert replies[2].startswith("ERR 1 ")
    assert replies[3] == IDN


def test_ramp_up_progresses_in_real_time(hv: Client) -> None:
    assert hv.ask("RAMP 0 50") == "OK"
    assert hv.ask("VSET 0 20") == "OK"
    started = time.monotonic()
    assert hv.ask("ON 0") == "OK"
    assert hv.ask_int("STAT? 0") == STAT_ON | STAT_RAMP_UP
    assert hv.ask("PWR? 0") == "1"

    readings = [hv.ask_float("VMON? 0")]
    while readings[-1] < 20.0 and time.monotonic() - started < 10.0:
        time.sleep(0.02)
        readings.append(hv.ask_float("VMON? 0"))
    elapsed = time.monotonic() - started

    assert readings == sorted(readings), f"VMON must rise monotonically: {readings}"
    assert readings[-1] == pytest.approx(20.0, abs=0.001)
    assert len({r for r in readings if 0.0 < r < 20.0}) >= 3, f"no ramp seen: {readings}"
    # 20 V at 50 V/s takes 0.4 s; it cannot be faster, only slower.
    assert elapsed >= 0.3
    assert hv.ask_int("STAT? 0") == STAT_ON
    assert hv.ask_float("IMON? 0") == pytest.approx(0.2, rel=0.03)


def test_ramp_down_and_switch_off(hv: Client) -> None:
    assert hv.ask("RAMP 0 50") == "OK"
    assert hv.ask("VSET 0 20") == "OK"
    assert hv.ask("ON 0") == "OK"
    assert wait_for(lambda: hv.ask("VMON? 0") == "20.000")

    # Lower setpoint while on: ramping down, still on.
    assert hv.ask("VSET 0 10") == "OK"
    assert hv.ask_int("STAT? 0") == STAT_ON | STAT_RAMP_DOWN
    assert wait_for(lambda: hv.ask("VMON? 0") == "10.000")
    assert hv.ask_int("STAT? 0") == STAT_ON

    # Off: falls to 0 at the ramp rate, monotonically.
    assert hv.ask("OFF 0") == "OK"
    assert hv.ask_int("STAT? 0") == STAT_RAMP_DOWN
    assert hv.ask("PWR? 0") == "0"
    readings = [hv.ask_float("VMON? 0")]
    deadline = time.monotonic() + 10.0
    while readings[-1] > 0.0 and time.monotonic() < deadline:
        time.sleep(0.02)
        readings.append(hv.ask_float("VMON? 0"))
    assert readings == sorted(readings, reverse=True), readings
    assert readings[-1] == 0.0
    assert hv.ask_int("STAT? 0") == 0
    assert hv.ask("VSET? 0") == "10.000", "switching off keeps the setpoint"


def test_current_follows_load(hv: Client) -> None:
    assert hv.ask("RAMP 0 50") == "OK"
    assert hv.ask("VSET 0 40") == "OK"
    assert hv.ask("SIM:LOAD 0 50") == "OK"
    assert hv.ask("ON 0") == "OK"
    assert wait_for(lambda: hv.ask("VMON? 0") == "40.000")
    # 40 V across 50 MΩ is 0.8 µA; noise is ~0.2 %.
    samples = [hv.ask_float("IMON? 0") for _ in range(10)]
    assert all(s == pytest.approx(0.8, rel=0.02) for s in samples), samples
    assert len(set(samples)) > 1, "current should carry some noise"
    assert hv.ask("SIM:LOAD 0 100") == "OK"
    assert hv.ask_float("IMON? 0") == pytest.approx(0.4, rel=0.02)
    assert all(float(v) >= 0.0 for v in hv.ask("IMON? ALL").split(","))


def test_errors(hv: Client) -> None:
    cases = [
        ("FOO", 1),
        ("FOO 1 2", 1),
        ("SIM:NOPE", 1),
        ("VSET? 16", 2),
        ("VSET? -1", 2),
        ("VSET? x", 2),
        ("VSET?", 2),
        ("VSET? ALL", 2),
        ("ON 99", 2),
        ("RESET 1.0", 2),
        ("VSET 0 abc", 3),
        ("VSET 0 nan", 3),
        ("VSET 0", 3),
        ("RAMP 0 fast", 3),
        ("SIM:FAULT sideways", 3),
        ("VSET 0 81", 4),
        ("VSET 0 -1", 4),
        ("RAMP 0 60", 4),
        ("RAMP 0 0.01", 4),
        ("ILIM 0 0.001", 4),
        ("ILIM 0 101", 4),
        ("SIM:LOAD 0 0", 4),
    ]
    for request, code in cases:
        reply = hv.ask(request)
        assert re.fullmatch(rf"ERR {code} \S.*", reply), f"{request!r} -> {reply!r}, expected ERR {code}"
    # Rejected requests change nothing.
    assert hv.ask("VSET? 0") == "0.000"
    assert hv.ask("RAMP? 0") == "5.00"
    assert hv.ask("ILIM? 0") == "2.0000"
    # Range limits themselves are accepted.
    for request in (
        "VSET 0 80",
        "VSET 0 0",
        "RAMP 0 0.1",
        "RAMP 0 50",
        "ILIM 0 0.01",
        "ILIM 0 100",
    ):
        assert hv.ask(request) == "OK", request


def test_trip_via_low_load(hv: Client) -> None:
    # 1 MΩ: the default 2 µA limit is exceeded above 2 V.
    assert hv.ask("SIM:LOAD 0 1") == "OK"
    assert hv.ask("RAMP 0 50") == "OK"
    assert hv.ask("VSET 0 10") == "OK"
    assert hv.ask("ON 0") == "OK"

    assert wait_for(lambda: hv.ask_int("STAT? 0") & STAT_TRIPPED, timeout=5.0)
    assert hv.ask("PWR? 0") == "0"
    assert not hv.ask_int("STAT? 0") & STAT_ON
    reply = hv.ask("ON 0")
    assert reply.startswith("ERR 5 "), reply
    assert hv.ask("PWR? 0") == "0"
    assert wait_for(lambda: hv.ask("VMON? 0") == "0.000", timeout=5.0)
    assert hv.ask_int("STAT? 0") == STAT_TRIPPED, "trip flag stays until RESET"

    assert hv.ask("RESET 0") == "OK"
    assert hv.ask_int("STAT? 0") == 0
    assert hv.ask("PWR? 0") == "0", "RESET must not switch the channel on"
    assert hv.ask("SIM:LOAD 0 100") == "OK"
    assert hv.ask("ON 0") == "OK"
    assert hv.ask("PWR? 0") == "1"
    assert hv.ask_int("STAT? 1") == 0, "other channels are unaffected"


def test_trip_via_lower_current_limit(hv: Client) -> None:
    assert hv.ask("RAMP 0 50") == "OK"
    assert hv.ask("VSET 0 20") == "OK"
    assert hv.ask("ON 0") == "OK"
    assert wait_for(lambda: hv.ask("VMON? 0") == "20.000")
    assert hv.ask_int("STAT? 0") == STAT_ON  # 0.2 µA < 2 µA
    assert hv.ask("ILIM 0 0.1") == "OK"
    assert wait_for(lambda: hv.ask_int("STAT? 0") & STAT_TRIPPED)
    assert hv.ask("PWR? 0") == "0"


def test_all_queries(hv: Client) -> None:
    assert hv.ask("RAMP 5 50") == "OK"
    assert hv.ask("VSET 5 5") == "OK"
    assert hv.ask("ON 5") == "OK"
    assert wait_for(lambda: hv.ask("VMON? 5") == "5.000")

    vmon = hv.ask("VMON? ALL").split(",")
    imon = hv.ask("IMON? all").split(",")
    stat = hv.ask("STAT? ALL").split(",")
    assert len(vmon) == len(imon) == len(stat) == 16
    assert all(re.fullmatch(r"\d+\.\d{3}", v) for v in vmon), vmon
    assert all(re.fullmatch(r"\d+\.\d{4}", i) for i in imon), imon
    assert all(re.fullmatch(r"\d+", s) for s in stat), stat
    assert vmon[5] == "5.000" and vmon[4] == "0.000"
    assert float(imon[5]) == pytest.approx(0.05, rel=0.05)
    assert int(stat[5]) == STAT_ON and int(stat[4]) == 0


def test_fault_drop_closes_every_connection(sim: Simulator) -> None:
    requester, bystander = sim.connect(), sim.connect()
    assert bystander.ask("*IDN?") == IDN
    assert requester.ask("SIM:FAULT drop") == "OK"
    assert requester.is_closed_by_peer()
    assert bystander.is_closed_by_peer()
    # The listener stays up.
    assert sim.connect().ask("*IDN?") == IDN


def test_fault_silent_then_recovers(hv: Client) -> None:
    assert hv.ask("SIM:FAULT silent 0.8") == "OK"
    started = time.monotonic()
    hv.send("*IDN?")
    with pytest.raises(TimeoutError):
        hv.read_line(timeout=0.3)
    time.sleep(max(0.0, started + 1.0 - time.monotonic()))
    # The request sent while silent is never answered: the next line is
    # the reply to the next request.
    assert hv.ask("VSET? 0") == "0.000"
    assert hv.ask("*IDN?") == IDN


def test_sim_requests_answered_while_silent(hv: Client) -> None:
    assert hv.ask("SIM:FAULT silent 60") == "OK"
    hv.send("VMON? 0")
    with pytest.raises(TimeoutError):
        hv.read_line(timeout=0.3)
    assert hv.ask("SIM:FAULT none") == "OK"
    assert hv.ask("*IDN?") == IDN


def test_fault_garbage_then_recovers(hv: Client) -> None:
    assert hv.ask("SIM:FAULT garbage 0.8") == "OK"
    started = time.monotonic()
    for request in ("VMON? 0", "*IDN?", "STAT? ALL", "FOO"):
        reply = hv.ask(request)
        assert reply and reply.isprintable(), repr(reply)
        assert not is_number(reply), reply
        assert not any(is_number(part) for part in reply.split(",")), reply
        assert not reply.startswith(("OK", "ERR")), reply
    assert hv.ask("SIM:LOAD 0 100") == "OK", "SIM: requests are answered normally"
    time.sleep(max(0.0, started + 1.0 - time.monotonic()))
    assert hv.ask("VMON? 0") == "0.000"
    assert hv.ask("*IDN?") == IDN


def test_fault_none_clears_garbage(hv: Client) -> None:
    assert hv.ask("SIM:FAULT garbage 60") == "OK"
    assert not is_number(hv.ask("VMON? 0"))
    assert hv.ask("SIM:FAULT none") == "OK"
    assert hv.ask("VMON? 0") == "0.000"


def test_many_clients_at_once(sim: Simulator) -> None:
    clients = [sim.connect() for _ in range(6)]
    for index, client in enumerate(clients):
        client.send(f"VSET {index} {index * 2}")
    for client in clients:
        assert client.read_line() == "OK"
    for index, client in reversed(list(enumerate(clients))):
        assert client.ask(f"VSET? {index}") == f"{index * 2:.3f}"
    # State is shared by the whole crate.
    assert clients[0].ask("VSET? 5") == "10.000"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_exits_cleanly(sim: Simulator, signum: signal.Signals) -> None:
    client = sim.connect()
    assert client.ask("*IDN?") == IDN
    sim.proc.send_signal(signum)
    assert sim.proc.wait(timeout=10) == 0, sim.log()
    assert client.is_closed_by_peer()


def test_options_channels_and_serial(start_simulator: Callable[..., Simulator]) -> None:
    client = start_simulator("--channels", "4", "--serial", "HV0042", "--seed", "7").connect()
    assert client.ask("*IDN?").split(",")[2] == "HV0042"
    assert len(client.ask("VMON? ALL").split(",")) == 4
    assert client.ask("VSET? 4").startswith("ERR 2 ")


def test_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "simulators.hv.server", "--help"],
        cwd=ROOT,
        env=project_env(),
        capture_output=True,
        check=False,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0
    for option in ("--host", "--port", "--channels", "--serial", "--seed", "--tick"):
        assert option in result.stdout
