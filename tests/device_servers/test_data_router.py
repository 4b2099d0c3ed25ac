"""DataRouter device over real SSH (OpenSSH's sshd on a loopback port) to a real data router process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import tango

from tests.conftest import Facility, wait_for
from tests.simulators.test_datarouter_simulator import DataRouterProcess
from tests.sshd import SshServer


@pytest.fixture
def sshd() -> Iterator[SshServer]:
    with SshServer() as server:
        yield server


@pytest.fixture
def router_process(tmp_path: Path) -> Iterator[DataRouterProcess]:
    router = DataRouterProcess(tmp_path / "staging", tmp_path / "router.stderr")
    yield router
    router.kill()


def _router_spec(sshd: SshServer, workdir: Path, config_dir: Path, key: str | None = None) -> dict:
    return {
        "devices": {
            "daq/router/cobo0": {
                "class": "DataRouter",
                "properties": {
                    "Host": sshd.host,
                    "SshPort": sshd.port,
                    "SshUser": sshd.user,
                    "KeyFile": key or str(sshd.client_key_path),
                    "KnownHosts": str(sshd.known_hosts_path),
                    "Workdir": str(workdir),
                    "ConfigDir": str(config_dir),
                    "PollPeriod": 0.5,
                },
            }
        }
    }


@pytest.fixture
def router(facility_dir: Facility, sshd: SshServer, router_process: DataRouterProcess, tmp_path: Path) -> tango.DeviceProxy:
    config_dir = tmp_path / "configs"
    config_dir.mkdir()
    for kind, name in (("describe", "cobo0"), ("prepare", "experiment"), ("configure", "experiment")):
        (config_dir / f"{kind}-{name}.xcfg").write_text(f"<{kind}/>")
    facility_dir.write({"facility": "routers", "servers": {"DataRouter/test": _router_spec(sshd, router_process.workdir, config_dir)}})
    facility_dir.dcs("up", str(facility_dir.file))
    dev = facility_dir.proxy("daq/router/cobo0")
    wait_for(lambda: dev.state() == tango.DevState.ON, what="router device ON")
    return dev


def test_router_state_files_are_organized_and_configs_backed_up(router: tango.DeviceProxy, router_process: DataRouterProcess) -> None:
    assert router.read_attribute("Online").value is True
    assert router.read_attribute("StagingClean").value is True
    assert router.read_attribute("WorkingDir").value == str(router_process.workdir)

    assert router_process.request("START CoBo[0] 1700000000") == "OK"
    wait_for(lambda: router.read_attribute("GrawFiles").value >= 1, what=".graw files seen over SSH")
    assert router.read_attribute("StagingClean").value is False
    assert router_process.request("STOP CoBo[0]") == "OK"
    written = router_process.graw_files()
    assert written

    moved = router.command_inout("OrganizeFiles", ["e20009", "4"])
    assert moved == len(written)
    run_dir = router_process.workdir / "e20009" / "run_0004"
    assert sorted(p.name for p in run_dir.glob("*.graw")) == sorted(p.name for p in written)
    assert router_process.graw_files() == []
    wait_for(lambda: router.read_attribute("StagingClean").value, what="staging clean again")

    copied = router.command_inout("BackupConfigs", ["e20009", "4", "cobo0/experiment/experiment"])
    assert len(copied) == 3
    assert (run_dir / "describe-cobo0.xcfg").read_text() == "<describe/>"

    log = router.command_inout("TailLog", 20)
    assert "START" in log or "start" in log

    with pytest.raises(tango.DevFailed, match="not a usable experiment name"):
        router.command_inout("OrganizeFiles", ["../etc", "1"])
    with pytest.raises(tango.DevFailed, match="No such file"):
        router.command_inout("BackupConfigs", ["e20009", "4", "nope/experiment/experiment"])


def test_dead_router_is_a_fault_naming_the_process(router: tango.DeviceProxy, router_process: DataRouterProcess) -> None:
    router_process.kill()
    wait_for(lambda: router.state() == tango.DevState.FAULT, what="FAULT when dataRouter is gone")
    assert "dataRouter on 127.0.0.1: not running" in router.status()
    assert router.read_attribute("Online").value is False


def test_ssh_authentication_failure_is_clear(facility_dir: Facility, sshd: SshServer, router_process: DataRouterProcess, tmp_path: Path) -> None:
    facility_dir.write(
        {"facility": "badkey", "servers": {"DataRouter/test": _router_spec(sshd, router_process.workdir, tmp_path, key=str(sshd.wrong_key()))}}
    )
    facility_dir.dcs("up", str(facility_dir.file))
    dev = facility_dir.proxy("daq/router/cobo0")
    wait_for(lambda: dev.state() == tango.DevState.UNKNOWN, what="UNKNOWN on a refused key")
    assert "SSH authentication failed" in dev.status()
    assert f"{sshd.user}@127.0.0.1:{sshd.port}" in dev.status()


def test_unknown_host_key_is_refused(facility_dir: Facility, sshd: SshServer, router_process: DataRouterProcess, tmp_path: Path) -> None:
    spec = _router_spec(sshd, router_process.workdir, tmp_path)
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    spec["devices"]["daq/router/cobo0"]["properties"]["KnownHosts"] = str(empty)
    facility_dir.write({"facility": "hostkey", "servers": {"DataRouter/test": spec}})
    facility_dir.dcs("up", str(facility_dir.file))
    dev = facility_dir.proxy("daq/router/cobo0")
    wait_for(lambda: dev.state() == tango.DevState.UNKNOWN, what="UNKNOWN on an unknown host key")
    assert "known_hosts" in dev.status()
