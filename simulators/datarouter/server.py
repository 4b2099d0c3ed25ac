"""Simulator of a GET data router, the ``dataRouter`` process of a DAQ worker node.

A real data router receives one data source's stream (a CoBo board or the
MuTAnT) and writes it to ``.graw`` files in its working directory, the
*staging directory* that DCS inspects and empties over SSH at the end of each
run. This simulator behaves the same way from the worker node's point of view:

- the process is called ``dataRouter`` (``pgrep -x dataRouter``,
  ``lsof -c dataRouter`` and ``/proc/<pid>/comm`` all see that name), and its
  working directory is the staging directory (``readlink /proc/<pid>/cwd``);
- while its source runs it writes pseudo-random data into ``.graw`` files
  named like the real ones, a new file every ``--file-seconds``;
- it appends a human log to ``dataRouter.log`` in the staging directory.

Since the simulated data does not travel from a simulated CoBo, the ECC server
simulator tells the router when its source starts and stops, over a line
protocol on the router's TCP port (the port the data links point at)::

    START <source-id> <unix-time>   -> OK          begin a run; the time names the files
                                    -> ERR busy running <other-source>
    STOP <source-id>                -> OK          current file closed before the reply
                                                   (also OK when idle: nothing to stop)
                                    -> ERR not-running <source-id> (running <other-source>)
    STATUS                          -> IDLE
                                    -> RUNNING <source-id> <files> <bytes>

Anything else gets ``ERR usage ...`` or ``ERR unknown ...``; blank lines get
no reply. Command words are case-insensitive; a connection may send any
number of requests.

File names are ``<prefix>_<run start>_<index>.graw``, for example
``CoBo3_AsAd0_2017-12-23T17:24:04.657_0000.graw``: the run start is the
``START`` time in the router's local time with milliseconds, the index counts
the files of the run from 0000, and the prefix comes from the source id (see
``file_prefix``): ``CoBo[3]`` -> ``CoBo3_AsAd0`` (the simulator writes one
AsAd stream per CoBo), ``Mutant[master]`` -> ``Mutant_master``.

Run it with::

    python -m simulators.datarouter.server --port 0 --workdir /tmp/staging

It prints exactly one line, ``data router DataRouter0 listening on HOST:PORT``,
once it accepts connections; SIGTERM or Ctrl-C closes the current file and
exits with code 0.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import logging
import math
import os
import random
import re
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

import setproctitle

from simulators.arguments import port as _port
from simulators.arguments import positive_float as _positive_float

log = logging.getLogger("simulators.datarouter")

PROCESS_NAME = "dataRouter"
LOG_FILE = "dataRouter.log"  # in the working directory, like the real router's log
DEFAULT_PORT = 46005
DEFAULT_FILE_SECONDS = 2.0
DEFAULT_RATE = 200_000  # bytes/s while running
TICK = 0.05  # s between writes

_SOURCE_RE = re.compile(r"(?P<kind>[A-Za-z][A-Za-z0-9_]*)\[(?P<label>[A-Za-z0-9_]+)\]")

GRAW_NAME_RE = re.compile(
    r"(?P<prefix>.+)_(?P<start>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3})_(?P<index>\d{4,})\.graw"
)
"""What every file the simulator writes matches (with ``fullmatch``)."""


def file_prefix(source_id: str) -> str:
    """The ``.graw`` file-name prefix of a data source.

    ``CoBo[<n>]`` -> ``CoBo<n>_AsAd0``; ``<Kind>[<n>]`` -> ``<Kind><n>``;
    ``<Kind>[<label>]`` -> ``<Kind>_<label>`` (``Mutant[master]`` ->
    ``Mutant_master``); anything else has its runs of other characters than
    letters and digits replaced by ``_``.
    """
    match = _SOURCE_RE.fullmatch(source_id)
    if match is None:
        return re.sub(r"[^A-Za-z0-9]+", "_", source_id).strip("_") or "source"
    kind, label = match["kind"], match["label"]
    if not label.isdigit():
        return f"{kind}_{label}"
    if kind.lower() == "cobo":
        return f"{kind}{label}_AsAd0"
    return f"{kind}{label}"


def graw_name(prefix: str, run_start: float, index: int) -> str:
    """``<prefix>_<local ISO time with ms>_<index:04d>.graw`` for a run started at unix time ``run_start``."""
    stamp = datetime.fromtimestamp(run_start).isoformat(timespec="milliseconds")
    return f"{prefix}_{stamp}_{index:04d}.graw"


class ProtocolError(Exception):
    """A request the router refuses; becomes an ``ERR <reason> <message>`` reply."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason} {message}")
        self.reason = reason
        self.message = message

    def reply(self) -> str:
        return f"ERR {self.reason} {self.message}"


@dataclass
class Run:
    """The run in progress: which source, which file, how much was written."""

    source_id: str
    start_time: float  # unix time given by START; names the files
    prefix: str
    files: int = 0  # files opened so far, the current one included
    bytes: int = 0  # bytes written so far, headers included
    file: BinaryIO | None = None
    file_name: str = ""
    file_bytes: int = 0
    file_opened: float = 0.0  # router clock
    last_write: float = 0.0  # router clock
    carry: float = 0.0  # fraction of a byte owed to the next write


class DataRouter:
    """The router's state and its control protocol; ``advance`` does the writing.

    ``handle`` takes one request line and returns the reply line (without the
    newline), or None when nothing must be sent. ``advance`` writes the data
    due since the last call and starts a new file every ``file_seconds``, as
    measured by ``clock``.
    """

    def __init__(
        self,
        name: str,
        workdir: Path,
        file_seconds: float = DEFAULT_FILE_SECONDS,
        rate: int = DEFAULT_RATE,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.workdir = workdir
        self.file_seconds = file_seconds
        self.rate = rate
        self.rng = rng if rng is not None else random.Random()
        self._clock = clock
        self.run: Run | None = None

    # -- protocol -------------------------------------------------------

    def handle(self, line: str) -> str | None:
        """Answer one request line; None means "send nothing"."""
        words = line.split()
        if not words:
            return None
        keyword, args = words[0].upper(), words[1:]
        try:
            if keyword == "START":
                if len(args) != 2:
                    raise ProtocolError("usage", "START <source-id> <unix-time>")
                self.start(args[0], _unix_time(args[1]))
                return "OK"
            if keyword == "STOP":
                if len(args) != 1:
                    raise ProtocolError("usage", "STOP <source-id>")
                self.stop(args[0])
                return "OK"
            if keyword == "STATUS":
                if args:
                    raise ProtocolError("usage", "STATUS")
                return self.status()
            raise ProtocolError("unknown", f"command '{words[0]}' (START, STOP, STATUS)")
        except ProtocolError as error:
            log.warning("refused '%s': %s", line.strip(), error)
            return error.reply()

    def status(self) -> str:
        self.advance()
        run = self.run
        if run is None:
            return "IDLE"
        return f"RUNNING {run.source_id} {run.files} {run.bytes}"

    def start(self, source_id: str, unix_time: float) -> None:
        """Begin writing files for ``source_id``; a repeated START of the running source is a no-op."""
        self.advance()
        if self.run is not None:
            if self.run.source_id != source_id:
                raise ProtocolError("busy", f"running {self.run.source_id}")
            log.info("START %s: already running (file %s)", source_id, self.run.file_name)
            return
        run = Run(source_id, unix_time, file_prefix(source_id))
        try:
            self._open_file(run, self._clock())
        except OSError as error:
            raise ProtocolError("io", f"cannot create a file in {self.workdir}: {error.strerror}") from None
        self.run = run
        log.info(
            "START %s: run started %s, writing %s at %d B/s, a new file every %g s",
            source_id,
            datetime.fromtimestamp(unix_time).isoformat(timespec="milliseconds"),
            run.file_name,
            self.rate,
            self.file_seconds,
        )

    def stop(self, source_id: str) -> None:
        """Write what is due, close the current file and end the run."""
        self.advance()
        run = self.run
        if run is None:
            log.info("STOP %s: not running, nothing to stop", source_id)
            return
        if run.source_id != source_id:
            raise ProtocolError("not-running", f"{source_id} (running {run.source_id})")
        self._end_run(f"STOP {source_id}")

    def shutdown(self) -> None:
        """End any run in progress (the router is exiting)."""
        self.advance()
        if self.run is not None:
            self._end_run("shutdown")

    # -- writing ----------------------------------------------------------

    def advance(self) -> None:
        """Write the data due until now, starting new files as their time runs out."""
        run = self.run
        if run is None:
            return
        now = self._clock()
        try:
            while True:
                file_end = run.file_opened + self.file_seconds
                self._write(run, min(now, file_end))
                if now < file_end:
                    return
                self._close_file(run)
                # After a long stall (SIGSTOP, suspended VM) restart the cadence
                # now instead of writing a burst of catch-up files.
                self._open_file(run, file_end if now - file_end < self.file_seconds else now)
        except OSError as error:
            log.error("cannot write %s in %s: %s; run of %s ended", run.file_name, self.workdir, error, run.source_id)
            if run.file is not None:
                try:
                    run.file.close()
                except OSError:
                    pass
                run.file = None
            self.run = None

    def _write(self, run: Run, until: float) -> None:
        due = self.rate * max(0.0, until - run.last_write) + run.carry
        count = int(due)
        run.carry = due - count
        run.last_write = until
        if count and run.file is not None:
            run.file.write(self.rng.randbytes(count))
            run.file.flush()  # so that the size seen on disk grows while running
            run.file_bytes += count
            run.bytes += count

    def _open_file(self, run: Run, at: float) -> None:
        index = run.files
        name = graw_name(run.prefix, run.start_time, index)
        handle = open(self.workdir / name, "wb")  # kept open across ticks
        started = datetime.fromtimestamp(run.start_time).isoformat(timespec="milliseconds")
        header = f"GRAW-SIM router={self.name} source={run.source_id} file={index:04d} run-start={started}\n".encode()
        handle.write(header)
        handle.flush()
        run.file, run.file_name, run.file_bytes = handle, name, len(header)
        run.files += 1
        run.bytes += len(header)
        run.file_opened = run.last_write = at
        if index:
            log.info("new file %s", name)

    def _close_file(self, run: Run) -> None:
        if run.file is None:
            return
        run.file.close()
        run.file = None
        log.info("closed %s (%d bytes)", run.file_name, run.file_bytes)

    def _end_run(self, why: str) -> None:
        run = self.run
        assert run is not None
        self._close_file(run)
        self.run = None
        log.info("%s: run of %s ended, %d file(s), %d bytes", why, run.source_id, run.files, run.bytes)


def _unix_time(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise ProtocolError("usage", f"bad unix time '{text}' (seconds since 1970, e.g. 1514046244.657)")
    return value


class DataRouterServer:
    """asyncio TCP front end: the control port, and a tick that keeps the files growing."""

    def __init__(self, router: DataRouter, host: str, port: int) -> None:
        self.router = router
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None
        self._tick_task: asyncio.Task[None] | None = None
        self._clients: set[asyncio.StreamWriter] = set()

    async def start(self) -> int:
        """Start listening and writing; return the bound port."""
        self._server = await asyncio.start_server(self._serve_client, self.host, self.port)
        self._tick_task = asyncio.create_task(self._tick_loop())
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._tick_task is not None:
            self._tick_task.cancel()
        if self._server is not None:
            self._server.close()
        for writer in list(self._clients):
            writer.close()
        if self._server is not None:
            await self._server.wait_closed()
        self.router.shutdown()

    async def _tick_loop(self) -> None:
        while True:
            self.router.advance()
            await asyncio.sleep(TICK)

    async def _serve_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, port = writer.get_extra_info("peername")[:2]
        peer = f"{host}:{port}"
        log.info("connection from %s", peer)
        self._clients.add(writer)
        try:
            while True:
                try:
                    raw = await reader.readline()
                except ValueError:  # line longer than the stream limit
                    log.warning("%s sent an over-long line; closing", peer)
                    break
                if not raw:
                    break
                reply = self.router.handle(raw.decode("ascii", errors="replace"))
                if reply is not None:
                    writer.write(reply.encode("ascii", errors="replace") + b"\n")
                    await writer.drain()
        except ConnectionError:
            pass
        finally:
            self._clients.discard(writer)
            writer.close()
            log.debug("%s disconnected", peer)


def set_process_name(title: str) -> None:
    """Make the process look like a real ``dataRouter``.

    ``title`` replaces the command line (``ps -f``, ``pgrep -f``); the process
    name proper (``/proc/<pid>/comm``, read by ``pgrep -x``, ``ps -C`` and
    ``lsof -c``) is set to ``dataRouter``. Call it from the main thread.
    """
    setproctitle.setproctitle(title)
    setproctitle.setthreadtitle(PROCESS_NAME)
    if _comm() != PROCESS_NAME:  # older setproctitle: set it with prctl ourselves
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_name = 15
        libc.prctl(pr_set_name, ctypes.c_char_p(PROCESS_NAME.encode()), 0, 0, 0)
    if _comm() != PROCESS_NAME:
        log.warning(
            "could not set the process name to %s; pgrep -x %s will not find this router", PROCESS_NAME, PROCESS_NAME
        )


def _comm() -> str | None:
    try:
        return Path("/proc/self/comm").read_text().strip()
    except OSError:  # no procfs (not Linux)
        return None



def _rate(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value



def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m simulators.datarouter.server",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Simulate a GET data router: a process named dataRouter that writes .graw\n"
            "files into its working directory while its data source runs.\n"
            "\n"
            "Once ready it prints exactly one line on stdout,\n"
            "  data router NAME listening on HOST:PORT\n"
            "logs to stderr and to dataRouter.log in its working directory.\n"
            "SIGTERM or Ctrl-C closes the current file and exits with code 0."
        ),
        epilog=(
            "control protocol (one request per line, one reply line each):\n"
            "  START <source-id> <unix-time>   -> OK | ERR busy running <source>\n"
            "  STOP <source-id>                -> OK (current file closed)\n"
            "  STATUS                          -> IDLE | RUNNING <source-id> <files> <bytes>\n"
            "\n"
            "files: <prefix>_<run start, local ISO time with ms>_<NNNN>.graw, e.g.\n"
            "  CoBo[3]        -> CoBo3_AsAd0_2017-12-23T17:24:04.657_0000.graw\n"
            "  Mutant[master] -> Mutant_master_2017-12-23T17:24:04.657_0000.graw"
        ),
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument(
        "--port", type=_port, default=DEFAULT_PORT, help="TCP control port; 0 picks a free one (default: %(default)s)"
    )
    parser.add_argument(
        "--workdir",
        default=".",
        help="staging directory: created if missing, the process runs in it and writes there (default: current)",
    )
    parser.add_argument(
        "--name", default="DataRouter0", help="router name, as in the data links (default: %(default)s)"
    )
    parser.add_argument(
        "--file-seconds",
        type=_positive_float,
        default=DEFAULT_FILE_SECONDS,
        help="start a new .graw file every this many seconds while running (default: %(default)s)",
    )
    parser.add_argument(
        "--rate", type=_rate, default=DEFAULT_RATE, help="bytes per second written while running (default: %(default)s)"
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="stderr log level; dataRouter.log always gets INFO and up (default: %(default)s)",
    )
    return parser


async def _run(args: argparse.Namespace, workdir: Path) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    router = DataRouter(args.name, workdir, file_seconds=args.file_seconds, rate=args.rate)
    server = DataRouterServer(router, args.host, args.port)
    try:
        port = await server.start()
    except OSError as error:
        log.error("%s: cannot listen on %s:%s: %s", args.name, args.host, args.port, error)
        return 1
    set_process_name(f"{PROCESS_NAME} --name {args.name} --port {port} --workdir {workdir}")
    log.info(
        "data router %s listening on %s:%d, pid %d, staging directory %s",
        args.name,
        args.host,
        port,
        os.getpid(),
        workdir,
    )
    # The one line on stdout: a parent process reads it to learn the port.
    print(f"data router {args.name} listening on {args.host}:{port}", flush=True)

    await stop.wait()
    log.info("data router %s shutting down", args.name)
    await server.close()
    return 0


def _configure_logging(level: str, log_path: Path) -> None:
    """stderr at ``level``; the human log in the staging directory at INFO or lower."""
    stderr_handler = logging.StreamHandler(sys.stderr)
    stderr_handler.setLevel(level)
    stderr_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    file_handler = logging.FileHandler(log_path)
    file_handler.setLevel(min(logging.INFO, logging.getLevelName(level)))
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(stderr_handler)
    root.addHandler(file_handler)
    root.setLevel(file_handler.level)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    workdir = Path(args.workdir).expanduser().resolve()
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        os.chdir(workdir)
        _configure_logging(args.log_level, workdir / LOG_FILE)
    except OSError as error:
        logging.basicConfig(stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        log.error("%s: cannot use %s as working directory: %s", args.name, workdir, error)
        return 1
    return asyncio.run(_run(args, workdir))


if __name__ == "__main__":
    raise SystemExit(main())
