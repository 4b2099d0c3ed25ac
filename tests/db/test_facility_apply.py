"""Facility files: validation messages, `dcs apply` diffs and idempotency, `dcs dump` round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import tango
import yaml

from db.facility import ConfigFileError, load_facility
from db.tango_sync import desired_state
from tests.conftest import PROTOCOLS, ROOT, Facility, hv_server_spec


def _two_servers() -> dict:
    return {
        "facility": "applytest",
        "description": "apply and dump round trip",
        "simulators": {"hv": {"module": "simulators.hv.server", "args": ["--port", 15025], "port": 15025}},
        "servers": {
            "TextDevice/hv": hv_server_spec(15025, Ch00VMon={"abs_change": 0.05, "archive_period": 60000}),
            "TextDevice/logger": {
                "level": 2,
                "devices": {
                    "dcs/temperature/logger": {
                        "class": "TextDevice",
                        "properties": {
                            "ProtocolFile": str(PROTOCOLS / "datalogger.yaml"),
                            "Program": ["dcs-sim-datalogger", "--state", "/tmp/x.json"],
                        },
                    }
                },
            },
        },
    }


@pytest.fixture
def empty_db(facility_dir: Facility) -> Facility:
    """An embedded Tango database, started by `dcs up` of a facility with no servers."""
    facility_dir.write({"facility": "dbonly"})
    facility_dir.dcs("up", str(facility_dir.file))
    return facility_dir


def test_apply_dry_run_yes_and_idempotency(empty_db: Facility, tmp_path: Path) -> None:
    target = tmp_path / "target.yaml"
    target.write_text(yaml.safe_dump(_two_servers()))

    dry = empty_db.dcs("apply", str(target), "--dry-run")
    assert "+ server TextDevice/hv: level 1" in dry.stdout
    assert "+ device dcs/hv/sipm: TextDevice in TextDevice/hv" in dry.stdout
    assert "+ property dcs/hv/sipm/Port: 15025" in dry.stdout
    assert "+ attribute property dcs/hv/sipm/Ch00VMon/abs_change: 0.05" in dry.stdout
    db = tango.Database(*empty_db.tango_host.split(":"))
    assert "TextDevice/hv" not in db.get_server_list("TextDevice/*").value_string

    refused = empty_db.dcs("apply", str(target), check=False)
    assert refused.returncode == 1 and "--yes" in refused.stderr
    assert "TextDevice/hv" not in db.get_server_list("TextDevice/*").value_string

    empty_db.dcs("apply", str(target), "--yes")
    assert db.get_device_property("dcs/hv/sipm", ["Port"])["Port"][0] == "15025"
    assert db.get_server_info("TextDevice/logger").level == 2
    assert "nothing to do" in empty_db.dcs("apply", str(target)).stdout

    # Change one property, drop one attribute property, remove one server.
    spec = _two_servers()
    spec["servers"]["TextDevice/hv"]["devices"]["dcs/hv/sipm"]["properties"]["Port"] = 15026
    del spec["servers"]["TextDevice/hv"]["devices"]["dcs/hv/sipm"]["attributes"]["Ch00VMon"]["archive_period"]
    del spec["servers"]["TextDevice/logger"]
    target.write_text(yaml.safe_dump(spec))
    diff = empty_db.dcs("apply", str(target), "--yes").stdout
    assert "~ property dcs/hv/sipm/Port: 15025 -> 15026" in diff
    assert "- attribute property dcs/hv/sipm/Ch00VMon/archive_period" in diff
    assert "- server TextDevice/logger" in diff
    assert "TextDevice/logger" not in db.get_server_list("TextDevice/*").value_string
    assert "nothing to do" in empty_db.dcs("apply", str(target)).stdout
    # Servers the facility never owned are left alone.
    assert "DataBaseds/2" in db.get_server_list("DataBaseds/*").value_string


def test_dump_round_trip(empty_db: Facility, tmp_path: Path) -> None:
    original = tmp_path / "original.yaml"
    original.write_text(yaml.safe_dump(_two_servers()))
    empty_db.dcs("apply", str(original), "--yes")
    dumped = tmp_path / "dumped.yaml"
    empty_db.dcs("dump", "--facility", "applytest", "-o", str(dumped))
    # The dump is a valid facility file describing the same database content...
    assert desired_state(load_facility(dumped)) == desired_state(load_facility(original))
    assert load_facility(dumped).simulators == load_facility(original).simulators
    # ... and applying it changes nothing.
    assert "nothing to do" in empty_db.dcs("apply", str(dumped)).stdout
    json_plan = empty_db.dcs("apply", str(dumped), "--json").stdout
    assert '"changes": []' in json_plan


def test_demo_facility_is_valid() -> None:
    facility = load_facility(ROOT / "facilities" / "demo.yaml")
    assert "dcs/hv/sipm" in facility.servers["TextDevice/sipm_hv"].devices


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("facility: x\nservers:\n  a: b: c\n", ":3:7: not valid YAML: mapping values are not allowed here"),
        ("facility: x\nservers:\n  TextDevice/a:\n    devices:\n      a/b/c:\n        class: NoSuchClass\n",
         "6: servers.TextDevice/a.devices.a/b/c.class: unknown device class 'NoSuchClass'"),
        ("facility: x\nservers:\n  Nope/a:\n    devices: {}\n", "3: servers.Nope/a: unknown device server 'Nope'"),
        ("facility: x\nservers:\n  TextDevice/a:\n    levle: 2\n    devices: {}\n", "4: servers.TextDevice/a.levle: Extra inputs are not permitted"),
        ("facility: x\nservers:\n  TextDevice/a:\n    devices:\n      A/B:\n        class: TextDevice\n", "domain/family/member"),
        ("facility: x\nservers:\n  TextDevice/a:\n    level: high\n    devices: {}\n", "4: servers.TextDevice/a.level"),
        ("facility: x\nservers: {}\nsimulators: {}\nservers: {}\n", ":4:1: not valid YAML: key 'servers' appears twice (first on line 2)"),
    ],
)  # fmt: skip
def test_malformed_facility_files_name_line_key_and_problem(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigFileError) as error:
        load_facility(path)
    assert str(path) in str(error.value)
    assert expected in str(error.value)


def test_cli_validate_reports_problems(facility_dir: Facility) -> None:
    facility_dir.file.write_text("facility: x\nservers:\n  TextDevice/a:\n    devices:\n      a/b/c:\n        class: Foo\n")
    done = facility_dir.dcs("validate", str(facility_dir.file), check=False)
    assert done.returncode == 1
    assert "unknown device class 'Foo'" in done.stderr
    up = facility_dir.dcs("up", str(facility_dir.file), check=False)
    assert up.returncode == 1 and "not a usable facility file" in up.stderr
    assert not (facility_dir.state_dir / "supervisor.pid").exists()


def test_bad_protocol_file_is_reported_at_validation(tmp_path: Path) -> None:
    protocol = tmp_path / "broken.yaml"
    protocol.write_text("transport: tcp\nattributes:\n  - name: V\n    query: 'V?'\n    type: complex\n")
    facility = tmp_path / "f.yaml"
    facility.write_text(yaml.safe_dump({"facility": "p", "servers": {"TextDevice/a": {"devices": {"a/b/c": {
        "class": "TextDevice", "properties": {"ProtocolFile": str(protocol), "Port": 1}}}}}}))  # fmt: skip
    with pytest.raises(ConfigFileError) as error:
        load_facility(facility)
    message = str(error.value)
    assert "ProtocolFile" in message and "broken.yaml" in message and "attributes.0.type" in message
