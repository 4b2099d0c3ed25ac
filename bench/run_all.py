"""Run every benchmark, print a summary table and keep the figures in bench/results/<timestamp>.json.

Each benchmark runs as its own process (``python bench/bench_X.py``), so one
that fails does not take the others with it, and every one gets a fresh
Tango client. Their own tables are printed as they go; the summary follows.

    python bench/run_all.py [--only hv_latency events up daq safety] [--quick] [--with-daq] [--with-safety]

The DAQ benchmark (``daq``, about 4 minutes: 64 simulator processes and a
128-transition serial baseline) runs only when asked: ``--with-daq``, or by
name in ``--only``. So does the safety benchmark (``safety``, about 5
minutes: 2 x 20 rain events on the observatory site): ``--with-safety``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common

BENCHMARKS = {
    "hv_latency": ("bench_hv_latency.py", [], ["--rounds", "10", "--per-round", "20"]),
    "events": ("bench_events.py", [], ["--seconds", "4", "--bare-events", "20000"]),
    "up": ("bench_up.py", [], []),
    "daq": ("bench_daq.py", [], ["--cobos", "8", "--small", "0"]),  # slow: only with --with-daq or --only daq
    "safety": ("bench_safety.py", [], ["--runs", "5"]),  # slow: only with --with-safety or --only safety
}
OPTIONAL = {"daq", "safety"}
TIME_LIMIT_S = 600


def run_one(name: str, quick: bool, keep: bool) -> dict[str, Any]:
    script, normal, fast = BENCHMARKS[name]
    with tempfile.TemporaryDirectory(prefix=f"dcs-bench-{name}-") as tmp:
        out = Path(tmp) / "result.json"
        argv = [
            sys.executable,
            str(common.BENCH / script),
            "--no-json",
            "--json-file",
            str(out),
            *(fast if quick else normal),
        ]
        if keep:
            argv.append("--keep")
        started = time.perf_counter()
        try:
            done = subprocess.run(
                argv, cwd=common.ROOT, env=common.project_env(), timeout=TIME_LIMIT_S, stdin=subprocess.DEVNULL
            )
            code: int | str = done.returncode
        except subprocess.TimeoutExpired:
            code = f"timed out after {TIME_LIMIT_S} s"
        seconds = time.perf_counter() - started
        if code == 0 and out.exists():
            data = json.loads(out.read_text())
            data["run_seconds"] = seconds
            return data
        return {"benchmark": name, "error": f"exit {code}", "run_seconds": seconds}


def summary_rows(results: dict[str, Any]) -> list[list[Any]]:
    rows: list[list[Any]] = []
    lat = results.get("hv_latency", {})
    if "results" in lat:
        goal = lat["goal"]["ratio_dcs_over_bare_max"]
        for op, r in lat["results"].items():
            judged = r.get("judged", True)
            rows.append([
                "hv_latency", op, f"{r['dcs_us']['median']:.0f} µs (p95 {r['dcs_us']['p95']:.0f})",
                f"{r['bare_us']['median']:.0f} µs (p95 {r['bare_us']['p95']:.0f}) {r.get('reference', 'bare')}",
                f"{r['ratio_median']:.2f} (p95 {r['ratio_p95']:.2f})", f"ratio ≤ {goal}" if judged else "not judged",
                ("yes" if r["ratio_median"] <= goal else "no") if judged else "-",
            ])  # fmt: skip
    ev = results.get("events", {})
    if "results" in ev:
        bare = ev["results"]["bare"]
        rows.append([
            "events", "bare PushEvents -> 1 subscriber", f"{bare['receive_rate_per_s']:,.0f} /s received",
            f"{bare['push_rate_per_s']:,.0f} /s pushed", f"lost {bare['lost']} of {bare['pushed']}", "-", "-",
        ])  # fmt: skip
        for key in ("dcs_stock", "dcs_fast"):
            r = ev["results"].get(key)
            if r:
                rows.append([
                    "events", f"DCS 17 VMon attrs, poll {r['vmon_poll_period_s']:g} s", f"{r['receive_rate_per_s']:,.0f} /s received",
                    f"{r['poll_cycles_per_s']:.1f} of {1 / r['vmon_poll_period_s']:.0f} polls/s",
                    f"counts {r['per_attribute_counts']['min']}..{r['per_attribute_counts']['max']}, "
                    f"missed {sum(r['missed_event_errors'].values())}", "-", "-",
                ])  # fmt: skip
    up = results.get("up", {})
    if "results" in up:
        goal = up["goal"]["up_s_max"]
        for case, r in up["results"].items():
            rows.append([
                "up", f"dcs up demo: {case}", f"{r['wall_s_median']:.1f} s wall",
                f"{r['reported_s_median']} s reported" if r["reported_s_median"] is not None else "-",
                "-", f"≤ {goal:g} s", "yes" if r["within_goal"] else "no",
            ])  # fmt: skip
    daq = results.get("daq", {})
    if "results" in daq:
        goal = daq["goal"]["ratio_dcs_over_ideal_max"]
        for n, r in daq["results"].items():
            s = r["summary"]
            serial = f"serial {s['serial_s']:.1f} s, " if s["serial_s"] is not None else ""
            speedup = (
                f"; {s['speedup_vs_serial']:.1f}x faster than serial" if s["speedup_vs_serial"] is not None else ""
            )
            rows.append([
                "daq", f"{n} CoBos DescribeAll -> Running", f"{s['dcs_s']:.2f} s", f"{serial}ideal {s['ideal_s']:g} s",
                f"{s['ratio_dcs_over_ideal']:.2f} (DCS / ideal){speedup}", f"DCS / ideal ≤ {goal}",
                "yes" if s["within_goal"] else "no",
            ])  # fmt: skip
    safety = results.get("safety", {})
    for c in safety.get("configs", []):
        s = c["summary"]
        if not s["runs_ok"] or s["command_s"]["median"] is None:
            rows.append(["safety", c["label"], "no complete run", "-", "-", "-", "-"])
            continue
        over = s["closed_confirmed_minus_mechanism_s"]
        rows.append([
            "safety", f"rain -> CloseShutter, {c['label']}",
            f"{s['command_s']['median']:.3f} s (worst {s['command_s']['worst']:.3f})", "pyobs ~10-15 s",
            f"{s['runs_ok']}/{s['runs']} runs", "≤ 1 s", "yes" if s["goal_command_met"]["worst"] else "no",
        ])  # fmt: skip
        rows.append([
            "safety", f"rain -> shutter confirmed closed, {c['label']}",
            f"stroke + {over['median']:.3f} s (worst + {over['worst']:.3f})",
            f"stroke {safety['parameters']['shutter_time_s']:g} s", "-", "≤ stroke + 1 s",
            "yes" if s["goal_closed_met"]["worst"] else "no",
        ])  # fmt: skip
    for name, data in results.items():
        if "error" in data:
            rows.append([name, "FAILED", data["error"], "-", "-", "-", "-"])
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Run bench_hv_latency, bench_events and bench_up (and bench_daq with --with-daq, bench_safety with "
        "--with-safety); print a summary; write bench/results/<timestamp>.json.",
    )
    parser.add_argument(
        "--only", nargs="+", choices=list(BENCHMARKS), default=[n for n in BENCHMARKS if n not in OPTIONAL],
        help="run only these (default: all but daq and safety)",
    )  # fmt: skip
    parser.add_argument(
        "--with-daq",
        action="store_true",
        help="also run bench_daq (about 4 minutes; with --quick 8 CoBos, about 1 minute)",
    )
    parser.add_argument(
        "--with-safety",
        action="store_true",
        help="also run bench_safety (about 5 minutes; with --quick 5 rain events per configuration, about 2 minutes)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="fewer samples and shorter windows (a smoke run, noisier figures)"
    )
    parser.add_argument("--keep", action="store_true", help="keep each benchmark's temporary facility directory")
    parser.add_argument(
        "--output", type=Path, default=None, help="JSON file to write (default bench/results/<timestamp>.json)"
    )
    args = parser.parse_args(argv)
    if args.with_daq and "daq" not in args.only:
        args.only.append("daq")
    if args.with_safety and "safety" not in args.only:
        args.only.append("safety")

    stamp = common.now_stamp()
    results: dict[str, Any] = {}
    for name in args.only:
        common.console().rule(f"[bold]{name}")
        results[name] = run_one(name, args.quick, args.keep)

    con = common.console()
    con.rule("[bold]summary")
    con.print(common.table(
        "DCS benchmarks (DCS vs reference; no timing is asserted)",
        ["benchmark", "measure", "DCS", "reference", "ratio / note", "goal", "met"],
        summary_rows(results),
    ))  # fmt: skip
    output = args.output or common.RESULTS / f"{stamp}.json"
    common.write_json(
        {"timestamp": stamp, "quick": args.quick, "environment": common.environment(), "benchmarks": results}, output
    )
    con.print(f"results written to {output}")
    return 1 if any("error" in r for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
