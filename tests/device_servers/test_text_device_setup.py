"""TextDevice beyond TCP: a wrapped command-line tool, and set-up problems that must not kill the server."""

from __future__ import annotations

import tango

from tests.conftest import PROTOCOLS, Facility, wait_for


def test_command_line_tool_device(facility_dir: Facility) -> None:
    state = facility_dir.root / "logger.json"
    facility_dir.write(
        {
            "facility": "tool",
            "servers": {
                "TextDevice/logger": {
                    "devices": {
                        "dcs/temperature/logger": {
                            "class": "TextDevice",
                            "properties": {
                                "ProtocolFile": str(PROTOCOLS / "datalogger.yaml"),
                                "Program": ["dcs-sim-datalogger", "--state", str(state)],
                            },
                        }
                    }
                }
            },
        }
    )
    facility_dir.dcs("up", str(facility_dir.file))
    logger = facility_dir.proxy("dcs/temperature/logger")
    wait_for(lambda: logger.state() == tango.DevState.ON, what="the logger device ON")
    assert logger.read_attribute("Identity").value.startswith("DCS-SIM,DATALOGGER40")
    temperature = logger.read_attribute("T12")
    assert temperature.quality == tango.AttrQuality.ATTR_VALID and 15 < temperature.value < 30
    logger.write_attribute("ScanInterval", 42)
    wait_for(lambda: logger.read_attribute("ScanInterval").value == 42, what="the new interval read back")
    assert '42' in state.read_text()


def test_bad_protocol_file_gives_fault_and_the_server_keeps_serving(facility_dir: Facility, tmp_path) -> None:
    protocol = tmp_path / "hv.yaml"
    protocol.write_text((PROTOCOLS / "hv_crate.yaml").read_text())
    facility_dir.write(
        {
            "facility": "broken",
            "servers": {
                "TextDevice/hv": {
                    "devices": {
                        "dcs/hv/sipm": {
                            "class": "TextDevice",
                            "properties": {"ProtocolFile": str(protocol), "Port": 1},
                        }
                    }
                }
            },
        }
    )
    facility_dir.dcs("up", str(facility_dir.file))
    # Broken after validation, as a hand edit on a running system would be.
    protocol.write_text("attributes:\n  - name: V\n    query: 'V?'\n    type: complex\n")
    hv = facility_dir.proxy("dcs/hv/sipm")
    hv.command_inout("Init")
    wait_for(lambda: hv.state() == tango.DevState.FAULT, what="FAULT after a bad protocol file")
    assert "hv.yaml" in hv.status() and "attributes.0.type" in hv.status()
    assert hv.read_attribute("Heartbeat").value >= 0
