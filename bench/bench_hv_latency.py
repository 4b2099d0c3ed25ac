"""Read and write latency of the HV crate device, against bare pytango devices.

Brings up a facility with the HV crate simulator and its TextDevice server
(`dcs up`, temporary directory, free ports), registers and starts
``bench/bare_device.py`` in the same Tango database (its ``SimulatorPort``
property set to the facility's simulator), then times, from this process
through ``tango.DeviceProxy``:

    DCS dcs/hv/sipm            bare bench/bare/1
    read  Ch00VSet      <->    read  Value             (r/w float, memory)
    read  Ch00VMon      <->    read  Reading           (read-only float)
    write Ch00VSet      <->    write Value             (memory only: not the same work)
                        <->    write HardwareSetpoint  (VSET 15 <v> to the simulator, waits for OK: same I/O)

in rounds, the devices interleaved call by call (DCS, bare, DCS, bare, ...;
for the write, DCS, Value, HardwareSetpoint; the order changes every round,
through every permutation), so drift and bursts of load on the machine hit
all alike. A DCS write is one simulator round trip (``VSET 0 <v>`` -> ``OK``)
on top of the Tango call; ``HardwareSetpoint`` is the same round trip from a
bare pytango device, so DCS / HardwareSetpoint is the framework's overhead on
a write. It also times a raw TCP request to the simulator (``VSET? 0``) from
this process, for scale.

Goal (the issue): DCS / bare <= 1.15 (medians), for reads against the
in-memory attributes, for writes against HardwareSetpoint (same I/O); DCS
write / in-memory Value is shown too but not judged. Timing is reported,
never asserted.

    python bench/bench_hv_latency.py [--rounds 30] [--per-round 50]
"""

from __future__ import annotations

import argparse
import itertools
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

import common

GOAL_RATIO = 1.15

# operation -> (kind, {side: (device, attribute)}); "dcs" is the DCS side, the others are references.
OPERATIONS: dict[str, tuple[str, dict[str, tuple[str, str]]]] = {
    "read Ch00VSet": ("read", {"dcs": ("dcs", "Ch00VSet"), "bare": ("bare", "Value")}),
    "read Ch00VMon": ("read", {"dcs": ("dcs", "Ch00VMon"), "bare": ("bare", "Reading")}),
    "write Ch00VSet": (
        "write",
        {"dcs": ("dcs", "Ch00VSet"), "memory": ("bare", "Value"), "same_io": ("bare", "HardwareSetpoint")},
    ),
}
# result rows: (name, operation, reference side, reference label, judged against the goal)
COMPARISONS = [
    ("read Ch00VSet", "read Ch00VSet", "bare", "bare Value", True),
    ("read Ch00VMon", "read Ch00VMon", "bare", "bare Reading", True),
    ("write Ch00VSet vs memory", "write Ch00VSet", "memory", "bare Value (no I/O)", False),
    ("write Ch00VSet vs same I/O", "write Ch00VSet", "same_io", "bare HardwareSetpoint", True),
]
HW_CHANNEL = 15  # bare_device.HW_CHANNEL: the simulator channel HardwareSetpoint writes


class SimulatorSocket:
    """One persistent TCP connection to the simulator, like the device's own link."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=2.0)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    def query(self, line: str) -> str:
        self.sock.sendall(line.encode() + b"\n")
        while b"\n" not in self.buffer:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("simulator closed the connection")
            self.buffer += chunk
        reply, _, self.buffer = self.buffer.partition(b"\n")
        return reply.decode()

    def close(self) -> None:
        self.sock.close()


def timed(action: Callable[[], Any], count: int, out: list[float]) -> None:
    for _ in range(count):
        started = time.perf_counter()
        action()
        out.append(time.perf_counter() - started)


def timed_interleaved(
    actions: dict[str, Callable[[], Any]],
    order: tuple[str, ...],
    count: int,
    out: dict[str, list[float]],
    batch: int = 1,
    by_previous: dict[str, dict[str, list[float]]] | None = None,
) -> None:
    """Time ``count`` calls on each side, in ``order``, switching side every ``batch`` calls, so a burst of load hits all alike.

    ``by_previous`` also gets every sample filed under the side called just before it (``by_previous[side][previous]``):
    a call can pay for what the previous call left running (the DCS poller reads back after a write).
    """
    done = 0
    previous = "start"
    while done < count:
        n = min(batch, count - done)
        for side in order:
            for _ in range(n):
                before = len(out[side])
                timed(actions[side], 1, out[side])
                if by_previous is not None:
                    by_previous.setdefault(side, {}).setdefault(previous, []).append(out[side][before])
                previous = side
        done += n


def run(args: argparse.Namespace) -> dict[str, Any]:
    import tango

    sim_port = common.free_port()
    with common.BenchFacility(prefix="dcs-bench-latency-", keep=args.keep) as fac:
        fac.write(common.hv_facility_spec("benchlatency", sim_port))
        fac.up(timeout=60)
        fac.wait_device_on(common.HV_DEVICE)
        with common.BareServer(fac, properties={"SimulatorHost": "127.0.0.1", "SimulatorPort": sim_port}):
            proxies = {"dcs": fac.proxy(common.HV_DEVICE), "bare": fac.proxy(common.BARE_DEVICE)}
            sim = SimulatorSocket(sim_port)
            try:
                values = [10.0, 10.5]
                last: dict[str, float] = {}

                def action(side: str, proxy: tango.DeviceProxy, attr: str, kind: str) -> Callable[[], Any]:
                    if kind == "read":
                        return lambda: proxy.read_attribute(attr)
                    step = [0]

                    def write() -> None:
                        step[0] += 1
                        last[side] = values[step[0] % 2]
                        proxy.write_attribute(attr, last[side])

                    return write

                actions = {
                    op: {side: action(side, proxies[dev], attr, kind) for side, (dev, attr) in sides.items()}
                    for op, (kind, sides) in OPERATIONS.items()
                }
                orders = {op: list(itertools.permutations(sides)) for op, (_, sides) in OPERATIONS.items()}
                samples = {op: {side: [] for side in sides} for op, (_, sides) in OPERATIONS.items()}
                sim_samples: list[float] = []
                by_previous: dict[str, dict[str, list[float]]] = {}

                # Warm up: connections (HardwareSetpoint's to the simulator too), attribute configuration caches.
                for op in actions:
                    for side in actions[op]:
                        timed(actions[op][side], args.warmup, [])
                timed(lambda: sim.query("VSET? 0"), args.warmup, [])

                deadline = time.monotonic() + args.max_seconds
                rounds_done = 0
                for round_no in range(args.rounds):
                    if time.monotonic() > deadline:
                        break
                    for op in actions:
                        order = orders[op][round_no % len(orders[op])]
                        follow = by_previous if op == "write Ch00VSet" else None
                        timed_interleaved(actions[op], order, args.per_round, samples[op], args.batch, follow)
                    timed(lambda: sim.query("VSET? 0"), args.per_round, sim_samples)
                    rounds_done += 1

                # The setpoints really are what was written last (not only "no error"). The DCS device reads
                # back through its poller after a write, so give it a moment.
                def dcs_caught_up() -> bool:
                    return abs(proxies["dcs"].read_attribute("Ch00VSet").value - last["dcs"]) < 1e-3

                try:
                    common.wait_for(dcs_caught_up, 3.0, "Ch00VSet to read back the last value written")
                except RuntimeError:
                    pass
                dcs_readback = proxies["dcs"].read_attribute("Ch00VSet").value
                hw_device = proxies["bare"].read_attribute("HardwareSetpoint").value
                hw_simulator = float(sim.query(f"VSET? {HW_CHANNEL}"))
            finally:
                sim.close()

    stats = {op: {side: common.summarize(samples[op][side]) for side in sides} for op, (_, sides) in OPERATIONS.items()}
    results: dict[str, Any] = {}
    for name, op, ref, label, judged in COMPARISONS:
        d, b = stats[op]["dcs"], stats[op][ref]
        results[name] = {
            "dcs": f"{common.HV_DEVICE}/{OPERATIONS[op][1]['dcs'][1]}",
            "reference": label,
            "judged": judged,
            "dcs_us": d,
            "bare_us": b,
            "ratio_median": d["median"] / b["median"],
            "ratio_p95": d["p95"] / b["p95"],
        }
    write = stats["write Ch00VSet"]
    return {
        "benchmark": "hv_latency",
        "goal": {
            "ratio_dcs_over_bare_max": GOAL_RATIO,
            "judged": "reads against the in-memory bare attributes, writes against HardwareSetpoint (same I/O)",
        },
        "parameters": {"rounds": rounds_done, "per_round": args.per_round, "batch": args.batch, "warmup": args.warmup},
        "environment": common.environment(),
        "results": results,
        "write_overhead_us": {
            # What DCS adds to the same hardware round trip, and what the round trip costs a bare device.
            "dcs_minus_same_io_median": write["dcs"]["median"] - write["same_io"]["median"],
            "same_io_minus_memory_median": write["same_io"]["median"] - write["memory"]["median"],
        },
        "write_median_by_previous_call_us": {
            side: {prev: common.summarize(v)["median"] for prev, v in sorted(prevs.items()) if prev != "start"}
            for side, prevs in by_previous.items()
        },
        "simulator_round_trip_us": common.summarize(sim_samples),
        "check": {
            "dcs_last_written": last["dcs"],
            "dcs_read_back": dcs_readback,
            "hardware_setpoint_last_written": last["same_io"],
            "hardware_setpoint_read": hw_device,
            "simulator_vset_ch15": hw_simulator,
            "ok": abs(dcs_readback - last["dcs"]) < 1e-3
            and abs(hw_device - last["same_io"]) < 1e-3
            and abs(hw_simulator - last["same_io"]) < 1e-3,
        },
    }


def show(data: dict[str, Any]) -> None:
    rows = []
    for name, r in data["results"].items():
        met = ("yes" if r["ratio_median"] <= GOAL_RATIO else "no") if r["judged"] else "not judged"
        rows.append([
            name, r["dcs_us"]["median"], r["dcs_us"]["p95"], r["reference"], r["bare_us"]["median"], r["bare_us"]["p95"],
            r["ratio_median"], r["ratio_p95"], met,
        ])  # fmt: skip
    over = data["write_overhead_us"]
    sim = data["simulator_round_trip_us"]
    rows += [
        ["write: DCS - HardwareSetpoint", over["dcs_minus_same_io_median"], None, "(median difference)", *[None] * 4, ""],
        ["write: HardwareSetpoint - Value", over["same_io_minus_memory_median"], None, "(median difference)", *[None] * 4, ""],
        ["simulator TCP round trip (VSET? 0)", sim["median"], sim["p95"], "from the benchmark process", *[None] * 4, ""],
    ]  # fmt: skip
    con = common.console()
    n = data["parameters"]["rounds"] * data["parameters"]["per_round"]
    con.print(common.table(
        f"HV latency through DeviceProxy, µs ({data['parameters']['rounds']} rounds x {data['parameters']['per_round']} = {n} samples per cell)",
        ["operation", "DCS median", "DCS p95", "reference", "ref median", "ref p95", "ratio median", "ratio p95", f"≤ {GOAL_RATIO}"],
        rows,
    ))  # fmt: skip
    con.print(
        "Goal judged for reads against the in-memory bare attributes, for writes against HardwareSetpoint "
        "(the same simulator round trip); the write against in-memory Value is shown, not judged."
    )
    follow = data["write_median_by_previous_call_us"]
    con.print(
        "write median (µs) by the call just before it: "
        + "; ".join(
            f"{side} after " + ", ".join(f"{prev} {us:.0f}" for prev, us in prevs.items())
            for side, prevs in follow.items()
        )
    )
    check = data["check"]
    con.print(
        f"read-back check: Ch00VSet last written {check['dcs_last_written']}, device reads {check['dcs_read_back']}; "
        f"HardwareSetpoint last written {check['hardware_setpoint_last_written']}, device reads "
        f"{check['hardware_setpoint_read']}, simulator VSET? {HW_CHANNEL} = {check['simulator_vset_ch15']}: "
        f"{'ok' if check['ok'] else 'MISMATCH'}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Read/write latency of dcs/hv/sipm (Ch00VSet, Ch00VMon) against bare pytango devices "
        "(in memory, and with the same simulator round trip for writes), interleaved in rounds.",
        epilog="Starts its own facility in a temporary directory on free ports; nothing but 127.0.0.1 is contacted.",
    )
    parser.add_argument(
        "--rounds", type=int, default=30, help="rounds; each times every operation on both devices (default 30)"
    )
    parser.add_argument("--per-round", type=int, default=50, help="calls per operation, device and round (default 50)")
    parser.add_argument(
        "--batch",
        type=int,
        default=1,
        help="calls on one device before switching to the next (default 1: call by call)",
    )
    parser.add_argument(
        "--warmup", type=int, default=50, help="untimed calls per operation and device first (default 50)"
    )
    parser.add_argument(
        "--max-seconds", type=float, default=120.0, help="stop starting new rounds after this long (default 120)"
    )
    common.add_common_arguments(parser)
    args = parser.parse_args(argv)
    data = run(args)
    show(data)
    if not args.no_json:
        common.print_json(data)
    common.write_json(data, args.json_file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
