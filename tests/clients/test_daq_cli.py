"""`dcs daq ...` as an operator runs it: the CLI as a subprocess against a real DAQ.

One DAQ per test module (two ECC simulators, three data router processes
behind a real sshd, the device servers under `dcs up`), as in
tests/device_servers/test_daq_run_control.py; every test leaves it Idle.
Easy setup is tested against a Tango database of its own.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import tango

from clients import daq_setup
from db.app import DaqSetup, RunStore, StoreError, plan_easy_setup
from tests.conftest import Facility, free_port, wait_for
from tests.simulators.test_datarouter_simulator import DataRouterProcess
from tests.sshd import SshServer

TRANSITION = 0.3
SOURCES = {"daq/ecc/0": ["CoBo[0]", "CoBo[1]"], "daq/ecc/mutant": ["Mutant[master]"]}
SEQUENCER = "daq/sequencer/1"


@dataclass
class Daq:
    facility: Facility
    routers: dict[str, DataRouterProcess]
    ecc_ports: dict[str, int]
    config_dir: Path

    def proxy(self, name: str) -> tango.DeviceProxy:
        return self.facility.proxy(name)

    def store(self) -> RunStore:
        return RunStore.open(f"sqlite:///{self.facility.state_dir / 'dcs.db'}")

    def dcs(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return self.facility.dcs(*args, check=False, timeout=timeout)


@contextlib.contextmanager
def running_daq(root: Path) -> Iterator[Daq]:
    """The DAQ of test_daq_run_control.py, in ``root``; `dcs down` and the routers stopped at the end."""
    facility = Facility(root, f"127.0.0.1:{free_port()}", root / "facility.yaml")
    with SshServer() as sshd:
        config_dir = root / "configs"
        routers = {
            source: DataRouterProcess(root / f"staging{i}", root / f"router{i}.err", name=f"DataRouter{i}")
            for i, source in enumerate(s for sources in SOURCES.values() for s in sources)
        }
        try:
            ecc_ports = {ecc: free_port() for ecc in SOURCES}
            simulators = {}
            ecc_devices = {}
            for i, (ecc, sources) in enumerate(SOURCES.items()):
                port = ecc_ports[ecc]
                simulators[f"ecc{i}"] = {
                    "module": "simulators.ecc.server",
                    "args": ["--port", port, "--config-dir", str(config_dir), "--example-configs",
                             "--sources", ",".join(sources), "--transition-time", TRANSITION],
                    "port": port,
                }  # fmt: skip
                links = [f"{s} DataRouter{list(routers).index(s)} 127.0.0.1 {routers[s].port} TCP" for s in sources]
                ecc_devices[ecc] = {
                    "class": "EccServer",
                    "properties": {"Port": port, "DataLinks": links, "Timeout": 2.0},
                }
            router_devices = {
                f"daq/router/{i}": {
                    "class": "DataRouter",
                    "properties": {
                        "Host": sshd.host,
                        "SshPort": sshd.port,
                        "SshUser": sshd.user,
                        "KeyFile": str(sshd.client_key_path),
                        "KnownHosts": str(sshd.known_hosts_path),
                        "Workdir": str(router.workdir),
                        "ConfigDir": str(config_dir),
                        "PollPeriod": 1.0,
                    },
                }  # fmt: skip
                for i, router in enumerate(routers.values())
            }
            router_lines = [f"daq/router/{i} {ecc}" for i, ecc in enumerate(e for e, ss in SOURCES.items() for _ in ss)]
            facility.write(
                {
                    "facility": "daqclitest",
                    "simulators": simulators,
                    "servers": {
                        "EccServer/test": {"level": 1, "devices": ecc_devices},
                        "DataRouter/test": {"level": 1, "devices": router_devices},
                        "DaqSequencer/test": {
                            "level": 2,
                            "devices": {
                                SEQUENCER: {
                                    "class": "DaqSequencer",
                                    "properties": {
                                        "EccServers": list(SOURCES),
                                        "MutantServers": ["daq/ecc/mutant"],
                                        "DataRouters": router_lines,
                                        "TransitionTimeout": 10,
                                    },
                                }
                            },
                        },
                    },
                }
            )
            facility.dcs("up", str(facility.file))
            daq = Daq(facility, routers, ecc_ports, config_dir)
            with daq.store() as store:
                store.create_experiment("e20009")
                store.activate_experiment("e20009")
            for ecc in SOURCES:
                proxy = daq.proxy(ecc)
                wait_for(
                    lambda proxy=proxy: len(proxy.read_attribute("AvailableConfigs").value) >= 2, what=f"{ecc} configs"
                )
                proxy.command_inout("SelectConfig", "cobo0/experiment/experiment")
            wait_idle(daq)
            seq = daq.proxy(SEQUENCER)
            wait_for(lambda: seq.read_attribute("Experiment").value == "e20009", 10, "the sequencer to see e20009")
            yield daq
        finally:
            for router in routers.values():
                router.kill()
            if facility.state_dir.exists():
                facility.dcs("down", check=False, timeout=90)


def overall(daq: Daq) -> str:
    seq = daq.proxy(SEQUENCER)
    labels = seq.get_attribute_config("OverallState").enum_labels
    return labels[int(seq.read_attribute("OverallState").value)]


def wait_idle(daq: Daq, timeout: float = 20) -> None:
    seq = daq.proxy(SEQUENCER)
    wait_for(lambda: overall(daq) == "Idle" and seq.state() != tango.DevState.MOVING, timeout, "the DAQ Idle")


def back_to_idle(daq: Daq) -> None:
    """Whatever a test left: stop the run, clear injected faults, step every ECC server back to Idle."""
    seq = daq.proxy(SEQUENCER)
    wait_for(lambda: seq.state() != tango.DevState.MOVING, 20, "the sequencer to finish")
    if overall(daq) == "Running":
        seq.command_inout("StopRun")
        wait_for(lambda: seq.state() != tango.DevState.MOVING, 20, "StopRun")
    for _ in range(5):
        if overall(daq) == "Idle":
            break
        for name in SOURCES:
            ecc = daq.proxy(name)
            if ecc.read_attribute("LastError").value and int(ecc.read_attribute("CoboState").value) == 1:
                ecc_special(daq.ecc_ports[name], "sim:clear")
                ecc.command_inout("Describe")  # an accepted transition clears the error; Reset follows
                wait_for(lambda ecc=ecc: int(ecc.read_attribute("CoboState").value) == 2, 10, f"{name} Described")
            if int(ecc.read_attribute("CoboState").value) > 1 and not ecc.read_attribute("Transitioning").value:
                ecc.command_inout("Reset")
        wait_for(lambda: not any(daq.proxy(n).read_attribute("Transitioning").value for n in SOURCES), 10, "resets")
    wait_idle(daq)
    with daq.store() as store:
        store.activate_experiment("e20009")


def staging_clean(daq: Daq) -> None:
    """As an operator watches the routers' Clean column after a run before starting the next."""
    routers = [daq.proxy(f"daq/router/{i}") for i in range(3)]
    wait_for(lambda: all(r.read_attribute("StagingClean").value for r in routers), 10, "clean staging on every router")


def ecc_special(port: int, command: str) -> None:
    """A fault-injection request to an ECC simulator (its SOAP Special operation)."""
    import zeep

    from device_servers.daq.ecc_link import SERVICE

    wsdl = Path(__file__).resolve().parents[2] / "device_servers" / "daq" / "ecc.wsdl"
    zeep.Client(str(wsdl)).create_service(SERVICE, f"http://127.0.0.1:{port}/").Special(command=command, table="")


@pytest.fixture(scope="module")
def daq_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daq]:
    with running_daq(tmp_path_factory.mktemp("daq")) as daq:
        yield daq


@pytest.fixture
def daq(daq_module: Daq) -> Iterator[Daq]:
    """The module's DAQ, Idle with experiment e20009 active; left that way after the test."""
    yield daq_module
    back_to_idle(daq_module)


def as_json(done: subprocess.CompletedProcess[str]) -> Any:
    assert done.returncode == 0, f"exit {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return json.loads(done.stdout)


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"exit {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def failed(done: subprocess.CompletedProcess[str]) -> str:
    """The error sentence of a command that must have failed with exit status 1."""
    assert done.returncode == 1, f"expected exit 1, got {done.returncode}:\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr, done.stderr
    return " ".join(done.stderr.split())


# ------------------------------------------------------------------------------------ status
def test_status_shows_servers_routers_and_the_run(daq: Daq) -> None:
    for i in range(3):
        router = daq.proxy(f"daq/router/{i}")
        wait_for(lambda router=router: router.read_attribute("Online").value and router.read_attribute("StagingClean").value,
                 15, "every router online and clean")  # fmt: skip
    data = as_json(daq.dcs("daq", "status", "--json"))
    assert [e["device"] for e in data["ecc_servers"]] == list(SOURCES)
    assert all(e["cobo_state"] == "Idle" and e["online"] and not e["transitioning"] for e in data["ecc_servers"])
    assert {e["device"]: e["mutant"] for e in data["ecc_servers"]} == {"daq/ecc/0": False, "daq/ecc/mutant": True}
    assert data["ecc_servers"][0]["selected_config"] == "cobo0/experiment/experiment"
    assert [r["device"] for r in data["routers"]] == ["daq/router/0", "daq/router/1", "daq/router/2"]
    assert all(r["online"] and r["staging_clean"] and r["graw_files"] == 0 for r in data["routers"])
    assert data["routers"][0]["working_dir"] == str(daq.routers["CoBo[0]"].workdir)
    seq = data["sequencer"]
    assert (seq["overall_state"], seq["state"], seq["experiment"], seq["last_error"]) == ("Idle", "ON", "e20009", "")

    text = ok(daq.dcs("daq", "status"))
    for expected in (
        "ECC servers",
        "daq/ecc/mutant (MuTAnT)",
        "data routers",
        "daq/router/2",
        "overall state",
        "e20009",
    ):
        assert expected in text


# ------------------------------------------------------------------------------------ run control
def test_a_run_through_the_cli_with_its_run_sheet(daq: Daq) -> None:
    seq = daq.proxy(SEQUENCER)
    assert "the DAQ is Idle; PrepareAll needs Described" in failed(daq.dcs("daq", "prepare"))
    for step, state in (("describe", "Described"), ("prepare", "Prepared"), ("configure", "Ready")):
        out = ok(daq.dcs("daq", step))
        assert "daq/ecc/mutant" in out, out  # followed every ECC server's events
        assert "done in" in out and f"state {state}" in out, out
    out = ok(daq.dcs("daq", "start", "--title", "first beam", "--class", "Beam"))
    assert "run 0 of e20009 started" in out and "state Running" in out
    assert overall(daq) == "Running"
    assert [seq.read_attribute(a).value for a in ("RunNumber", "RunTitle", "RunClass")] == [0, "first beam", "Beam"]

    # The run sheet of the running run: typed values; a wrong type is refused and nothing is stored.
    with daq.store() as store:
        store.add_observable("gas", "string")
        store.add_observable("trigger_rate", "integer", units="Hz")
    out = ok(
        daq.dcs(
            "daq",
            "run-sheet",
            "--add-observable",
            "anode_voltage",
            "float",
            "--units",
            "V",
            "--comment",
            "on the crate",
        )
    )
    assert "added observable anode_voltage (float, V)" in out and "first beam" in out
    error = failed(daq.dcs("daq", "run-sheet", "--set", "anode_voltage=1200", "--set", "trigger_rate=fast"))
    assert "'trigger_rate' expects an integer value, got 'fast'" in error and "nothing was stored" in error
    sheet = as_json(daq.dcs("daq", "run-sheet", "--set", "anode_voltage=1200", "--set", "gas=P10", "--json"))
    assert sheet["run"]["number"] == 0 and sheet["run"]["state"] == "running"
    assert [(o["name"], o["value"]) for o in sheet["observables"]] == [
        ("gas", "P10"),
        ("trigger_rate", None),
        ("anode_voltage", 1200.0),
    ]
    assert sheet["observables"][2]["units"] == "V" and sheet["observables"][2]["comment"] == "on the crate"

    out = ok(daq.dcs("daq", "stop"))
    assert "run 0 stopped" in out and "state Ready" in out

    # The next run: "same as previous" fills what it lacks, keeping what was typed.
    staging_clean(daq)
    seq.command_inout("StartRun")
    wait_for(lambda: overall(daq) == "Running" and seq.state() != tango.DevState.MOVING, 10, "run 1")
    sheet = as_json(daq.dcs("daq", "run-sheet", "--set", "gas=CO2", "--same-as-previous", "--json"))
    assert sheet["run"]["number"] == 1
    assert [(o["name"], o["value"]) for o in sheet["observables"]] == [
        ("gas", "CO2"),
        ("trigger_rate", None),
        ("anode_voltage", 1200.0),
    ]
    seq.command_inout("StopRun")
    wait_for(lambda: overall(daq) == "Ready" and seq.state() != tango.DevState.MOVING, 10, "run 1 stopped")

    runs = as_json(daq.dcs("daq", "runs", "--json"))
    assert [(r["number"], r["title"], r["run_class"], r["state"]) for r in runs] == [
        (1, "first beam", "Beam", "stopped"),
        (0, "first beam", "Beam", "stopped"),
    ]
    assert all(len(r["duration"]) == 8 and r["config_sets"]["daq/ecc/0"] == "cobo0/experiment/experiment" for r in runs)

    result = as_json(daq.dcs("daq", "reset", "--json"))
    assert result["ok"] and result["overall_state"] == "Prepared" and result["last_error"] == ""
    assert result["servers"] == {"daq/ecc/0": "Prepared", "daq/ecc/mutant": "Prepared"}


def test_a_failing_transition_is_reported_and_blocks_experiment_and_setup_changes(daq: Daq) -> None:
    ecc_special(daq.ecc_ports["daq/ecc/mutant"], "sim:fail Describe 7 AsAd power supply tripped")
    error = failed(daq.dcs("daq", "describe"))
    assert "daq/sequencer/1: DescribeAll failed" in error and "daq/ecc/mutant" in error
    assert "AsAd power supply tripped" in error
    assert overall(daq) == "Error"

    # daq/ecc/0 is Described: no experiment change, no new setup.
    error = failed(daq.dcs("daq", "experiment", "e_other", "--create"))
    assert "cannot change the active experiment from 'e20009' to 'e_other': daq/ecc/0 is Described" in error
    error = failed(daq.dcs("daq", "easy-setup", "1", "127.0.0.1", "--yes"))
    assert "easy setup refused: daq/ecc/0 is Described" in error
    with daq.store() as store:
        assert store.active_experiment().name == "e20009"
        assert store.daq_setup() == DaqSetup((), ())

    # One server alone, then one step back for all: Idle, and the experiment may change.
    out = ok(daq.dcs("daq", "describe", "--server", "daq/ecc/mutant"))
    assert "daq/ecc/mutant: Describe done" in out and "Described" in out
    assert overall(daq) == "Described"
    ok(daq.dcs("daq", "reset"))
    experiments = as_json(daq.dcs("daq", "experiment", "e_other", "--json"))
    assert experiments["active"] == "e_other"
    assert {e["name"] for e in experiments["experiments"]} >= {"e20009", "e_other"}


def test_no_wait_and_timeout(daq: Daq) -> None:
    done = as_json(daq.dcs("daq", "describe", "--no-wait", "--json"))
    assert done == {"device": SEQUENCER, "command": "DescribeAll", "started": True}
    wait_for(lambda: overall(daq) == "Described", 10, "Described")
    error = failed(daq.dcs("daq", "reset", "--timeout", "0.05"))
    assert "ResetAll still running after 0.05 s" in error and "dcs daq status --watch" in error


def test_select_config(daq: Daq) -> None:
    def selected() -> dict[str, str]:
        return {name: daq.proxy(name).read_attribute("SelectedConfig").value for name in SOURCES}

    listing = as_json(daq.dcs("daq", "select-config", "--json"))
    assert set(listing) == set(SOURCES)
    assert listing["daq/ecc/0"]["selected"] == "cobo0/experiment/experiment"
    assert "cobos-all/experiment/experiment" in listing["daq/ecc/0"]["available"]

    out = ok(daq.dcs("daq", "select-config", "cobos-all/experiment/experiment", "--server", "0"))
    assert "selected on daq/ecc/0" in out
    assert selected() == {
        "daq/ecc/0": "cobos-all/experiment/experiment",
        "daq/ecc/mutant": "cobo0/experiment/experiment",
    }
    error = failed(daq.dcs("daq", "select-config", "nope/nope/nope"))
    assert "daq/ecc/0: SelectConfig refused: nope/nope/nope is not among the 2 config sets" in error
    ok(daq.dcs("daq", "select-config", "cobo0/experiment/experiment"))
    assert set(selected().values()) == {"cobo0/experiment/experiment"}


def test_logs(daq: Daq) -> None:
    router = as_json(daq.dcs("daq", "logs", "router", "0", "-n", "5", "--json"))
    assert router["device"] == "daq/router/0" and 0 < len(router["lines"]) <= 5
    done = daq.dcs("daq", "logs", "ecc", "daq/ecc/0", "-n", "5")
    assert done.returncode == 0, done.stderr
    assert "the EccServer device has no command to fetch it" in " ".join(done.stderr.split())
    assert "EccServer/test" in done.stderr and 0 < len(done.stdout.splitlines()) <= 5


# ------------------------------------------------------------------------------------ easy setup
@dataclass
class SetupBench:
    """A Tango database holding a DAQ's devices (only the sequencer runs) and its application database."""

    facility: Facility

    def dcs(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.facility.dcs(*args, check=False, timeout=60)

    def db(self) -> tango.Database:
        host, port = self.facility.tango_host.split(":")
        return tango.Database(host, int(port))

    def store(self) -> RunStore:
        return RunStore.open(f"sqlite:///{self.facility.state_dir / 'dcs.db'}")

    def content(self, devices: list[str]) -> dict[str, Any]:
        """Class, server, properties and attribute properties of each device (None: not defined)."""
        db = self.db()
        out: dict[str, Any] = {}
        for name in devices:
            info = daq_setup.device_info(db, name)
            out[name] = info and (info, daq_setup.device_properties(db, name), daq_setup.attribute_properties(db, name))
        return out


BENCH_DEVICES = ["daq/ecc/0", "daq/ecc/1", "daq/ecc/mutant", "daq/router/0", "daq/router/1", "daq/router/2",
                 "daq/router/mutant", SEQUENCER]  # fmt: skip


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SetupBench]:
    root = tmp_path_factory.mktemp("setup")
    facility = Facility(root, f"127.0.0.1:{free_port()}", root / "facility.yaml")
    previous = {"EccServers": ["daq/ecc/0", "daq/ecc/mutant"], "MutantServers": ["daq/ecc/mutant"],
                "DataRouters": ["daq/router/0 daq/ecc/0", "daq/router/1 daq/ecc/0", "daq/router/2 daq/ecc/mutant"]}  # fmt: skip
    facility.write({"facility": "setuptest", "servers": {"DaqSequencer/bench": {"devices": {
        SEQUENCER: {"class": "DaqSequencer", "properties": previous}}}}})  # fmt: skip
    try:
        facility.dcs("up", str(facility.file))
        bench = SetupBench(facility)
        db = bench.db()
        for name, cls, props in (
            ("daq/ecc/0", "EccServer", {"Port": ["8083"], "Timeout": ["2.0"], "DataLinks": ["CoBo[0] DataRouter0 10.1.0.1 46005 TCP"]}),
            ("daq/ecc/mutant", "EccServer", {"Port": ["8083"], "DataLinks": ["Mutant[master] DataRouter2 10.1.0.3 46005 FDT"]}),
            *(
                (f"daq/router/{i}", "DataRouter", {"Host": [f"10.1.0.{i + 1}"], "SshUser": ["daq"], "SshPort": ["2222"],
                                                   "KeyFile": ["/keys/daq"], "Workdir": [f"/data/{i}"], "PollPeriod": ["0.5"]})
                for i in range(3)
            ),
        ):  # fmt: skip
            info = tango.DbDevInfo()
            info.name, info._class, info.server = name, cls, f"{cls}/bench"
            db.add_device(info)
            db.put_device_property(name, props)
        db.put_device_attribute_property("daq/ecc/mutant", {"SelectedConfig": {"__value": ["mutant/exp/exp"]}})
        yield bench
    finally:
        if facility.state_dir.exists():
            facility.dcs("down", check=False, timeout=90)


def test_easy_setup_dry_run_then_apply_to_both_databases(bench: SetupBench) -> None:
    before = bench.content(BENCH_DEVICES)
    with bench.store() as store:
        setup_before = store.daq_setup()
    out = ok(bench.dcs("daq", "easy-setup", "2", "10.2.0.1", "--multiple-ecc", "--mutant", "--router-ip", "10.3.0.1",
                       "--ecc-port", "8090", "--dry-run"))  # fmt: skip
    for expected in ("ECC servers", "ECC_mutant", "daq/ecc/mutant", "DataRouter_mutant", "daq/router/mutant",
                     "10.3.0.3:46005", "FDT", "+ device daq/ecc/1 (EccServer in EccServer/bench)",
                     "- device daq/router/2 (DataRouter in DataRouter/bench)", "dry run: nothing written"):  # fmt: skip
        assert expected in out, out
    assert bench.content(BENCH_DEVICES) == before
    with bench.store() as store:
        assert store.daq_setup() == setup_before

    done = as_json(bench.dcs("daq", "easy-setup", "2", "10.2.0.1", "--multiple-ecc", "--mutant", "--router-ip", "10.3.0.1",
                             "--ecc-port", "8090", "--ssh-user", "operator", "--yes", "--restart", "--json"))  # fmt: skip
    assert done["applied"] is True
    assert done["restarted"]["DaqSequencer/bench"] == "restarted"
    assert "not running" in done["restarted"]["EccServer/bench"]

    with bench.store() as store:
        assert store.daq_setup() == plan_easy_setup(2, "10.2.0.1", 8090, True, True, first_router_ip="10.3.0.1")
        assert ("EasySetup", "ok") in [(e.action, e.outcome) for e in store.operator_log(5)]
    db = bench.db()
    props = {name: daq_setup.device_properties(db, name) for name in BENCH_DEVICES if daq_setup.device_info(db, name)}
    assert set(props) == {
        "daq/ecc/0",
        "daq/ecc/1",
        "daq/ecc/mutant",
        "daq/router/0",
        "daq/router/1",
        "daq/router/mutant",
        SEQUENCER,
    }
    assert props["daq/ecc/1"]["Host"] == ["10.2.0.2"] and props["daq/ecc/1"]["Port"] == ["8090"]
    assert props["daq/ecc/1"]["Timeout"] == ["2.0"]  # a new ECC server takes its peers' timeout
    assert props["daq/ecc/1"]["DataLinks"] == ["CoBo[1] DataRouter1 10.3.0.2 46005 TCP"]
    assert props["daq/ecc/mutant"]["DataLinks"] == ["Mutant[master] DataRouter_mutant 10.3.0.3 46005 FDT"]
    assert daq_setup.attribute_properties(db, "daq/ecc/mutant") == {"SelectedConfig": {"__value": ["mutant/exp/exp"]}}
    router = props["daq/router/mutant"]
    assert router["Host"] == ["10.3.0.3"] and router["SshUser"] == ["operator"]
    assert (router["SshPort"], router["KeyFile"], router["PollPeriod"]) == (["2222"], ["/keys/daq"], ["0.5"])
    assert "Workdir" not in router  # per router: not inherited
    assert props["daq/router/1"]["Workdir"] == ["/data/1"]  # a device that stays keeps its own
    assert props[SEQUENCER]["EccServers"] == ["daq/ecc/0", "daq/ecc/1", "daq/ecc/mutant"]
    assert props[SEQUENCER]["MutantServers"] == ["daq/ecc/mutant"]
    assert props[SEQUENCER]["DataRouters"] == [
        "daq/router/0 daq/ecc/0",
        "daq/router/1 daq/ecc/1",
        "daq/router/mutant daq/ecc/mutant",
    ]
    assert daq_setup.device_info(db, "daq/ecc/1") == ("EccServer", "EccServer/bench")

    # Told how to keep it: the facility file would put the previous DAQ back on `dcs up`.
    out = ok(bench.dcs("daq", "easy-setup", "1", "10.2.0.1", "--yes"))
    assert "applied" in out and "still declares the previous DAQ devices" in out
    assert "dcs dump --facility setuptest" in out
    assert "MutantServers" not in daq_setup.device_properties(bench.db(), SEQUENCER)


class FailingDatabase:
    """A tango.Database whose Nth property write fails, as a Tango database going away would."""

    def __init__(self, db: tango.Database, fail_at: int) -> None:
        self._db = db
        self._puts = 0
        self._fail_at = fail_at

    def put_device_property(self, *args: Any) -> None:
        self._puts += 1
        if self._puts == self._fail_at:
            tango.Except.throw_exception("DB_SQLError", "the Tango database went away", "test")
        self._db.put_device_property(*args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)


def test_easy_setup_is_atomic(bench: SetupBench, monkeypatch: pytest.MonkeyPatch) -> None:
    db = bench.db()
    setup = plan_easy_setup(3, "10.9.0.1", multiple_ecc=True, mutant=True)
    plan = daq_setup.plan_tango(db, setup)
    touched = sorted(set(BENCH_DEVICES) | set(plan.touched))
    before = bench.content(touched)
    with bench.store() as store:
        setup_before = store.daq_setup()

        # A Tango write fails half-way: the Tango devices are put back, the application database keeps its setup.
        with pytest.raises(daq_setup.SetupError, match="the Tango database went away.*put back as it was"):
            daq_setup.apply(FailingDatabase(db, fail_at=4), store, setup, plan)
        assert bench.content(touched) == before
        assert store.daq_setup() == setup_before

        # The application database fails after the Tango write (its commit): the Tango side is put back too.
        real = store.replacing_setup

        @contextlib.contextmanager
        def commit_fails(new: DaqSetup) -> Iterator[Any]:
            with real(new) as change:
                yield change
                raise StoreError("application database: commit failed (disk full)")

        monkeypatch.setattr(store, "replacing_setup", commit_fails)
        with pytest.raises(daq_setup.SetupError, match="disk full.*put back as it was"):
            daq_setup.apply(db, store, setup, plan)
        assert bench.content(touched) == before
        monkeypatch.undo()
        assert store.daq_setup() == setup_before

        # The application database refuses the setup: the Tango database is not touched.
        bad = DaqSetup(setup.ecc_servers, setup.data_sources + setup.data_sources[:1])
        with pytest.raises(daq_setup.SetupError, match="appears more than once.*neither database was changed"):
            daq_setup.apply(db, store, bad, plan)
        assert bench.content(touched) == before
        assert store.daq_setup() == setup_before
