"""End-to-end tests of the data router simulator, run as a real ``dataRouter`` process.

Each test starts its own router subprocess on a free port in its own staging
directory, so tests are independent and can run in parallel (other tests'
routers may show up in ``pgrep -x dataRouter``; these tests only look for
their own pid). Files rotate every 0.4 s to keep the tests short.
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
from datetime import datetime
from pathlib import Path

import pytest

from simulators.datarouter.server import GRAW_NAME_RE, file_prefix

ROOT = Path(__file__).resolve().parents[2]
LISTENING_RE = re.compile(r"^data router (\S+) listening on (\S+):(\d+)$")
STARTUP_TIMEOUT = 15.0
REPLY_TIMEOUT = 3.0
FILE_SECONDS = 0.4
RATE = 50_000  # bytes/s
RUN_START = 1514046244.657  # 2017-12-23T16:24:04.657Z, the example of the spec


def wait_for(predicate: Callable[[], object], timeout: float = 5.0, period: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(period)
    return bool(predicate())


def local_stamp(unix_time: float) -> str:
    """The run-start part of a file name: local time, ISO, milliseconds."""
    return datetime.fromtimestamp(unix_time).strftime("%Y-%m-%dT%H:%M:%S.") + f"{round(unix_time * 1000) % 1000:03d}"


class DataRouterProcess:
    """``python -m simulators.datarouter.server`` in a staging directory, on a free port."""

    def __init__(self, workdir: Path, stderr_path: Path, *extra_args: str, name: str = "DataRouter0") -> None:
        self.workdir = workdir
        self.name = name
        self.stderr_path = stderr_path
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        with open(self.stderr_path, "w") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "simulators.datarouter.server", "--port", "0", "--workdir", str(workdir),
                 "--name", name, "--file-seconds", str(FILE_SECONDS), "--rate", str(RATE), *extra_args],
                stdout=subprocess.PIPE, stderr=stderr, stdin=subprocess.DEVNULL, text=True, env=env, cwd=ROOT,
            )  # fmt: skip
        self.pid = self.process.pid
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], STARTUP_TIMEOUT)
        line = self.process.stdout.readline().strip() if ready else ""
        match = LISTENING_RE.match(line)
        if match is None:
            self.kill()
            raise AssertionError(f"data router did not start: {line!r}\n{self.stderr_path.read_text()}")
        assert match[1] == name
        self.port = int(match[3])

    def request(self, line: str) -> str:
        """Send one request on a new connection; return the reply line."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=REPLY_TIMEOUT) as sock:
            sock.sendall(line.encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
        return data.decode().strip()

    def graw_files(self) -> list[Path]:
        return sorted(self.workdir.glob("*.graw"))

    def log(self) -> str:
        return (self.workdir / "dataRouter.log").read_text()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


@pytest.fixture
def start_router(tmp_path: Path) -> Iterator[Callable[..., DataRouterProcess]]:
    """Factory starting data routers in ``tmp_path/<name>``; every one is killed at the end."""
    started: list[DataRouterProcess] = []

    def start(*extra_args: str, workdir: Path | None = None, name: str = "DataRouter0") -> DataRouterProcess:
        count = len(started)
        workdir = workdir or tmp_path / f"staging{count}"
        router = DataRouterProcess(workdir, tmp_path / f"router{count}.stderr", *extra_args, name=name)
        started.append(router)
        return router

    yield start
    for router in started:
        router.kill()


@pytest.mark.parametrize(
    ("source_id", "prefix"),
    [
        ("CoBo[3]", "CoBo3_AsAd0"),
        ("CoBo[0]", "CoBo0_AsAd0"),
        ("Mutant[master]", "Mutant_master"),
        ("Mutant[2]", "Mutant2"),
        ("odd source!", "odd_source"),
    ],
)
def test_file_prefix_from_source_id(source_id: str, prefix: str) -> None:
    assert file_prefix(source_id) == prefix


def test_starts_idle_in_a_new_workdir_and_logs_there(
    start_router: Callable[..., DataRouterProcess], tmp_path: Path
) -> None:
    workdir = tmp_path / "not" / "yet" / "there"
    router = start_router(workdir=workdir)
    assert workdir.is_dir()
    assert router.request("STATUS") == "IDLE"
    assert f"listening on 127.0.0.1:{router.port}" in router.log()
    assert router.graw_files() == []


def test_process_is_called_dataRouter_and_runs_in_its_workdir(start_router: Callable[..., DataRouterProcess]) -> None:
    router = start_router()
    assert Path(f"/proc/{router.pid}/comm").read_text().strip() == "dataRouter"
    pgrep = subprocess.run(["pgrep", "-x", "dataRouter"], capture_output=True, text=True, timeout=10)
    assert str(router.pid) in pgrep.stdout.split()
    assert os.readlink(f"/proc/{router.pid}/cwd") == str(router.workdir.resolve())
    cmdline = Path(f"/proc/{router.pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    assert cmdline.startswith(f"dataRouter --name DataRouter0 --port {router.port}")


def test_run_writes_growing_rotating_files_until_stop(start_router: Callable[..., DataRouterProcess]) -> None:
    router = start_router()
    assert router.request(f"START CoBo[3] {RUN_START}") == "OK"
    first = router.workdir / f"CoBo3_AsAd0_{local_stamp(RUN_START)}_0000.graw"
    assert first.exists(), router.graw_files()
    assert first.read_bytes().startswith(b"GRAW-SIM router=DataRouter0 source=CoBo[3] file=0000 run-start=")
    size = first.stat().st_size
    assert wait_for(lambda: first.stat().st_size > size), "the first file does not grow"
    second = first.with_name(first.name.replace("_0000.graw", "_0001.graw"))
    assert wait_for(second.exists, timeout=5), router.graw_files()

    status = router.request("STATUS").split()
    assert status[:2] == ["RUNNING", "CoBo[3]"]
    assert int(status[2]) >= 2
    assert int(status[3]) >= first.stat().st_size

    assert router.request("STOP CoBo[3]") == "OK"
    assert router.request("STATUS") == "IDLE"
    files = router.graw_files()
    sizes = [path.stat().st_size for path in files]
    time.sleep(3 * 0.05 + 0.2)  # a few writer ticks
    assert [path.stat().st_size for path in router.graw_files()] == sizes, "files still grow after STOP"
    assert [path.name for path in files][:2] == [first.name, second.name]
    for index, path in enumerate(files):
        match = GRAW_NAME_RE.fullmatch(path.name)
        assert match is not None, path.name
        assert (match["prefix"], match["start"], int(match["index"])) == ("CoBo3_AsAd0", local_stamp(RUN_START), index)
    # A closed file holds file-seconds of data: bounded, not open-ended.
    header = len(first.read_bytes().split(b"\n", 1)[0]) + 1
    assert RATE * FILE_SECONDS * 0.9 <= sizes[0] - header <= RATE * FILE_SECONDS + 1

    log = router.log()
    assert "START CoBo[3]" in log
    assert f"closed {first.name}" in log
    assert "STOP CoBo[3]: run of CoBo[3] ended" in log


def test_a_new_run_starts_at_file_0000_with_its_own_time(start_router: Callable[..., DataRouterProcess]) -> None:
    router = start_router()
    assert router.request("START Mutant[master] 1514046244.657") == "OK"
    assert router.request("STOP Mutant[master]") == "OK"
    later = 1514046300.25
    assert router.request(f"start Mutant[master] {later}") == "OK"  # command words are case-insensitive
    assert router.request("STOP Mutant[master]") == "OK"
    names = {path.name for path in router.graw_files()}
    assert f"Mutant_master_{local_stamp(1514046244.657)}_0000.graw" in names
    assert f"Mutant_master_{local_stamp(later)}_0000.graw" in names


def test_refusals(start_router: Callable[..., DataRouterProcess]) -> None:
    router = start_router()
    assert router.request("STOP CoBo[0]") == "OK"  # idle: nothing to stop
    assert router.request(f"START CoBo[0] {RUN_START}") == "OK"
    assert router.request(f"START CoBo[0] {RUN_START}") == "OK"  # repeated: keeps running
    assert router.request(f"START CoBo[1] {RUN_START}") == "ERR busy running CoBo[0]"
    assert router.request("STOP CoBo[1]") == "ERR not-running CoBo[1] (running CoBo[0])"
    assert router.request("START CoBo[1]").startswith("ERR usage START <source-id> <unix-time>")
    assert router.request("START CoBo[1] yesterday").startswith("ERR usage bad unix time 'yesterday'")
    assert router.request("STATUS now").startswith("ERR usage")
    assert router.request("RESET").startswith("ERR unknown command 'RESET'")
    assert router.request("STATUS").startswith("RUNNING CoBo[0] ")
    assert "refused 'START CoBo[1]" in router.log()


def test_sigterm_closes_the_file_and_exits_0(start_router: Callable[..., DataRouterProcess]) -> None:
    router = start_router()
    assert router.request(f"START CoBo[2] {RUN_START}") == "OK"
    router.process.send_signal(signal.SIGTERM)
    assert router.process.wait(timeout=10) == 0
    log = router.log()
    assert "shutdown: run of CoBo[2] ended" in log
    assert "shutting down" in log
    sizes = [path.stat().st_size for path in router.graw_files()]
    time.sleep(0.2)
    assert [path.stat().st_size for path in router.graw_files()] == sizes
