"""The demo facility file itself: everything in it comes up, and a run lands its data where the README says."""

from __future__ import annotations

import tango

from db.app import RunStore
from device_servers.daq.ecc_group import OverallState
from tests.conftest import Facility, wait_for
from tests.demo_facility import demo_copy


def test_demo_comes_up_and_takes_a_run(facility_dir: Facility) -> None:
    path = demo_copy(facility_dir.root)
    facility_dir.file = path
    up = facility_dir.dcs("up", str(path))
    assert "facility demo is up" in up.stdout
    status = facility_dir.status()
    assert all(p["state"] == "running" for p in status["processes"]), status["processes"]
    names = {d["name"]: d["state"] for d in status["devices"]}
    assert {"dcs/hv/sipm", "daq/ecc/0", "daq/ecc/mutant", "daq/router/cobo3", "daq/sequencer/1"} <= set(names)

    # Everything reaches a working state (the HV crate ON, ECC servers Idle, routers ON over SSH).
    for device, states in {
        "dcs/hv/sipm": {tango.DevState.ON},
        "dcs/temperature/logger": {tango.DevState.ON},
        "daq/ecc/0": {tango.DevState.STANDBY},
        "daq/router/mutant": {tango.DevState.ON},
    }.items():
        proxy = facility_dir.proxy(device)
        wait_for(lambda proxy=proxy, states=states: proxy.state() in states, what=f"{device} working")

    store = RunStore.open(f"sqlite:///{facility_dir.state_dir / 'dcs.db'}")
    store.create_experiment("demo")
    store.activate_experiment("demo")
    for ecc in ("daq/ecc/0", "daq/ecc/mutant"):
        proxy = facility_dir.proxy(ecc)
        wait_for(lambda proxy=proxy: len(proxy.read_attribute("AvailableConfigs").value) > 0, what="configs")
        proxy.command_inout("SelectConfig", "cobo0/experiment/experiment")
    seq = facility_dir.proxy("daq/sequencer/1")

    def reach(state: OverallState) -> None:
        wait_for(
            lambda: int(seq.read_attribute("OverallState").value) == state and seq.state() != tango.DevState.MOVING,
            timeout=30, what=state.name,
        )  # fmt: skip

    for command, state in (
        ("DescribeAll", OverallState.Described), ("PrepareAll", OverallState.Prepared),
        ("ConfigureAll", OverallState.Ready), ("StartRun", OverallState.Running), ("StopRun", OverallState.Ready),
    ):  # fmt: skip
        seq.command_inout(command)
        reach(state)
    run_dir = facility_dir.state_dir / "worker" / "router0" / "demo" / "run_0000"
    assert list(run_dir.glob("*.graw")) and (run_dir / "configure-experiment.xcfg").exists()

    # The observatory: safe weather from the simulated PLC, the conductor ready and opening the dome.
    from device_servers.observatory.conductor import Mode

    conductor = facility_dir.proxy("obs/conductor/1")
    wait_for(lambda: facility_dir.proxy("obs/weather/1").read_attribute("IsSafe").value, timeout=30, what="safe weather")
    wait_for(lambda: int(conductor.read_attribute("Mode").value) == Mode.SCHEDULER_READY, timeout=30, what="READY")
    dome = facility_dir.proxy("obs/dome/1")
    wait_for(lambda: int(dome.read_attribute("ShutterStatus").value) in (0, 2), timeout=15, what="the dome opening")
