"""TCP server of the weather and site PLC simulator (protocol: see ``simulators.plc``).

Run it with::

    python -m simulators.plc.server --port 0 --scenario rain --tick 0.1

It prints exactly one line, ``plc simulator listening on HOST:PORT``, once
it accepts connections, so a parent process can learn the port it picked.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import signal
import sys

from simulators.arguments import port as _port
from simulators.arguments import positive_float as _positive_float
from simulators.plc.plc import Plc
from simulators.plc.scenario import ScenarioError, shipped_names

log = logging.getLogger("simulators.plc")

DEFAULT_PORT = 5003  # the seed's socket_config.ini: [PLC] port=5003


class PlcServer:
    """asyncio TCP front end: one Plc shared by any number of clients, cycling every tick."""

    def __init__(self, plc: Plc, host: str, port: int) -> None:
        self.plc = plc
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None
        self._cycle_task: asyncio.Task[None] | None = None
        self._clients: set[asyncio.StreamWriter] = set()

    async def start(self) -> int:
        """Run the first cycle, start listening and cycling; return the bound port."""
        # The first cycle runs before anyone can connect, so the very first
        # STATUS already carries readings and scenario time 0.
        self.plc.cycle()
        self._server = await asyncio.start_server(self._serve_client, self.host, self.port)
        self._cycle_task = asyncio.create_task(self._cycle_loop())
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._cycle_task is not None:
            self._cycle_task.cancel()
        if self._server is not None:
            self._server.close()
        for writer in list(self._clients):
            writer.close()
        if self._server is not None:
            await self._server.wait_closed()

    async def _cycle_loop(self) -> None:
        # Cycles are scheduled on a fixed grid so that scenario time does
        # not drift behind the wall clock however long a cycle takes. After
        # a long stall (host suspended, process stopped) the missed cycles
        # are dropped rather than run in a burst.
        loop = asyncio.get_running_loop()
        tick = self.plc.tick
        due = loop.time() + tick
        while True:
            await asyncio.sleep(max(0.0, due - loop.time()))
            self.plc.cycle()
            due += tick
            if loop.time() > due + tick:
                log.warning("PLC cycle late by %.3f s; skipping the missed cycles", loop.time() - due)
                due = loop.time() + tick

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
                reply = self.plc.handle(raw.decode("utf-8", errors="replace"))
                if reply is not None:
                    writer.write(reply.encode("utf-8") + b"\n")
                    await writer.drain()
        except ConnectionError:
            pass
        finally:
            self._clients.discard(writer)
            writer.close()
            log.info("client disconnected: %s", peer)




def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m simulators.plc.server",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Simulate the observatory's weather and site PLC over TCP, speaking the\n"
            "seed's JSON protocol: one JSON request per line, one JSON reply line each.\n"
            "\n"
            "Once ready it prints exactly one line on stdout,\n"
            "  plc simulator listening on HOST:PORT\n"
            "and logs to stderr. SIGTERM or Ctrl-C stops it with exit code 0."
        ),
        epilog=(
            "example session:\n"
            "  python -m simulators.plc.server --port 0 &\n"
            "  nc 127.0.0.1 PORT\n"
            '  {"command": [{"name": "STATUS"}]}\n'
            '      -> [{"name": "STATUS", "from": "Beckhoff", ..., "device": [...]}]\n'
            '  {"command": [{"name": "INJECT", "device": "weather", "value_name": "rain_rate", "value": 5}]}\n'
            '      -> [{"name": "INJECT", "result": "OK", ...}]\n'
            '  {"command": [{"name": "HELP"}]}   lists every command\n'
            "\n"
            f"shipped scenarios: {', '.join(shipped_names())}"
        ),
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument(
        "--port", type=_port, default=DEFAULT_PORT, help="TCP port; 0 picks a free one (default: %(default)s)"
    )
    parser.add_argument("--scenario", help="scenario to play from the start: a shipped name (e.g. rain) or a file")
    parser.add_argument("--loop", action="store_true", help="restart the scenario when it ends")
    parser.add_argument(
        "--tick",
        type=_positive_float,
        default=1.0,
        help="seconds per PLC cycle, the scenario time unit (default: %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed for the weather (default: unseeded)")
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

    plc = Plc(random.Random(args.seed), tick=args.tick)
    if args.scenario:
        try:
            plc.play(plc.load_scenario(args.scenario), loop=args.loop)
        except ScenarioError as problem:
            log.error("cannot play scenario: %s", problem)
            return 2
    server = PlcServer(plc, args.host, args.port)
    try:
        port = await server.start()
    except OSError as problem:
        log.error("cannot listen on %s:%s: %s", args.host, args.port, problem)
        return 1
    # The one line on stdout: a parent process reads it to learn the port.
    print(f"plc simulator listening on {args.host}:{port}", flush=True)
    log.info("cycle %g s, seed %s", args.tick, args.seed)

    await stop.wait()
    log.info("shutting down")
    await server.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.loop and not args.scenario:
        parser.error("--loop needs --scenario")
    logging.basicConfig(
        level=args.log_level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return asyncio.run(_run(args))


if __name__ == "__main__":
    raise SystemExit(main())
