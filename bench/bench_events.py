"""Events per second from one device to one subscriber: a bare pytango device, and the DCS HV crate.

Two measurements, each bounded (20 s at most):

bare   ``bench/bare_device.py``'s ``PushEvents(n)`` pushes n change events of
       ``Counter`` (values 1, 2, 3, ...) as fast as a thread can; one
       subscriber (a DeviceProxy callback in this process) counts what
       arrives. Pushed vs received, gaps in the sequence and Tango's own
       "missed events" errors say whether anything was lost.

dcs    the HV crate device pushes change events from its poller, once per
       poll of each attribute whose value moved. The simulator ramps all 16
       channels (switched on, VSet 80 V, ramp rate such that the ramp lasts
       longer than the window), and one subscriber counts the change events
       of the ``VMon`` spectrum and the 16 ``ChNNVMon`` attributes. Run twice:
       with the stock protocol file (VMon polled every 0.5 s) and with a copy
       whose VMon attributes are polled every ``--fast-period`` s, to see what
       the DCS poll/push path can carry. The device does not count its pushes,
       so loss is judged from what is countable: all 17 attributes are pushed
       in the same poll cycle from one ``VMON? ALL`` reply, so they must arrive
       in equal numbers, and Tango reports a gap in its event counter as an
       ``API_MissedEvents`` error event.

Timing is reported, never asserted.

    python bench/bench_events.py [--seconds 8] [--bare-events 50000] [--fast-period 0.01]
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import common
import yaml

MAX_WINDOW_S = 20.0
VMON_ATTRIBUTES = ["VMon", *(f"Ch{ch:02d}VMon" for ch in range(16))]


class Recorder:
    """A change-event callback that only records; analysis happens afterwards."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[tuple[float, float, str, Any, float | None]] = []  # (perf, wall, attr, value, source time)
        self.errors: Counter[str] = Counter()
        self.recording = False

    def push_event(self, event: Any) -> None:
        perf, wall = time.perf_counter(), time.time()
        if event.err:
            with self.lock:
                self.errors[event.errors[0].reason if event.errors else "unknown"] += 1
            return
        if not self.recording:
            return
        value = event.attr_value
        with self.lock:
            self.events.append(
                (perf, wall, event.attr_name.rsplit("/", 1)[-1].lower(), value.value, value.time.totime())
            )

    def start(self) -> None:
        with self.lock:
            self.events.clear()
            self.errors.clear()
            self.recording = True

    def stop(self) -> None:
        self.recording = False


def latency_stats(events: list[tuple[float, float, str, Any, float | None]]) -> dict[str, float]:
    """Delivery latency: arrival (wall clock) minus the timestamp the device gave the value."""
    return common.summarize([wall - src for _, wall, _, _, src in events if src], scale=1e3)  # ms


# --------------------------------------------------------------------- bare device
def measure_bare(fac: common.BenchFacility, count: int) -> dict[str, Any]:
    import tango

    bare = fac.proxy(common.BARE_DEVICE, timeout_ms=5000)
    recorder = Recorder()
    sub = bare.subscribe_event("Counter", tango.EventType.CHANGE_EVENT, recorder)
    try:
        time.sleep(0.2)  # the initial event of the subscription is not counted
        first_value = bare.read_attribute("Counter").value + 1
        recorder.start()
        started = time.perf_counter()
        bare.command_inout("PushEvents", count)
        deadline = started + MAX_WINDOW_S
        last_seen, last_count = time.perf_counter(), 0
        while time.perf_counter() < deadline:
            time.sleep(0.05)
            n = len(recorder.events)
            if n != last_count:
                last_seen, last_count = time.perf_counter(), n
            if n >= count:
                break
            if not bare.read_attribute("Pushing").value and time.perf_counter() - last_seen > 2.0:
                break  # pushing is over and nothing has come for 2 s: the rest is lost
        recorder.stop()
        pushed = bare.read_attribute("Pushed").value
        push_seconds = bare.read_attribute("PushSeconds").value
    finally:
        bare.unsubscribe_event(sub)
    events = list(recorder.events)
    values = [int(v) for *_, v, _ in events]
    expected = set(range(first_value, first_value + pushed))
    received = set(values)
    span = events[-1][0] - events[0][0] if len(events) > 1 else float("nan")
    out_of_order = sum(1 for a, b in zip(values, values[1:], strict=False) if b <= a)
    return {
        "requested": count,
        "pushed": pushed,
        "push_seconds": push_seconds,
        "push_rate_per_s": pushed / push_seconds if push_seconds else None,
        "received": len(events),
        "receive_span_s": span,
        "receive_rate_per_s": (len(events) - 1) / span if len(events) > 1 else None,
        "end_to_end_rate_per_s": len(events) / (events[-1][0] - started) if events else None,
        "lost": len(expected - received),
        "unexpected": len(received - expected),
        "duplicates": len(values) - len(received),
        "out_of_order": out_of_order,
        "missed_event_errors": dict(recorder.errors),
        "latency_ms": latency_stats(events),
    }


# --------------------------------------------------------------------- DCS HV crate
def fast_protocol(directory: Path, period: float) -> Path:
    """A copy of hv_crate.yaml whose VMon attributes are polled every ``period`` seconds."""
    spec = yaml.safe_load((common.PROTOCOLS / "hv_crate.yaml").read_text())
    for attr in spec["attributes"]:
        if attr["name"] in ("VMon", "Ch{ch:02d}VMon"):
            attr["period"] = period
    path = directory / "hv_crate_fast.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def measure_dcs(fac: common.BenchFacility, window: float, period: float) -> dict[str, Any]:
    import tango

    dev = fac.proxy(common.HV_DEVICE, timeout_ms=5000)
    ramp = max(0.1, min(50.0, 80.0 / (window + 3.0)))  # V/s: the ramp outlasts the window
    for ch in range(16):
        dev.write_attribute(f"Ch{ch:02d}On", False)
        dev.write_attribute(f"Ch{ch:02d}RampRate", ramp)
        dev.write_attribute(f"Ch{ch:02d}VSet", 80.0)
    recorder = Recorder()
    subs = [dev.subscribe_event(a, tango.EventType.CHANGE_EVENT, recorder) for a in VMON_ATTRIBUTES]
    try:
        time.sleep(0.3)  # initial events of the subscriptions are not counted
        for ch in range(16):
            dev.write_attribute(f"Ch{ch:02d}On", True)
        time.sleep(max(0.5, 2 * period))  # every channel is ramping, and polled at least once since
        recorder.start()
        started = time.perf_counter()
        time.sleep(window)
        recorder.stop()
        elapsed = time.perf_counter() - started
        vmon_end = list(dev.read_attribute("VMon").value)
    finally:
        for sub in subs:
            dev.unsubscribe_event(sub)
        for ch in range(16):
            try:
                dev.write_attribute(f"Ch{ch:02d}On", False)
            except tango.DevFailed:
                pass
    events = list(recorder.events)
    per_attr: dict[str, int] = defaultdict(int)
    for _, _, name, _, _ in events:
        per_attr[name] += 1
    counts = [per_attr.get(a.lower(), 0) for a in VMON_ATTRIBUTES]
    spectrum_times = [perf for perf, _, name, _, _ in events if name == "vmon"]
    gaps = [b - a for a, b in zip(spectrum_times, spectrum_times[1:], strict=False)]
    return {
        "vmon_poll_period_s": period,
        "ramp_v_per_s": ramp,
        "window_s": elapsed,
        "attributes": len(VMON_ATTRIBUTES),
        "received": len(events),
        "receive_rate_per_s": len(events) / elapsed,
        "per_attribute_rate_per_s": {"min": min(counts) / elapsed, "max": max(counts) / elapsed},
        "per_attribute_counts": {"min": min(counts), "max": max(counts)},
        "expected_per_attribute_if_every_poll_pushed": elapsed / period,
        "poll_cycles_per_s": len(spectrum_times) / elapsed,
        "spectrum_interval_ms": common.summarize(gaps, scale=1e3),
        "unequal_counts": max(counts) - min(counts),
        "missed_event_errors": dict(recorder.errors),
        "latency_ms": latency_stats(events),
        "still_ramping_at_end": all(0.0 < v < 80.0 for v in vmon_end),
    }


def run_dcs_variant(args: argparse.Namespace, fast: bool) -> dict[str, Any]:
    sim_port = common.free_port()
    with common.BenchFacility(prefix="dcs-bench-events-", keep=args.keep) as fac:
        protocol = fast_protocol(fac.root, args.fast_period) if fast else None
        fac.write(common.hv_facility_spec("benchevents", sim_port, protocol))
        fac.up(timeout=60)
        fac.wait_device_on(common.HV_DEVICE)
        return measure_dcs(fac, args.seconds, args.fast_period if fast else 0.5)


def run(args: argparse.Namespace) -> dict[str, Any]:
    args.seconds = min(args.seconds, MAX_WINDOW_S - 5)
    results: dict[str, Any] = {}
    sim_port = common.free_port()
    with common.BenchFacility(prefix="dcs-bench-events-", keep=args.keep) as fac:
        fac.write(common.hv_facility_spec("benchevents", sim_port))
        fac.up(timeout=60)
        with common.BareServer(fac):
            results["bare"] = measure_bare(fac, args.bare_events)
        fac.wait_device_on(common.HV_DEVICE)
        results["dcs_stock"] = measure_dcs(fac, args.seconds, 0.5)
    if args.fast_period > 0:
        results["dcs_fast"] = run_dcs_variant(args, fast=True)
    return {
        "benchmark": "events",
        "parameters": {"seconds": args.seconds, "bare_events": args.bare_events, "fast_period": args.fast_period},
        "environment": common.environment(),
        "results": results,
    }


def show(data: dict[str, Any]) -> None:
    con = common.console()
    bare = data["results"]["bare"]
    con.print(common.table(
        "bare device: PushEvents -> one subscriber (change events of Counter)",
        ["pushed", "push rate /s", "received", "receive rate /s", "lost", "dup", "out of order", "missed-event errors", "latency median ms", "latency p95 ms"],
        [[bare["pushed"], bare["push_rate_per_s"], bare["received"], bare["receive_rate_per_s"], bare["lost"], bare["duplicates"],
          bare["out_of_order"], sum(bare["missed_event_errors"].values()), bare["latency_ms"].get("median"), bare["latency_ms"].get("p95")]],
    ))  # fmt: skip
    rows = []
    for key in ("dcs_stock", "dcs_fast"):
        r = data["results"].get(key)
        if r is None:
            continue
        rows.append([
            f"{key} (VMon every {r['vmon_poll_period_s']:g} s)", r["received"], r["receive_rate_per_s"],
            r["poll_cycles_per_s"], r["expected_per_attribute_if_every_poll_pushed"] / r["window_s"],
            f"{r['per_attribute_counts']['min']}..{r['per_attribute_counts']['max']}",
            sum(r["missed_event_errors"].values()), r["latency_ms"].get("median"), r["latency_ms"].get("p95"),
            "yes" if r["still_ramping_at_end"] else "no",
        ])  # fmt: skip
    con.print(common.table(
        f"DCS dcs/hv/sipm: 16 channels ramping -> one subscriber of VMon + 16 ChNNVMon, {data['parameters']['seconds']:g} s window",
        ["variant", "received", "events/s", "poll cycles/s", "polls/s wanted", "per-attr count", "missed-event errors", "latency median ms", "latency p95 ms", "ramping"],
        rows,
    ))  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Change events per second from one device to one subscriber: a bare pytango device and the DCS HV crate.",
        epilog="Starts its own facilities in temporary directories on free ports; nothing but 127.0.0.1 is contacted. "
        "Each measurement is bounded to 20 s.",
    )
    parser.add_argument(
        "--seconds", type=float, default=8.0, help="DCS measuring window in seconds (default 8, at most 15)"
    )
    parser.add_argument(
        "--bare-events", type=int, default=50000, help="change events the bare device pushes (default 50000)"
    )
    parser.add_argument(
        "--fast-period", type=float, default=0.01,
        help="VMon poll period (s) of the fast protocol copy (default 0.01; 0 skips that variant)",
    )  # fmt: skip
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
