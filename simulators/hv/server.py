"""TCP simulator of a 16-channel SiPM bias high-voltage crate.

It speaks the line protocol specified in ``docs/hv-protocol.md`` so that the
DCS ``TextDevice`` server, tests and ``dcs`` scenarios have a crate to talk
to without hardware. The physics runs in real time: voltages ramp at the
configured rate, currents follow the load, and channels trip when the
current exceeds the limit. Simulator-only ``SIM:`` requests inject faults
(dropped connections, silence, garbage) and change loads.

Run it with::

    python -m simulators.hv.server --port 0

It prints exactly one line, ``hv simulator listening on HOST:PORT``, once it
accepts connections, so a parent process can learn the port it picked.
"""

from __future__ import annotations

import argparse
import asyncio
import enum
import logging
import random
import re
import signal
import string
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from simulators.arguments import port as _port
from simulators.arguments import positive_float as _positive_float

log = logging.getLogger("simulators.hv")

VMAX = 80.0  # V, highest accepted setpoint
TRIP_FALL_RATE = 50.0  # V/s, how fast a tripped channel discharges
DEFAULT_LOAD_MOHM = 100.0
DEFAULT_ILIM_UA = 2.0
DEFAULT_RAMP_V_PER_S = 5.0
RAMP_RANGE = (0.1, 50.0)  # V/s
ILIM_RANGE = (0.01, 100.0)  # µA
CURRENT_NOISE_REL = 0.002  # sigma of the current noise, relative to the current

ERR_UNKNOWN_COMMAND = 1
ERR_BAD_CHANNEL = 2
ERR_BAD_VALUE = 3
ERR_OUT_OF_RANGE = 4
ERR_TRIPPED = 5

# Strict decimal syntax: float() alone would also accept "nan", "inf" and
# "1_000", none of which a real crate firmware would take as a number.
_NUMBER_RE = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")

# No digits, signs, dots, commas or spaces, so that a garbage reply can never
# be parsed as a number, nor split into numbers by a client expecting ``ALL``.
_GARBAGE_CHARS = string.ascii_letters + "#$%&*@!?~^|<>;:=_"


class ProtocolError(Exception):
    """A request the crate refuses; becomes an ``ERR <code> <message>`` reply."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def reply(self) -> str:
        return f"ERR {self.code} {self.message}"


class Fault(enum.Enum):
    """Timed fault modes that change how requests are answered."""

    NONE = "none"
    SILENT = "silent"
    GARBAGE = "garbage"


@dataclass
class Channel:
    """One HV channel: setpoints, switch state and the voltage/current physics."""

    index: int
    vset: float = 0.0  # V
    vmon: float = 0.0  # V, noiseless "true" output voltage
    ramp: float = DEFAULT_RAMP_V_PER_S  # V/s
    ilim: float = DEFAULT_ILIM_UA  # µA
    load: float = DEFAULT_LOAD_MOHM  # MΩ
    on: bool = False
    tripped: bool = False
    # Set by a trip and kept until the output reaches 0 V, so that a RESET
    # issued mid-discharge does not slow the fall down to the ramp rate.
    discharging: bool = False

    @property
    def target(self) -> float:
        """Voltage the output is heading for."""
        return self.vset if self.on else 0.0

    @property
    def current(self) -> float:
        """Noiseless load current in µA (volts / megaohms = microamps)."""
        return self.vmon / self.load

    def measured_current(self, rng: random.Random) -> float:
        """Current as a real ammeter would report it: slightly noisy, never negative."""
        true_current = self.current
        return max(0.0, rng.gauss(true_current, true_current * CURRENT_NOISE_REL))

    def advance(self, dt: float) -> bool:
        """Let ``dt`` seconds of real time pass; return True if the channel tripped."""
        rate = TRIP_FALL_RATE if self.discharging and not self.on else self.ramp
        step = rate * dt
        target = self.target
        if self.vmon < target:
            self.vmon = min(target, self.vmon + step)
        elif self.vmon > target:
            self.vmon = max(target, self.vmon - step)
        if self.vmon <= 0.0:
            self.discharging = False
        # The trip decision uses the noiseless current so that it does not
        # flicker for a channel sitting right at its limit.
        if self.on and self.current > self.ilim:
            self.trip()
            return True
        return False

    def trip(self) -> None:
        self.on = False
        self.tripped = True
        self.discharging = True

    def switch_on(self) -> None:
        if self.tripped:
            raise ProtocolError(ERR_TRIPPED, f"channel {self.index} tripped (reset first)")
        self.on = True
        self.discharging = False

    def switch_off(self) -> None:
        self.on = False

    def reset(self) -> None:
        self.tripped = False

    @property
    def status(self) -> int:
        """STAT bit field: 1 on, 2 ramping up, 4 ramping down, 8 tripped."""
        bits = 0
        if self.on:
            bits |= 1
        if self.vmon < self.target:
            bits |= 2
        if self.vmon > self.target:
            bits |= 4
        if self.tripped:
            bits |= 8
        return bits


Handler = Callable[[list[str]], str]


class Crate:
    """The whole crate: its channels, the fault-injection state and the protocol.

    ``handle`` takes one request line and returns the reply line (without the
    newline) or None when nothing must be sent. Time comes from ``clock`` so
    that the physics follows real time however often the crate is queried.
    """

    def __init__(
        self,
        channels: int = 16,
        serial: str = "HV0001",
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if channels < 1:
            raise ValueError("a crate needs at least one channel")
        self.channels = [Channel(index) for index in range(channels)]
        self.serial = serial
        self.rng = rng if rng is not None else random.Random()
        self._clock = clock
        self._last_update = clock()
        self.fault = Fault.NONE
        self._fault_until = 0.0
        # Closing connections is the server's business; the crate only
        # records the request and the server acts on it after replying.
        self.drop_requested = False
        self._handlers: dict[str, Handler] = {
            "*IDN?": self._idn,
            "VSET?": self._query_vset,
            "VSET": self._set_vset,
            "VMON?": self._query_vmon,
            "IMON?": self._query_imon,
            "ON": self._on,
            "OFF": self._off,
            "PWR?": self._query_pwr,
            "RAMP?": self._query_ramp,
            "RAMP": self._set_ramp,
            "ILIM?": self._query_ilim,
            "ILIM": self._set_ilim,
            "STAT?": self._query_stat,
            "RESET": self._reset,
            "SIM:LOAD": self._sim_load,
            "SIM:FAULT": self._sim_fault,
        }

    # -- physics --------------------------------------------------------

    def update(self) -> None:
        """Advance every channel to the current time."""
        now = self._clock()
        dt = max(0.0, now - self._last_update)
        self._last_update = now
        for channel in self.channels:
            if channel.advance(dt):
                log.warning(
                    "channel %d tripped: %.4f uA > limit %.4f uA",
                    channel.index,
                    channel.current,
                    channel.ilim,
                )

    def active_fault(self) -> Fault:
        """The fault in force now; timed faults expire by themselves."""
        if self.fault is not Fault.NONE and self._clock() >= self._fault_until:
            log.info("fault %s over", self.fault.value)
            self.fault = Fault.NONE
        return self.fault

    # -- protocol -------------------------------------------------------

    def handle(self, line: str) -> str | None:
        """Answer one request line; None means "send nothing"."""
        words = line.split()
        if not words:
            return None  # blank lines are keep-alives, not requests
        self.update()
        keyword = words[0].upper()
        # SIM: requests bypass the faults so a test can always clear them.
        if not keyword.startswith("SIM:"):
            fault = self.active_fault()
            if fault is Fault.SILENT:
                return None
            if fault is Fault.GARBAGE:
                return self._garbage()
        handler = self._handlers.get(keyword)
        try:
            if handler is None:
                raise ProtocolError(ERR_UNKNOWN_COMMAND, f"unknown command '{words[0]}'")
            return handler(words[1:])
        except ProtocolError as error:
            return error.reply()

    def _garbage(self) -> str:
        # A leading '#' guarantees the line is neither a number nor OK/ERR.
        length = self.rng.randint(5, 24)
        return "#" + "".join(self.rng.choice(_GARBAGE_CHARS) for _ in range(length))

    # -- argument parsing ------------------------------------------------

    @staticmethod
    def _expect(args: list[str], count: int) -> None:
        if len(args) > count:
            raise ProtocolError(ERR_BAD_VALUE, f"unexpected argument '{args[count]}'")

    def _channel(self, args: list[str], count: int = 1) -> Channel:
        """The channel named by ``args[0]``; ``count`` is the number of arguments allowed."""
        if not args:
            raise ProtocolError(ERR_BAD_CHANNEL, "missing channel")
        self._expect(args, count)
        text = args[0]
        last = len(self.channels) - 1
        if not text.isdigit() or int(text) > last:
            raise ProtocolError(ERR_BAD_CHANNEL, f"bad channel '{text}' (0 to {last})")
        return self.channels[int(text)]

    def _channels(self, args: list[str]) -> list[Channel]:
        """Channels of a query that also accepts ``ALL``."""
        if args and args[0].upper() == "ALL":
            self._expect(args, 1)
            return self.channels
        return [self._channel(args)]

    @staticmethod
    def _number(args: list[str], position: int, low: float, high: float, unit: str) -> float:
        if len(args) <= position:
            raise ProtocolError(ERR_BAD_VALUE, "missing value")
        text = args[position]
        if not _NUMBER_RE.fullmatch(text):
            raise ProtocolError(ERR_BAD_VALUE, f"bad value '{text}' (not a number)")
        value = float(text)
        if not low <= value <= high:
            raise ProtocolError(ERR_OUT_OF_RANGE, f"{text} out of range ({low:g} to {high:g} {unit})")
        return value

    # -- request handlers -------------------------------------------------

    def _idn(self, args: list[str]) -> str:
        self._expect(args, 0)
        return f"DCS-SIM,HV{len(self.channels)},{self.serial},1.0"

    def _query_vset(self, args: list[str]) -> str:
        return f"{self._channel(args).vset:.3f}"

    def _set_vset(self, args: list[str]) -> str:
        channel = self._channel(args, 2)
        channel.vset = self._number(args, 1, 0.0, VMAX, "V")
        return "OK"

    def _query_vmon(self, args: list[str]) -> str:
        return ",".join(f"{channel.vmon:.3f}" for channel in self._channels(args))

    def _query_imon(self, args: list[str]) -> str:
        return ",".join(f"{channel.measured_current(self.rng):.4f}" for channel in self._channels(args))

    def _on(self, args: list[str]) -> str:
        self._channel(args).switch_on()
        return "OK"

    def _off(self, args: list[str]) -> str:
        self._channel(args).switch_off()
        return "OK"

    def _query_pwr(self, args: list[str]) -> str:
        return "1" if self._channel(args).on else "0"

    def _query_ramp(self, args: list[str]) -> str:
        return f"{self._channel(args).ramp:.2f}"

    def _set_ramp(self, args: list[str]) -> str:
        channel = self._channel(args, 2)
        channel.ramp = self._number(args, 1, *RAMP_RANGE, "V/s")
        return "OK"

    def _query_ilim(self, args: list[str]) -> str:
        return f"{self._channel(args).ilim:.4f}"

    def _set_ilim(self, args: list[str]) -> str:
        channel = self._channel(args, 2)
        channel.ilim = self._number(args, 1, *ILIM_RANGE, "uA")
        return "OK"

    def _query_stat(self, args: list[str]) -> str:
        return ",".join(str(channel.status) for channel in self._channels(args))

    def _reset(self, args: list[str]) -> str:
        self._channel(args).reset()
        return "OK"

    def _sim_load(self, args: list[str]) -> str:
        channel = self._channel(args, 2)
        load = self._number(args, 1, 0.0, float("inf"), "megaohm")
        if load <= 0.0:
            raise ProtocolError(ERR_OUT_OF_RANGE, f"{args[1]} out of range (load must be > 0)")
        channel.load = load
        log.info("channel %d load set to %g Mohm", channel.index, load)
        return "OK"

    def _sim_fault(self, args: list[str]) -> str:
        if not args:
            raise ProtocolError(ERR_BAD_VALUE, "missing fault (drop, silent, garbage, none)")
        mode = args[0].lower()
        if mode in ("drop", "none"):
            self._expect(args, 1)
            if mode == "drop":
                self.drop_requested = True
                log.warning("fault injected: drop all connections")
            else:
                self.fault = Fault.NONE
                log.info("faults cleared")
            return "OK"
        if mode in ("silent", "garbage"):
            self._expect(args, 2)
            seconds = self._number(args, 1, 0.0, float("inf"), "s")
            self.fault = Fault(mode)
            self._fault_until = self._clock() + seconds
            log.warning("fault injected: %s for %g s", mode, seconds)
            return "OK"
        raise ProtocolError(ERR_BAD_VALUE, f"bad fault '{args[0]}' (drop, silent, garbage, none)")


class HVServer:
    """asyncio TCP front end: one Crate shared by any number of clients."""

    def __init__(self, crate: Crate, host: str, port: int, tick: float) -> None:
        self.crate = crate
        self.host = host
        self.port = port
        self.tick = tick
        self._server: asyncio.Server | None = None
        self._tick_task: asyncio.Task[None] | None = None
        self._clients: set[asyncio.StreamWriter] = set()

    async def start(self) -> int:
        """Start listening and ticking; return the bound port."""
        self._server = await asyncio.start_server(self._serve_client, self.host, self.port)
        # The physics also advances on every request; ticking only makes
        # trips happen (and get logged) when nobody is asking.
        self._tick_task = asyncio.create_task(self._tick_loop())
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._tick_task is not None:
            self._tick_task.cancel()
        if self._server is not None:
            self._server.close()
        self.drop_all()
        if self._server is not None:
            await self._server.wait_closed()

    def drop_all(self) -> None:
        for writer in list(self._clients):
            writer.close()

    async def _tick_loop(self) -> None:
        while True:
            self.crate.update()
            await asyncio.sleep(self.tick)

    async def _serve_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        log.info("client connected: %s", peer)
        self._clients.add(writer)
        try:
            while True:
                try:
                    raw = await reader.readline()
                except ValueError:  # line longer than the stream limit
                    log.warning("client %s sent an over-long line; closing", peer)
                    break
                if not raw:
                    break
                reply = self.crate.handle(raw.decode("ascii", errors="replace"))
                if reply is not None:
                    writer.write(reply.encode("ascii", errors="replace") + b"\n")
                    await writer.drain()
                if self.crate.drop_requested:
                    # After the drain above the requester has its OK; its own
                    # connection is closed along with everybody else's.
                    self.crate.drop_requested = False
                    log.warning("dropping %d client connection(s)", len(self._clients))
                    self.drop_all()
        except ConnectionError:
            pass
        finally:
            self._clients.discard(writer)
            writer.close()
            log.info("client disconnected: %s", peer)




def _channel_count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m simulators.hv.server",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Simulate a SiPM bias high-voltage crate over TCP, speaking the line\n"
            "protocol of docs/hv-protocol.md (one request per line, one reply line each).\n"
            "\n"
            "Once ready it prints exactly one line on stdout,\n"
            "  hv simulator listening on HOST:PORT\n"
            "and logs to stderr. SIGTERM or Ctrl-C stops it with exit code 0."
        ),
        epilog=(
            "example session:\n"
            "  python -m simulators.hv.server --port 0 &\n"
            "  nc 127.0.0.1 PORT\n"
            "  *IDN?            -> DCS-SIM,HV16,HV0001,1.0\n"
            "  VSET 0 45        -> OK\n"
            "  ON 0             -> OK\n"
            "  VMON? ALL        -> 16 comma-separated voltages\n"
            "\n"
            "fault injection (simulator only):\n"
            "  SIM:LOAD <ch> <megaohm>        change a channel's load (default 100)\n"
            "  SIM:FAULT drop                 close every client connection\n"
            "  SIM:FAULT silent <seconds>     swallow requests for that long\n"
            "  SIM:FAULT garbage <seconds>    answer with random garbage for that long\n"
            "  SIM:FAULT none                 clear faults"
        ),
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default: %(default)s)",
    )
    parser.add_argument(
        "--port",
        type=_port,
        default=5025,
        help="TCP port; 0 picks a free one (default: %(default)s)",
    )
    parser.add_argument(
        "--channels",
        type=_channel_count,
        default=16,
        help="number of HV channels (default: %(default)s)",
    )
    parser.add_argument(
        "--serial",
        default="HV0001",
        help="serial number reported by *IDN? (default: %(default)s)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help="random seed for current noise and garbage (default: unseeded)",
    )
    parser.add_argument(
        "--tick",
        type=_positive_float,
        default=0.05,
        help="physics update period in seconds (default: %(default)s)",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="stderr log level (default: %(default)s)",
    )
    return parser


async def _run(args: argparse.Namespace) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    crate = Crate(channels=args.channels, serial=args.serial, rng=random.Random(args.seed))
    server = HVServer(crate, args.host, args.port, args.tick)
    try:
        port = await server.start()
    except OSError as error:
        log.error("cannot listen on %s:%s: %s", args.host, args.port, error)
        return 1
    # The one line on stdout: a parent process reads it to learn the port.
    print(f"hv simulator listening on {args.host}:{port}", flush=True)
    log.info("%d channels, serial %s, tick %g s", args.channels, args.serial, args.tick)

    await stop.wait()
    log.info("shutting down")
    await server.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return asyncio.run(_run(args))


if __name__ == "__main__":
    raise SystemExit(main())
