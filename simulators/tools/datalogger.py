"""Stand-in for a vendor text utility of a 40-channel temperature data logger.

Control systems often have to wrap an existing command-line tool instead of
speaking to the instrument directly; this one behaves like such a tool for a
Keysight-style data logger with 40 temperature sensors::

    python -m simulators.tools.datalogger idn
    python -m simulators.tools.datalogger read 7
    python -m simulators.tools.datalogger read-all
    python -m simulators.tools.datalogger set-interval 30
    python -m simulators.tools.datalogger get-interval

Temperatures are a smooth, deterministic function of wall-clock time and
sensor number, so any two processes agree on them. The only state, the scan
interval, lives in a small JSON file so that it survives between calls like
the instrument's own setting would.

Exit codes: 0 success, 1 state file unusable, 2 bad command line or value
(message on stderr, nothing on stdout).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

IDN = "DCS-SIM,DATALOGGER40,DL0001,1.0"
SENSORS = 40
DEFAULT_INTERVAL_S = 10.0
INTERVAL_RANGE_S = (1.0, 3600.0)
STATE_ENV = "DCS_DATALOGGER_STATE"
DEFAULT_STATE = Path("~/.cache/dcs/datalogger.json")

EXIT_OK = 0
EXIT_STATE = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """Bad input from the user: reported on stderr with exit code 2."""


class StateError(Exception):
    """The state file exists but cannot be read or written: exit code 1."""


def temperature(sensor: int, t: float) -> float:
    """Temperature in °C of ``sensor`` at Unix time ``t``.

    A slow drift (period ~6 min) plus a small faster wobble (period ~20 s),
    so readings taken a few seconds apart differ slightly, as real ones do.
    """
    return 22.0 + 0.05 * sensor + 0.5 * math.sin(t / 60.0 + sensor) + 0.03 * math.sin(t / 3.0 + 2.0 * sensor)


def parse_sensor(text: str) -> int:
    try:
        sensor = int(text)
    except ValueError:
        raise UsageError(f"sensor must be an integer 0 to {SENSORS - 1}, got {text!r}") from None
    if not 0 <= sensor < SENSORS:
        raise UsageError(f"sensor {sensor} out of range (0 to {SENSORS - 1})")
    return sensor


def parse_interval(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise UsageError(f"interval must be a number of seconds, got {text!r}") from None
    low, high = INTERVAL_RANGE_S
    if not math.isfinite(seconds):
        raise UsageError(f"interval must be a number of seconds, got {text!r}")
    if not low <= seconds <= high:
        raise UsageError(f"interval {text} s out of range ({low:g} to {high:g} s)")
    return seconds


def format_seconds(seconds: float) -> str:
    """``10`` rather than ``10.0`` for whole seconds, as the instrument shows them."""
    return str(int(seconds)) if seconds.is_integer() else repr(seconds)


def state_path(option: str | None) -> Path:
    """``--state`` wins over the environment, which wins over the default."""
    chosen = option or os.environ.get(STATE_ENV) or str(DEFAULT_STATE)
    return Path(chosen).expanduser()


def load_state(path: Path) -> dict[str, float]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {"interval": DEFAULT_INTERVAL_S}
    except OSError as error:
        raise StateError(f"cannot read state file {path}: {error}") from None
    try:
        data = json.loads(text)
        interval = float(data["interval"])
    except (ValueError, KeyError, TypeError) as error:
        raise StateError(f"state file {path} is corrupt ({error}); delete it to start over") from None
    return {"interval": interval}


def save_state(path: Path, state: dict[str, float]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write-then-rename so a concurrent reader never sees a half-written file.
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as tmp:
            json.dump(state, tmp)
            tmp.write("\n")
        os.replace(tmp_name, path)
    except OSError as error:
        raise StateError(f"cannot write state file {path}: {error}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m simulators.tools.datalogger",
        description=(
            f"Simulated text utility of a {SENSORS}-sensor temperature data logger\n"
            "(DCS stand-in for a vendor tool). Prints one result line on stdout."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "examples:\n"
            "  %(prog)s read 7             -> 22.78\n"
            "  %(prog)s read-all           -> 40 comma-separated values\n"
            "  %(prog)s set-interval 30    -> OK\n"
            "\n"
            f"The scan interval is kept in a JSON state file: --state FILE,\n"
            f"else ${STATE_ENV}, else {DEFAULT_STATE}.\n"
            "Exit codes: 0 ok, 1 state file unusable, 2 bad command or value\n"
            "(message on stderr, nothing on stdout)."
        ),
    )
    parser.add_argument(
        "--state",
        metavar="FILE",
        help=f"JSON state file (default: ${STATE_ENV} or {DEFAULT_STATE})",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    commands.add_parser("idn", help="print the identification string")
    read = commands.add_parser("read", help="print one sensor's temperature in °C, e.g. 23.41")
    read.add_argument("sensor", help=f"sensor number, 0 to {SENSORS - 1}")
    commands.add_parser("read-all", help=f"print all {SENSORS} temperatures, comma-separated")
    commands.add_parser("get-interval", help="print the scan interval in seconds")
    set_interval = commands.add_parser("set-interval", help="store a new scan interval; prints OK")
    low, high = INTERVAL_RANGE_S
    set_interval.add_argument("seconds", help=f"scan interval, {low:g} to {high:g} s")
    return parser


def run(args: argparse.Namespace) -> str:
    """Execute the parsed command; return the line to print."""
    if args.command == "idn":
        return IDN
    if args.command == "read":
        sensor = parse_sensor(args.sensor)
        return f"{temperature(sensor, time.time()):.2f}"
    if args.command == "read-all":
        now = time.time()  # one instant for the whole scan
        return ",".join(f"{temperature(sensor, now):.2f}" for sensor in range(SENSORS))
    path = state_path(args.state)
    if args.command == "get-interval":
        return format_seconds(load_state(path)["interval"])
    if args.command == "set-interval":
        seconds = parse_interval(args.seconds)
        state = load_state(path)
        state["interval"] = seconds
        save_state(path, state)
        return "OK"
    raise UsageError(f"unknown command {args.command!r}")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        # argparse exits on --help (0) and on usage errors (2); hand the code
        # back so that main() always returns rather than raising.
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    try:
        line = run(args)
    except UsageError as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except StateError as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return EXIT_STATE
    print(line)
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
