"""The HV crate through the generic TextDevice: events, writes, limits, link loss and bad replies."""

from __future__ import annotations

import time

import pytest
import tango

from tests.conftest import Facility, HvSimulator, wait_for


@pytest.fixture
def hv(hv_facility: Facility) -> tango.DeviceProxy:
    return hv_facility.proxy("dcs/hv/sipm")


def test_ramp_is_seen_as_a_series_of_change_events(hv: tango.DeviceProxy) -> None:
    values: list[float] = []

    def on_event(event: tango.EventData) -> None:
        if not event.err and event.attr_value.quality == tango.AttrQuality.ATTR_VALID:
            values.append(event.attr_value.value)

    hv.write_attribute("Ch00RampRate", 20.0)
    event_id = hv.subscribe_event("Ch00VMon", tango.EventType.CHANGE_EVENT, on_event)
    try:
        hv.write_attribute("Ch00VSet", 30.0)
        hv.write_attribute("Ch00On", True)
        wait_for(lambda: values and values[-1] >= 29.9, timeout=15, what="the ramp to reach 30 V")
    finally:
        hv.unsubscribe_event(event_id)
    ramp = [v for v in values if 0.0 < v < 29.9]
    assert len(ramp) >= 2, f"expected intermediate ramp values, got {values}"
    assert ramp == sorted(ramp), "a ramp up is monotonic"
    assert hv.read_attribute("Ch00VSet").value == pytest.approx(30.0)
    assert hv.read_attribute("Ch00On").value is True


def test_write_is_read_back_from_the_hardware_right_after(hv: tango.DeviceProxy, hv_simulator: HvSimulator) -> None:
    written_at = time.time()
    hv.write_attribute("Ch05VSet", 12.5)
    assert hv_simulator.request("VSET? 5") == "12.500"  # acknowledged by the hardware before the write returned
    reading = wait_for(
        lambda: (r := hv.read_attribute("Ch05VSet")).time.totime() > written_at and r, timeout=2, what="read-back"
    )
    assert reading.value == pytest.approx(12.5)
    spectrum = hv.read_attribute("VMon").value
    assert len(spectrum) == 16


def test_out_of_range_write_is_refused_naming_the_limit(hv: tango.DeviceProxy, hv_simulator: HvSimulator) -> None:
    with pytest.raises(tango.DevFailed) as refused:
        hv.write_attribute("Ch01VSet", 95.0)
    assert refused.value.args[0].reason == "API_WAttrOutsideLimit"
    assert "maximum" in refused.value.args[0].desc
    assert float(hv.get_attribute_config("Ch01VSet").max_value) == 80
    # Nothing reached the hardware.
    assert hv_simulator.request("VSET? 1") == "0.000"


def test_cli_write_refusal_names_the_limit(hv_facility: Facility) -> None:
    done = hv_facility.dcs("write", hv_facility.name("dcs/hv/sipm/Ch01VSet").split("//", 1)[1].split("/", 1)[1], "95", check=False)
    assert done.returncode == 1
    assert "above the maximum" in done.stderr and "80" in done.stderr


def test_command_with_argument_range(hv: tango.DeviceProxy, hv_simulator: HvSimulator) -> None:
    hv_simulator.request("SIM:LOAD 2 1")  # 1 MOhm: 10 V gives 10 uA, above the 2 uA limit
    hv.write_attribute("Ch02RampRate", 50.0)
    hv.write_attribute("Ch02VSet", 10.0)
    hv.write_attribute("Ch02On", True)
    wait_for(lambda: hv.read_attribute("Ch02Tripped").value, timeout=10, what="channel 2 to trip")
    with pytest.raises(tango.DevFailed, match="tripped"):
        hv.write_attribute("Ch02On", True)
    assert hv.command_inout("Reset", 2) == "OK"
    wait_for(lambda: not hv.read_attribute("Ch02Tripped").value, what="the trip to clear")
    with pytest.raises(tango.DevFailed, match="between 0 and 15"):
        hv.command_inout("Reset", 16)


def test_link_loss_gives_unknown_with_reason_then_recovers(hv: tango.DeviceProxy, hv_simulator: HvSimulator) -> None:
    hv_simulator.kill()
    wait_for(lambda: hv.state() == tango.DevState.UNKNOWN, what="UNKNOWN after the crate went away")
    status = hv.status()
    assert f"127.0.0.1:{hv_simulator.port}" in status
    assert "refused" in status.lower() or "closed" in status.lower()
    assert hv.read_attribute("Ch00VMon").quality == tango.AttrQuality.ATTR_INVALID
    with pytest.raises(tango.DevFailed, match="no connection"):
        hv.write_attribute("Ch00VSet", 1.0)
    beat = hv.read_attribute("Heartbeat").value
    wait_for(lambda: hv.read_attribute("Heartbeat").value > beat, what="heartbeat while the hardware is away")

    hv_simulator.start()  # same port
    wait_for(lambda: hv.state() == tango.DevState.ON, timeout=20, what="recovery")
    assert hv.read_attribute("Ch00VMon").quality == tango.AttrQuality.ATTR_VALID


def test_silent_hardware_is_detected_by_timeout(hv: tango.DeviceProxy, hv_simulator: HvSimulator) -> None:
    hv_simulator.pause()
    try:
        wait_for(lambda: hv.state() == tango.DevState.UNKNOWN, what="UNKNOWN while the crate is silent")
        assert "no reply" in hv.status() or "timed out" in hv.status()
        # The device keeps serving while its hardware hangs.
        start = time.monotonic()
        hv.read_attribute("Ch00VSet")
        assert time.monotonic() - start < 1.0
    finally:
        hv_simulator.resume()
    wait_for(lambda: hv.state() == tango.DevState.ON, timeout=20, what="recovery after SIGCONT")


def test_garbage_replies_make_readings_invalid_without_crashing(hv: tango.DeviceProxy, hv_simulator: HvSimulator) -> None:
    assert hv_simulator.request("SIM:FAULT garbage 2") == "OK"
    wait_for(
        lambda: hv.read_attribute("Ch00VMon").quality == tango.AttrQuality.ATTR_INVALID,
        what="INVALID quality on garbage",
    )
    assert hv.state() == tango.DevState.ALARM
    assert "not a float" in hv.status() or "unreadable" in hv.status()
    wait_for(lambda: hv.state() == tango.DevState.ON, timeout=15, what="recovery after the garbage stops")
    assert hv.read_attribute("Ch00VMon").quality == tango.AttrQuality.ATTR_VALID


def test_heartbeat_and_state_push_events(hv: tango.DeviceProxy) -> None:
    beats: list[int] = []
    event_id = hv.subscribe_event(
        "Heartbeat", tango.EventType.CHANGE_EVENT, lambda e: beats.append(e.attr_value.value) if not e.err else None
    )
    try:
        wait_for(lambda: len(beats) >= 3, timeout=10, what="three heartbeats")
    finally:
        hv.unsubscribe_event(event_id)
    assert beats == sorted(beats)
    states: list[tango.DevState] = []
    event_id = hv.subscribe_event(
        "State", tango.EventType.CHANGE_EVENT, lambda e: states.append(e.attr_value.value) if not e.err else None
    )
    hv.unsubscribe_event(event_id)
    assert states and states[0] == tango.DevState.ON
    # Archive events are pushed too (the archiver subscribes to those).
    archived: list[float] = []
    event_id = hv.subscribe_event(
        "Heartbeat", tango.EventType.ARCHIVE_EVENT, lambda e: archived.append(1) if not e.err else None
    )
    try:
        wait_for(lambda: len(archived) >= 2, timeout=10, what="archive events")
    finally:
        hv.unsubscribe_event(event_id)
