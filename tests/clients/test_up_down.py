"""`dcs up`, `dcs status`, `dcs down`, supervision and restarts, against real processes."""

from __future__ import annotations

import os
import signal

import tango

from tests.conftest import Facility, HvSimulator, free_port, hv_server_spec, wait_for


def _processes(fac: Facility) -> dict[str, dict]:
    return {p["name"]: p for p in fac.status()["processes"]}


def test_up_status_down_with_embedded_database_and_simulator(facility_dir: Facility) -> None:
    port = free_port()
    facility_dir.write(
        {
            "facility": "updown",
            "simulators": {"hv": {"module": "simulators.hv.server", "args": ["--port", port], "port": port}},
            "servers": {"TextDevice/hv": hv_server_spec(port)},
        }
    )
    up = facility_dir.dcs("up", str(facility_dir.file))
    assert "facility updown is up" in up.stdout
    assert "dcs/hv/sipm" in up.stdout

    status = facility_dir.status()
    procs = {p["name"]: p for p in status["processes"]}
    assert set(procs) == {"tango-db", "sim/hv", "TextDevice/hv"}
    assert all(p["state"] == "running" and p["pid"] for p in procs.values())
    [device] = status["devices"]
    assert device["name"] == "dcs/hv/sipm"
    wait_for(lambda: facility_dir.proxy("dcs/hv/sipm").state() == tango.DevState.ON, what="device ON")

    # The embedded database is a file under the state directory.
    assert (facility_dir.state_dir / "tango_database.db").exists()

    # Up again: nothing new is started.
    facility_dir.dcs("up", str(facility_dir.file))
    again = _processes(facility_dir)
    assert {n: p["pid"] for n, p in again.items()} == {n: p["pid"] for n, p in procs.items()}

    text = facility_dir.dcs("status").stdout
    assert "TextDevice/hv" in text and "running" in text and "ON" in text

    logs = facility_dir.dcs("logs", "TextDevice/hv").stdout
    assert "dcs supervisor: start" in logs

    facility_dir.dcs("down")
    for proc in procs.values():
        wait_for(lambda pid=proc["pid"]: not _alive(pid), what=f"{proc['name']} to stop")
    assert "no facility is running" in facility_dir.dcs("status").stdout


def test_database_persists_across_restarts(facility_dir: Facility, hv_simulator: HvSimulator) -> None:
    facility_dir.write({"facility": "persist", "servers": {"TextDevice/hv": hv_server_spec(hv_simulator.port)}})
    facility_dir.dcs("up", str(facility_dir.file))
    db = tango.Database(*facility_dir.tango_host.split(":"))
    db.put_device_property("dcs/hv/sipm", {"Note": ["kept"]})
    facility_dir.dcs("down")
    up = facility_dir.dcs("up", str(facility_dir.file))
    # The file does not list "Note", so apply removes it: proof that the old database was read back.
    assert "- property dcs/hv/sipm/Note" in up.stdout
    assert "+ server" not in up.stdout


def test_crashed_server_is_restarted_with_backoff(hv_facility: Facility) -> None:
    before = _processes(hv_facility)["TextDevice/hv"]
    os.kill(before["pid"], signal.SIGKILL)
    after = wait_for(
        lambda: (p := _processes(hv_facility)["TextDevice/hv"])["state"] == "running" and p["pid"] != before["pid"] and p,
        timeout=30,
        what="the server to be restarted",
    )
    assert after["restarts"] == 1
    assert after["last_exit"] == -signal.SIGKILL
    dev = hv_facility.proxy("dcs/hv/sipm")
    wait_for(lambda: dev.state() == tango.DevState.ON, what="device back ON")
    log = hv_facility.dcs("logs", "dcs/hv/sipm", "-n", "200").stdout
    assert "exited with status -9" in log and "restart #1" in log


def test_up_names_what_did_not_answer_and_shows_its_log(facility_dir: Facility) -> None:
    port = free_port()
    never_listens = ["python3", "-c", "print('simulator: no licence for this crate', flush=True); import time; time.sleep(60)"]
    facility_dir.write(
        {
            "facility": "stuck",
            "simulators": {"dead": {"command": never_listens, "port": port}},
            "servers": {"TextDevice/hv": hv_server_spec(port)},
        }
    )
    up = facility_dir.dcs("up", str(facility_dir.file), "--timeout", "4", check=False)
    assert up.returncode == 1
    assert "sim/dead did not answer within 4 s" in up.stderr
    assert "simulator: no licence for this crate" in up.stderr


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is gone for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split()[2] != "Z"
    except OSError:
        return False


def test_down_when_nothing_runs(facility_dir: Facility) -> None:
    assert "nothing was running" in facility_dir.dcs("down").stdout


def test_up_refuses_a_simulator_port_held_by_another_program(facility_dir: Facility, hv_simulator: HvSimulator) -> None:
    facility_dir.write(
        {
            "facility": "clash",
            "simulators": {"hv": {"module": "simulators.hv.server", "args": ["--port", hv_simulator.port], "port": hv_simulator.port}},
            "servers": {"TextDevice/hv": hv_server_spec(hv_simulator.port)},
        }
    )
    up = facility_dir.dcs("up", str(facility_dir.file), check=False)
    assert up.returncode == 1
    assert f"port 127.0.0.1:{hv_simulator.port} is already in use by another program" in up.stderr
