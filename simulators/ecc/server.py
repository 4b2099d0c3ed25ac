"""Simulator of the GET ECC server (getEccSoapServer): SOAP 1.1 over HTTP, as in shared/specs/daq-get.md.

It lets the DCS ``EccServer`` device, the run sequencer and tests drive a
CoBo state machine without GET electronics. Run it with::

    python -m simulators.ecc.server --port 0 --config-dir /tmp/ecc --example-configs

It prints exactly one line on stdout, ``ecc simulator listening on HOST:PORT``,
once it accepts connections, and logs to stderr. SIGTERM or Ctrl-C stops it
with exit code 0; ``ServerExit`` too, after answering. Other exit codes:
1 cannot listen, 2 bad arguments or no config directory, 3 ``sim:exit``.

HTTP
    ``GET /?wsdl`` (or ``/ecc?wsdl``) serves device_servers/daq/ecc.wsdl with
    its soap:address rewritten to this server's URL. ``POST`` (any path)
    takes SOAP 1.1 envelopes of every operation of the spec, in any of the
    three encodings real clients use (``ns0:``-prefixed, default or no
    namespace, embedded XML escaped or as child elements; see soap.py). An
    unknown operation or malformed XML gets HTTP 500 with a SOAP Fault.

State machine (state_machine.py, ecc.py)
    One state for the whole server: its data sources (``--sources``) move
    together, starting Idle. A transition call is checked first: a jump, the
    state it is already in, a transition already running, a missing config
    file (``describe-NAME.xcfg``... in ``--config-dir``) or a DataLinkSet
    naming an unknown data source is refused with ErrorCode != 0 and nothing
    changes. A valid call answers ErrorCode 0 at once; the transition then
    runs for ``--transition-time`` seconds, GetState showing Transition != 0
    meanwhile and the new State with Transition 0 after.

Asynchronous failures
    A transition that fails at its end (a data router unreachable or not
    answering OK at Start or Stop, or an injected ``sim:fail``) leaves State
    where it was and Transition 0, and every following GetState carries the
    failure's ErrorCode and ErrorMessage (e.g. 5, "Start failed: data router
    DataRouter0 at 10.0.0.10:46005 for CoBo[0] unreachable: ...") until the
    next transition call is accepted or ``sim:clear``.

Data routers (datalinks.py)
    ``Configure``'s table is the DataLinkSet; the links are remembered. When
    Start completes the simulator connects to each linked router and sends
    ``START <source-id> <run-unix-time>``, when Stop completes ``STOP
    <source-id>``, expecting ``OK`` each time. If a Start handshake fails,
    the routers already started are sent STOP again.

Fault injection, through ``Special`` (``command`` argument; real clients never send these)
    ``sim:fail <Operation> <code> <message...>``
        the next call of a transition operation is accepted but fails at its
        end with that code and message; for GetState, GetConfigIDs or
        ServerExit the next call is refused with them.
    ``sim:refuse <Operation> <code> <message...>``
        the next call of any operation is refused at once with them.
    ``sim:hang <seconds>``
        accept connections but answer nothing for that long; requests that
        arrive meanwhile are closed unanswered when it ends, not executed.
        ``Special sim:...`` requests are still answered, so a test can clear it.
    ``sim:exit``
        exit at once with code 3, answering nothing (a crash).
    ``sim:clear``
        clear pending fails and refusals, a hang, and the GetState error.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from simulators.arguments import port as _port
from simulators.ecc.configs import ConfigDir
from simulators.ecc.ecc import OPERATIONS, Reply, SimulatedEcc
from simulators.ecc.soap import SoapFault, SoapRequest, fault_envelope, parse_request, response_envelope, wsdl_document
from simulators.ecc.state_machine import TRANSITION_OPERATIONS

log = logging.getLogger("simulators.ecc")

DEFAULT_PORT = 8083
MAX_BODY = 8 * 1024 * 1024  # bytes; a bigger request is refused
XML_TYPE = "text/xml; charset=utf-8"


class EccHttpServer(ThreadingHTTPServer):
    """HTTP front end: one thread per connection, all sharing one ``SimulatedEcc``."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], ecc: SimulatedEcc) -> None:
        super().__init__(address, EccRequestHandler)
        self.ecc = ecc
        self.exit_code = 0

    def request_exit(self, code: int) -> None:
        """Stop serving and make ``main`` return ``code``; safe from any thread or a signal handler."""
        self.exit_code = code
        threading.Thread(target=self.shutdown, name="ecc-shutdown", daemon=True).start()


class EccRequestHandler(BaseHTTPRequestHandler):
    """Serves the WSDL on GET and answers SOAP requests on POST."""

    protocol_version = "HTTP/1.1"
    server_version = "ecc-simulator/1.0"
    # Headers and body go out in two writes; without this, Nagle's algorithm and
    # the client's delayed ACK add ~40 ms to every answer on a kept-alive connection.
    disable_nagle_algorithm = True
    server: EccHttpServer

    def do_GET(self) -> None:  # noqa: N802 (name fixed by BaseHTTPRequestHandler)
        if self.server.ecc.wait_out_hang():
            return self._hang_up()
        url = urlsplit(self.path)
        if url.path.rstrip("/") not in ("", "/ecc") or url.query.lower() != "wsdl":
            self._send(404, b"not found: the WSDL is at /?wsdl, SOAP requests are POSTed\n", "text/plain")
            return
        host = self.headers.get("Host") or "{}:{}".format(*self.server.server_address[:2])
        self._send(200, wsdl_document(f"http://{host}"), XML_TYPE)

    def do_POST(self) -> None:  # noqa: N802
        try:
            body = self._read_body()
        except ValueError as error:
            self.close_connection = True
            self._send(400, f"bad request body: {error}\n".encode(), "text/plain")
            return
        request: SoapRequest | None = None
        fault: SoapFault | None = None
        try:
            request = parse_request(body, OPERATIONS)
        except SoapFault as error:
            fault = error
        if not _is_sim_command(request) and self.server.ecc.wait_out_hang():
            return self._hang_up()
        if request is None:
            assert fault is not None
            log.warning("SOAP Fault %s: %s", fault.code, fault.message)
            self._send(500, fault_envelope(fault), XML_TYPE)
            return
        try:
            reply = self.server.ecc.call(request.operation, request.arguments)
        except Exception as error:  # a simulator bug must not look like a silent server
            log.exception("%s failed", request.operation)
            self._send(500, fault_envelope(SoapFault("Server", f"{request.operation}: {error}")), XML_TYPE)
            return
        if reply.crash:
            sys.stderr.flush()
            os._exit(reply.exit_code if reply.exit_code is not None else 1)
        if reply.exit_code is not None:
            self.close_connection = True
        self._send(200, response_envelope(request.operation, _fields(request.operation, reply)), XML_TYPE)
        if reply.exit_code is not None:
            self.server.request_exit(reply.exit_code)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        length = int(self.headers.get("Content-Length") or 0)
        if not 0 <= length <= MAX_BODY:
            raise ValueError(f"Content-Length {length} out of range (at most {MAX_BODY})")
        return self.rfile.read(length)

    def _read_chunked(self) -> bytes:
        body = b""
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline().strip():  # trailers, up to the blank line
                    pass
                return body
            if len(body) + size > MAX_BODY:
                raise ValueError(f"chunked body longer than {MAX_BODY} bytes")
            body += self.rfile.read(size)
            self.rfile.readline()  # the CRLF after each chunk

    def _send(self, status: int, payload: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)

    def _hang_up(self) -> None:
        log.info("%s %s from %s dropped unanswered (sim:hang)", self.command, self.path, self.client_address[0])
        self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (signature of the base class)
        log.debug("%s %s", self.client_address[0], format % args)


def _is_sim_command(request: SoapRequest | None) -> bool:
    """Simulator-only Special commands bypass a hang so that a test can always clear it."""
    return (
        request is not None
        and request.operation == "Special"
        and request.arguments.get("command", "").strip().lower().startswith("sim:")
    )


def _fields(operation: str, reply: Reply) -> list[tuple[str, object]]:
    fields: list[tuple[str, object]] = [("ErrorCode", reply.error_code), ("ErrorMessage", reply.error_message)]
    if operation == "GetState":
        return [*fields, ("State", reply.state), ("Transition", reply.transition)]
    if operation == "ServerExit":
        return fields
    return [*fields, ("Text", reply.text)]


# -- command line ---------------------------------------------------------------



def _sources(text: str) -> list[str]:
    sources = [name.strip() for name in text.split(",")]
    if not all(sources) or any(len(name.split()) != 1 for name in sources):
        raise argparse.ArgumentTypeError(f"expected comma-separated names without spaces, got {text!r}")
    if len(set(sources)) != len(sources):
        raise argparse.ArgumentTypeError(f"a data source is named twice in {text!r}")
    return sources


def _transition_time(text: str) -> tuple[str | None, float]:
    """``SECONDS`` (every transition) or ``OPERATION=SECONDS`` (``describe=0.5``)."""
    name, _, value = text.rpartition("=")
    operation = None
    if name:
        operation = next((op for op in TRANSITION_OPERATIONS if op.lower() == name.strip().lower()), None)
        if operation is None:
            raise argparse.ArgumentTypeError(f"unknown transition {name!r} (one of {', '.join(TRANSITION_OPERATIONS)})")
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {value!r}") from None
    if not 0 <= seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"must be >= 0 seconds, got {value}")
    return operation, seconds


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m simulators.ecc.server",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Simulate a GET ECC server (getEccSoapServer): SOAP 1.1 over HTTP, the CoBo\n"
            "state machine, config files and data links (shared/specs/daq-get.md).\n"
            "\n"
            "Once ready it prints exactly one line on stdout,\n"
            "  ecc simulator listening on HOST:PORT\n"
            "and logs to stderr. SIGTERM, Ctrl-C or the ServerExit operation stop it with code 0."
        ),
        epilog=(
            "fault injection (Special operation, command argument; simulator only):\n"
            "  sim:fail <Operation> <code> <message...>    next transition fails at its end\n"
            "                                              (other operations: next call refused)\n"
            "  sim:refuse <Operation> <code> <message...>  next call refused at once\n"
            "  sim:hang <seconds>                          answer nothing for that long\n"
            "  sim:exit                                    exit at once with code 3\n"
            "  sim:clear                                   clear all of the above and the GetState error"
        ),
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument(
        "--port", type=_port, default=DEFAULT_PORT, help="TCP port; 0 picks a free one (default: %(default)s)"
    )
    parser.add_argument(
        "--config-dir",
        type=Path,
        default=Path("."),
        help="where describe-*.xcfg, prepare-*.xcfg and configure-*.xcfg live (default: current directory)",
    )
    parser.add_argument(
        "--example-configs",
        action="store_true",
        help="create the config directory and a few example files in it (existing files are kept)",
    )
    parser.add_argument(
        "--sources",
        type=_sources,
        default=["CoBo[0]"],
        help='comma-separated data sources it controls, e.g. "CoBo[0],CoBo[1],Mutant[master]" (default: CoBo[0])',
    )
    parser.add_argument(
        "--transition-time",
        type=_transition_time,
        action="append",
        default=[],
        metavar="[OPERATION=]SECONDS",
        help="how long transitions take (default 1.0); OPERATION=SECONDS sets one, e.g. describe=0.5 (repeatable)",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="stderr log level (default: %(default)s)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    config_dir = ConfigDir(args.config_dir)
    if args.example_configs:
        for path in config_dir.write_examples():
            log.info("example config written: %s", path)
    elif not args.config_dir.is_dir():
        log.error("config directory %s does not exist (create it, or pass --example-configs)", args.config_dir)
        return 2

    default_time = 1.0
    per_operation: dict[str, float] = {}
    for operation, seconds in args.transition_time:
        if operation is None:
            default_time = seconds
        else:
            per_operation[operation] = seconds
    ecc = SimulatedEcc(config_dir, args.sources, per_operation, default_time)

    try:
        httpd = EccHttpServer((args.host, args.port), ecc)
    except OSError as error:
        log.error("cannot listen on %s:%s: %s", args.host, args.port, error)
        return 1
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: httpd.request_exit(0))

    port = httpd.server_address[1]
    # The one line on stdout: a parent process reads it to learn the port.
    print(f"ecc simulator listening on {args.host}:{port}", flush=True)
    log.info(
        "sources %s, config dir %s, transition times %s",
        ", ".join(args.sources),
        args.config_dir,
        ", ".join(f"{op} {seconds:g} s" for op, seconds in ecc.transition_times.items()),
    )
    try:
        httpd.serve_forever(poll_interval=0.1)
    finally:
        httpd.server_close()
    log.info("stopped (exit code %d)", httpd.exit_code)
    return httpd.exit_code


if __name__ == "__main__":
    raise SystemExit(main())
