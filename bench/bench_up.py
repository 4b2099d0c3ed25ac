"""How long `dcs up` takes for the demo facility: cold, warm, and again while up (no-op).

``facilities/demo.yaml`` hard-codes the simulator port 5025 and names its
protocol files relative to itself, so the benchmark writes a copy in a
temporary directory with a free port substituted and the ``ProtocolFile``
paths made absolute (the protocols themselves are the project's), then runs
the real CLI, ``python -m clients.cli --state-dir DIR up FILE``, with
``TANGO_HOST=127.0.0.1:<free port>``:

cold    fresh state directory: no sqlite Tango database yet; the embedded
        database starts and is created, the file is applied, simulators and
        servers start, and every device answers;
warm    after `dcs down`: the database file exists and already matches;
no-op   `dcs up` again while everything runs: nothing to change or start
        (the pids before and after are compared to check that nothing restarted).

Each is the wall time of the whole `dcs up` command (Python start-up
included) and the time `dcs up` reports itself. Goal: <= 20 s.
Timing is reported, never asserted.

    python bench/bench_up.py [--repeat 1]
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import common

sys.path.insert(0, str(common.ROOT))

from tests.demo_facility import demo_copy  # noqa: E402 - the same relocated demo the tests bring up

GOAL_S = 20.0
DEMO = common.ROOT / "facilities" / "demo.yaml"


def pids(fac: common.BenchFacility) -> dict[str, Any]:
    return {p["name"]: p["pid"] for p in fac.status().get("processes", [])}


def all_devices_on(fac: common.BenchFacility) -> bool:
    devices = fac.status().get("devices", [])
    return bool(devices) and all(d["state"] not in ("UNKNOWN", "FAULT", "INIT", "DOWN") for d in devices)


def one_cycle(args: argparse.Namespace) -> dict[str, Any]:
    with common.BenchFacility(prefix="dcs-bench-up-", keep=args.keep) as fac:
        file = demo_copy(fac.root)
        database = fac.state_dir / "tango_database.db"
        out: dict[str, Any] = {}

        assert not database.exists()
        cold = fac.up(file, timeout=args.timeout)
        out["cold"] = {k: cold[k] for k in ("wall_s", "reported_s")}
        out["cold"]["devices_answer"] = all_devices_on(fac)

        before = pids(fac)
        noop = fac.up(file, timeout=args.timeout)
        after = pids(fac)
        out["noop"] = {k: noop[k] for k in ("wall_s", "reported_s")}
        out["noop"]["restarted"] = sorted(n for n in before if before[n] != after.get(n))
        out["noop"]["database_changes"] = noop["stdout"].count("database: ")

        out["down_s"] = fac.down()
        assert database.exists(), "dcs down removed the sqlite database: the warm case would not be warm"
        time.sleep(0.5)
        warm = fac.up(file, timeout=args.timeout)
        out["warm"] = {k: warm[k] for k in ("wall_s", "reported_s")}
        out["warm"]["devices_answer"] = all_devices_on(fac)
        out["warm"]["database_changes"] = warm["stdout"].count("database: ")
        out["down_after_warm_s"] = fac.down()
        return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    cycles = [one_cycle(args) for _ in range(max(1, args.repeat))]
    summary: dict[str, Any] = {}
    for case in ("cold", "warm", "noop"):
        walls = sorted(c[case]["wall_s"] for c in cycles)
        reported = sorted(c[case]["reported_s"] for c in cycles if c[case]["reported_s"] is not None)
        summary[case] = {
            "wall_s_median": walls[len(walls) // 2],
            "wall_s_max": walls[-1],
            "reported_s_median": reported[len(reported) // 2] if reported else None,
            "within_goal": walls[-1] <= GOAL_S,
        }
    return {
        "benchmark": "up",
        "goal": {"up_s_max": GOAL_S},
        "parameters": {"repeat": len(cycles), "facility": str(DEMO.relative_to(common.ROOT))},
        "environment": common.environment(),
        "results": summary,
        "cycles": cycles,
    }


def show(data: dict[str, Any]) -> None:
    con = common.console()
    labels = {
        "cold": "cold (fresh state dir, no sqlite DB)",
        "warm": "warm (after dcs down, DB file exists)",
        "noop": "no-op (dcs up while up)",
    }
    rows = []
    for case, label in labels.items():
        r = data["results"][case]
        rows.append(
            [label, r["wall_s_median"], r["wall_s_max"], r["reported_s_median"], "yes" if r["within_goal"] else "no"]
        )
    con.print(common.table(
        f"dcs up of {data['parameters']['facility']} (free ports), seconds, {data['parameters']['repeat']} cycle(s)",
        ["case", "wall median", "wall max", "dcs-reported median", f"≤ {GOAL_S:g} s"],
        rows,
    ))  # fmt: skip
    for i, c in enumerate(data["cycles"], 1):
        con.print(
            f"cycle {i}: dcs down {c['down_s']:.1f} s; no-op restarted {c['noop']['restarted'] or 'nothing'}, "
            f"{c['noop']['database_changes']} database changes; warm applied {c['warm']['database_changes']} database changes; "
            f"devices answered: cold {c['cold']['devices_answer']}, warm {c['warm']['devices_answer']}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Time `dcs up` of the demo facility: cold (fresh state dir), warm (after dcs down), and no-op (while up).",
        epilog="Works on a copy of facilities/demo.yaml in a temporary directory with free ports; nothing but 127.0.0.1 is contacted.",
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="cold/no-op/warm cycles, each in a fresh directory (default 1)"
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="dcs up --timeout, per process (default 60)")
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
