"""DAQ run control end to end: ECC simulators over SOAP, data routers over real SSH, the run sequencer.

Two ECC servers (two CoBos on one, the MuTAnT on the other), three data
router processes, OpenSSH's sshd, and every device server under `dcs up`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import tango

from db.app import RunStore
from device_servers.daq.ecc_group import OverallState
from tests.conftest import Facility, free_port, wait_for
from tests.simulators.test_datarouter_simulator import DataRouterProcess
from tests.sshd import SshServer

TRANSITION = 0.3
SOURCES = {"daq/ecc/0": ["CoBo[0]", "CoBo[1]"], "daq/ecc/mutant": ["Mutant[master]"]}


@dataclass
class Daq:
    facility: Facility
    routers: dict[str, DataRouterProcess]
    ecc_ports: dict[str, int]
    config_dir: Path

    def proxy(self, name: str) -> tango.DeviceProxy:
        return self.facility.proxy(name)

    @property
    def sequencer(self) -> tango.DeviceProxy:
        return self.proxy("daq/sequencer/1")

    def store(self) -> RunStore:
        return RunStore.open(f"sqlite:///{self.facility.state_dir / 'dcs.db'}")


def _overall(daq: Daq) -> str:
    return OverallState(int(daq.sequencer.read_attribute("OverallState").value)).name


def _wait_overall(daq: Daq, name: str, timeout: float = 20) -> None:
    try:
        wait_for(lambda: _overall(daq) == name and daq.sequencer.state() != tango.DevState.MOVING, timeout, f"OverallState {name}")
    except AssertionError as exc:
        seen = {n: (str(daq.proxy(n).state()), daq.proxy(n).status()) for n in ("daq/sequencer/1", *SOURCES)}
        raise AssertionError(f"{exc}; OverallState {_overall(daq)}; {seen}") from None


@pytest.fixture
def daq(facility_dir: Facility, tmp_path: Path) -> Iterator[Daq]:
    with SshServer() as sshd:
        config_dir = tmp_path / "configs"
        routers = {
            source: DataRouterProcess(tmp_path / f"staging{i}", tmp_path / f"router{i}.err", name=f"DataRouter{i}")
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
                ecc_devices[ecc] = {"class": "EccServer", "properties": {"Port": port, "DataLinks": links, "Timeout": 2.0}}
            router_devices = {
                f"daq/router/{i}": {
                    "class": "DataRouter",
                    "properties": {
                        "Host": sshd.host, "SshPort": sshd.port, "SshUser": sshd.user,
                        "KeyFile": str(sshd.client_key_path), "KnownHosts": str(sshd.known_hosts_path),
                        "Workdir": str(router.workdir), "ConfigDir": str(config_dir), "PollPeriod": 0.5,
                    },
                }  # fmt: skip
                for i, router in enumerate(routers.values())
            }
            router_lines = [f"daq/router/{i} {ecc}" for i, ecc in enumerate(e for e, ss in SOURCES.items() for _ in ss)]
            facility_dir.write(
                {
                    "facility": "daqtest",
                    "simulators": simulators,
                    "servers": {
                        "EccServer/test": {"level": 1, "devices": ecc_devices},
                        "DataRouter/test": {"level": 1, "devices": router_devices},
                        "DaqSequencer/test": {
                            "level": 2,
                            "devices": {
                                "daq/sequencer/1": {
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
            facility_dir.dcs("up", str(facility_dir.file))
            daq = Daq(facility_dir, routers, ecc_ports, config_dir)
            store = daq.store()
            store.create_experiment("e20009")
            store.activate_experiment("e20009")
            for ecc in SOURCES:
                proxy = daq.proxy(ecc)
                wait_for(lambda proxy=proxy: len(proxy.read_attribute("AvailableConfigs").value) >= 2, what=f"{ecc} configs")
                proxy.command_inout("SelectConfig", "cobo0/experiment/experiment")
            _wait_overall(daq, "Idle")
            yield daq
        finally:
            for router in routers.values():
                router.kill()


def test_whole_run_files_data_and_records_it(daq: Daq) -> None:
    seq = daq.sequencer
    for command, state in (("DescribeAll", "Described"), ("PrepareAll", "Prepared"), ("ConfigureAll", "Ready")):
        started = time.monotonic()
        seq.command_inout(command)
        assert time.monotonic() - started < 1.0, f"{command} must return at once"
        assert seq.state() == tango.DevState.MOVING
        _wait_overall(daq, state)
    seq.write_attribute("RunTitle", "first beam")
    seq.write_attribute("RunClass", "Beam")
    seq.command_inout("StartRun")
    _wait_overall(daq, "Running")
    assert seq.read_attribute("RunNumber").value == 0
    wait_for(lambda: all(r.graw_files() for r in daq.routers.values()), what=".graw files from every router")
    wait_for(lambda: seq.read_attribute("RunDuration").value >= "00:00:01", what="a live duration")
    seq.command_inout("StopRun")
    _wait_overall(daq, "Ready")
    assert seq.read_attribute("LastError").value == ""

    for router in daq.routers.values():
        run_dir = router.workdir / "e20009" / "run_0000"
        assert list(run_dir.glob("*.graw")), f"no data filed in {run_dir}"
        assert (run_dir / "describe-cobo0.xcfg").exists()
        assert router.graw_files() == []
    store = daq.store()
    run = store.run(0)
    assert (run.title, run.run_class, run.state) == ("first beam", "Beam", "stopped")
    assert run.config_sets["daq/ecc/0"]["describe"] == "cobo0"
    actions = [(e.action, e.outcome) for e in store.operator_log(20)]
    assert ("StartRun", "ok") in actions and ("StopRun", "ok") in actions and ("DescribeAll", "ok") in actions

    # The next run gets the next number; the run sheet's numbering is per experiment.
    seq.command_inout("StartRun")
    _wait_overall(daq, "Running")
    assert seq.read_attribute("RunNumber").value == 1
    seq.command_inout("StopRun")
    _wait_overall(daq, "Ready")

    for _ in range(3):
        seq.command_inout("ResetAll")
        _wait_overall(daq, {0: "Prepared", 1: "Described", 2: "Idle"}[_])


def test_refusals(daq: Daq) -> None:
    seq = daq.sequencer
    with pytest.raises(tango.DevFailed, match="the DAQ is Idle; PrepareAll needs Described"):
        seq.command_inout("PrepareAll")
    with pytest.raises(tango.DevFailed, match="nothing to reset from Idle"):
        seq.command_inout("ResetAll")
    ecc = daq.proxy("daq/ecc/0")
    with pytest.raises(tango.DevFailed, match="cannot go from Idle to Prepared \\(Describe first\\)"):
        ecc.command_inout("Prepare")
    # One server alone: the system is Mixed and refuses system-wide commands.
    ecc.command_inout("Describe")
    _wait_overall(daq, "Mixed")
    with pytest.raises(tango.DevFailed, match="different states"):
        seq.command_inout("DescribeAll")
    with pytest.raises(tango.DevFailed, match="already Described"):
        ecc.command_inout("Describe")
    daq.proxy("daq/ecc/mutant").command_inout("Describe")
    _wait_overall(daq, "Described")
    seq.command_inout("PrepareAll")
    _wait_overall(daq, "Prepared")
    seq.command_inout("ConfigureAll")
    _wait_overall(daq, "Ready")
    # A dirty staging directory blocks the next run, naming the router.
    next(iter(daq.routers.values())).workdir.joinpath("CoBo0_AsAd0_leftover_0000.graw").write_bytes(b"x")
    wait_for(lambda: not daq.proxy("daq/router/0").read_attribute("StagingClean").value, what="dirty staging seen")
    with pytest.raises(tango.DevFailed, match="staging not clean on daq/router/0"):
        seq.command_inout("StartRun")


def test_ecc_error_puts_the_daq_in_error_with_the_reason(daq: Daq) -> None:
    import zeep

    from device_servers.daq.ecc_link import SERVICE

    wsdl = Path(__file__).resolve().parents[2] / "device_servers" / "daq" / "ecc.wsdl"
    client = zeep.Client(str(wsdl))
    service = client.create_service(SERVICE, f"http://127.0.0.1:{daq.ecc_ports['daq/ecc/mutant']}/")
    service.Special(command="sim:fail Describe 7 AsAd power supply tripped", table="")
    daq.sequencer.command_inout("DescribeAll")
    _wait_overall(daq, "Error")
    error = daq.sequencer.read_attribute("LastError").value
    assert "daq/ecc/mutant" in error and "AsAd power supply tripped" in error
    assert daq.sequencer.state() == tango.DevState.FAULT
    log = daq.store().operator_log(5)
    assert log[0].action == "DescribeAll" and log[0].outcome == "failed"


def test_unresponsive_ecc_is_detected_within_seconds(daq: Daq) -> None:
    import zeep

    from device_servers.daq.ecc_link import SERVICE

    wsdl = Path(__file__).resolve().parents[2] / "device_servers" / "daq" / "ecc.wsdl"
    service = zeep.Client(str(wsdl)).create_service(SERVICE, f"http://127.0.0.1:{daq.ecc_ports['daq/ecc/0']}/")
    try:
        service.Special(command="sim:hang 30", table="")
    except Exception:
        pass  # the hang may start before the reply
    ecc = daq.proxy("daq/ecc/0")
    started = time.monotonic()
    wait_for(lambda: ecc.state() == tango.DevState.UNKNOWN, timeout=15, what="UNKNOWN for a hung ECC server")
    assert time.monotonic() - started < 10
    assert "did not answer" in ecc.status()
    _wait_overall(daq, "Error")


def test_no_config_selected_is_refused(daq: Daq) -> None:
    ecc = daq.proxy("daq/ecc/mutant")
    db = tango.Database(*daq.facility.tango_host.split(":"))
    db.delete_device_attribute_property("daq/ecc/mutant", {"SelectedConfig": ["__value"]})
    ecc.command_inout("Init")
    wait_for(lambda: ecc.read_attribute("SelectedConfig").value == "" and ecc.state() == tango.DevState.STANDBY, what="re-init")
    with pytest.raises(tango.DevFailed, match="no config selected"):
        ecc.command_inout("Describe")


def test_mutant_ordering_is_kept(daq: Daq) -> None:
    """MuTAnT first for Prepare and Stop, CoBo servers first for Describe, Configure and Start."""
    seen: list[tuple[float, str, str, object]] = []
    subscriptions = []
    for name in SOURCES:
        proxy = daq.proxy(name)
        for attr in ("CoboState", "Transitioning"):
            def record(event: tango.EventData, name: str = name, attr: str = attr) -> None:
                if not event.err:
                    seen.append((event.attr_value.time.totime(), name, attr, event.attr_value.value))
            subscriptions.append((proxy, proxy.subscribe_event(attr, tango.EventType.CHANGE_EVENT, record)))
    try:
        seq = daq.sequencer

        def order_of(command: str, target: str) -> list[str]:
            seen.clear()
            seq.command_inout(command)
            _wait_overall(daq, target)
            started = {}
            for stamp, name, attr, value in sorted(seen, key=lambda s: s[0]):
                if attr == "Transitioning" and value and name not in started:
                    started[name] = stamp
            return sorted(started, key=started.get)

        assert order_of("DescribeAll", "Described") == ["daq/ecc/0", "daq/ecc/mutant"]
        assert order_of("PrepareAll", "Prepared") == ["daq/ecc/mutant", "daq/ecc/0"]
        assert order_of("ConfigureAll", "Ready") == ["daq/ecc/0", "daq/ecc/mutant"]
        assert order_of("StartRun", "Running") == ["daq/ecc/0", "daq/ecc/mutant"]
        assert order_of("StopRun", "Ready") == ["daq/ecc/mutant", "daq/ecc/0"]
    finally:
        for proxy, event_id in subscriptions:
            proxy.unsubscribe_event(event_id)


def test_ecc_crash_mid_run_loses_no_run_record(daq: Daq) -> None:
    import zeep

    from device_servers.daq.ecc_link import SERVICE

    seq = daq.sequencer
    for command, state in (("DescribeAll", "Described"), ("PrepareAll", "Prepared"), ("ConfigureAll", "Ready"), ("StartRun", "Running")):
        seq.command_inout(command)
        _wait_overall(daq, state)
    wsdl = Path(__file__).resolve().parents[2] / "device_servers" / "daq" / "ecc.wsdl"
    service = zeep.Client(str(wsdl)).create_service(SERVICE, f"http://127.0.0.1:{daq.ecc_ports['daq/ecc/mutant']}/")
    try:
        service.Special(command="sim:exit", table="")
    except Exception:
        pass  # it exits without answering
    mutant = daq.proxy("daq/ecc/mutant")
    wait_for(lambda: mutant.state() == tango.DevState.UNKNOWN, what="UNKNOWN after the ECC server died")
    assert "unreachable" in mutant.status()
    _wait_overall(daq, "Error")
    # The supervisor restarts the dead simulator (Idle again) within seconds: Error, then Mixed; both refuse.
    with pytest.raises(tango.DevFailed, match="the DAQ is in Error: daq/ecc/mutant|different states"):
        seq.command_inout("StopRun")
    run = daq.store().current_run()
    assert run is not None and run.number == 0 and run.state == "running"


def test_reset_acknowledges_an_ecc_error(daq: Daq) -> None:
    import zeep

    from device_servers.daq.ecc_link import SERVICE

    wsdl = Path(__file__).resolve().parents[2] / "device_servers" / "daq" / "ecc.wsdl"
    service = zeep.Client(str(wsdl)).create_service(SERVICE, f"http://127.0.0.1:{daq.ecc_ports['daq/ecc/mutant']}/")
    service.Special(command="sim:fail Describe 7 AsAd power supply tripped", table="")
    daq.sequencer.command_inout("DescribeAll")
    _wait_overall(daq, "Error")
    mutant = daq.proxy("daq/ecc/mutant")
    mutant.command_inout("Reset")  # Idle: nothing to step back, the error is acknowledged
    assert mutant.read_attribute("LastError").value == ""
    time.sleep(1.0)  # several polls: the server still reports the old error, which stays acknowledged
    assert mutant.read_attribute("LastError").value == ""
    daq.proxy("daq/ecc/0").command_inout("Reset")  # back to Idle as well
    _wait_overall(daq, "Idle")
