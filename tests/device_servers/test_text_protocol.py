"""Protocol files: parsing replies, templates and the errors a protocol author sees."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from device_servers.common.device import ReplyError
from device_servers.common.yamlfile import ConfigFileError
from device_servers.control.text_device import load_protocol
from device_servers.control.text_protocol import expand
from tests.conftest import PROTOCOLS

ERR = re.compile(r"ERR\b\s*(?P<message>.*)")


@pytest.fixture(scope="module")
def hv_attributes() -> dict:
    return {a.name: a for a in expand(load_protocol(PROTOCOLS / "hv_crate.yaml"))}


def test_hv_protocol_expands_per_channel(hv_attributes: dict) -> None:
    assert {"Ch00VMon", "Ch15VMon", "Ch07VSet", "Ch03Tripped", "VMon", "IMon"} <= set(hv_attributes)
    assert hv_attributes["Ch07VSet"].query == "VSET? 7"
    assert hv_attributes["Ch07VSet"].write_request(12.5) == "VSET 7 12.500"
    assert hv_attributes["Ch04On"].write_request(True) == "ON 4"
    assert hv_attributes["Ch04On"].write_request(False) == "OFF 4"


def test_replies_become_values(hv_attributes: dict) -> None:
    all_volts = ",".join(f"{v}.000" for v in range(16))
    assert hv_attributes["Ch03VMon"].parse(all_volts, ERR) == 3.0
    assert hv_attributes["VMon"].parse(all_volts, ERR) == [float(v) for v in range(16)]
    stat = ",".join(["0"] * 5 + ["9"] + ["0"] * 10)
    assert hv_attributes["Ch05Tripped"].parse(stat, ERR) is True
    assert hv_attributes["Ch04Tripped"].parse(stat, ERR) is False
    assert hv_attributes["Ch05Status"].parse(stat, ERR) == 9


@pytest.mark.parametrize(
    ("name", "reply", "problem"),
    [
        ("Ch00VSet", "#@!x?~", "is not a float"),
        ("Ch00VSet", "ERR 2 bad channel", "refused: 2 bad channel"),
        ("Ch02VMon", "1.0,2.0", "has no element 2"),
        ("VMon", "1.0,2.0", "has 2 values, expected 16"),
        ("Ch00On", "maybe", "is not a bool"),
    ],
)
def test_unusable_replies_raise_reply_error(hv_attributes: dict, name: str, reply: str, problem: str) -> None:
    with pytest.raises(ReplyError, match=re.escape(problem)):
        hv_attributes[name].parse(reply, ERR)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("attributes:\n  - name: V\n    query: 'V? {ch}'\n", "attributes.0: Value error, template 'V? {ch}' uses {ch}"),
        ("channels: 2\nattributes:\n  - name: V\n    query: 'V?'\n    reply: '(unclosed'\n", "attributes.0.reply"),
        ("attributes:\n  - name: V\n    query: 'V?'\n    min: 5\n    max: 1\n", "min (5.0) must be below max (1.0)"),
        ("attributes:\n  - name: 'bad name'\n    query: 'V?'\n", "is not a valid Tango attribute name"),
        ("attributes:\n  - name: V\n    query: 'V?'\n  - name: v\n    query: 'V?'\n", "declared twice"),
        ("transport: serial\nattributes: []\n", "transport"),
        ("attributes:\n  - name: V\n", "attributes.0.query: Field required"),
    ],
)
def test_malformed_protocol_files_are_refused_with_place_and_cause(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(ConfigFileError) as error:
        load_protocol(path)
    assert str(path) in str(error.value)
    assert problem.removeprefix("attributes.0: Value error, ") in str(error.value)
