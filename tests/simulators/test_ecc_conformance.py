"""Conformance of DCS's ECC WSDL and simulator with the published WSDL of the real GET ECC server.

``shared/reference/ecc.wsdl`` imports the SOAP-encoding schema by URL; these
tests load it with zeep through a transport that answers that import with a
minimal local schema and fails on any other remote fetch, so nothing here
touches the network. Two checks: DCS's own WSDL describes the same wire
messages as the reference, and a client built from the reference WSDL (as a
third-party GET tool would be) can drive the simulator through a whole run.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import zeep
from lxml import etree
from zeep.transports import Transport

from tests.simulators.test_ecc_simulator import (
    CONFIG_FILES,
    DESCRIBED,
    IDLE,
    PREPARED,
    READY,
    RUNNING,
    WSDL,
    EccSimulator,
    FakeRouter,
    data_links,
    make_service,
    settled,
    step,
)

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
REFERENCE_WSDL = SHARED / "reference" / "ecc.wsdl"
SOAP_ENCODING = "http://schemas.xmlsoap.org/soap/encoding/"
# All the reference's import needs: the namespace exists (none of its types are used).
LOCAL_SOAP_ENCODING_SCHEMA = (
    f'<xsd:schema xmlns:xsd="http://www.w3.org/2001/XMLSchema" targetNamespace="{SOAP_ENCODING}"/>'
).encode()


class OfflineTransport(Transport):
    """Answers the SOAP-encoding schema import locally and refuses any other remote document."""

    def __init__(self, timeout: float = 5.0) -> None:
        super().__init__(timeout=timeout, operation_timeout=timeout)
        self.intercepted: list[str] = []

    def load(self, url: str) -> bytes:
        if url.rstrip("/") == SOAP_ENCODING.rstrip("/"):
            self.intercepted.append(url)
            return LOCAL_SOAP_ENCODING_SCHEMA
        if urlsplit(url).scheme in ("http", "https"):
            raise AssertionError(f"the conformance tests must not touch the network (zeep asked for {url})")
        return super().load(url)


@pytest.fixture
def reference_wsdl() -> Path:
    if not REFERENCE_WSDL.is_file():
        pytest.skip(f"reference WSDL of the GET ECC server not found at {REFERENCE_WSDL} (shared folder missing)")
    return REFERENCE_WSDL


def reference_client(reference_wsdl: Path) -> zeep.Client:
    transport = OfflineTransport()
    client = zeep.Client(wsdl=str(reference_wsdl), transport=transport)
    assert transport.intercepted, "the reference WSDL no longer imports the SOAP-encoding schema by URL"
    return client


def wire_signature(client: zeep.Client) -> dict[str, Any]:
    """What a WSDL fixes on the wire: names, binding style, and per operation its action and messages."""
    service = client.wsdl.services["ecc"]
    port = service.ports["ecc"]
    binding = port.binding
    operations = {}
    for name, operation in binding._operations.items():
        operations[name] = (
            operation.soapaction or "",
            operation.style,
            _message(operation.input.body),
            _message(operation.output.body),
        )
    return {
        "service": service.name,
        "port": port.name,
        "binding": binding.name.text,
        "port type": binding.port_type.name.text,
        "transport": binding.transport,
        "operations": operations,
    }


def _message(element: Any) -> tuple[str, list[tuple[str, str, int, int]]]:
    children = [
        (child.qname.text, child.type.qname.text, child.min_occurs, child.max_occurs)
        for _, child in element.type.elements
    ]
    return element.qname.text, children


def test_dcs_wsdl_matches_the_reference_on_the_wire(reference_wsdl: Path) -> None:
    ours = wire_signature(zeep.Client(wsdl=str(WSDL), transport=OfflineTransport()))
    theirs = wire_signature(reference_client(reference_wsdl))
    assert ours["operations"].keys() == theirs["operations"].keys()
    for name in theirs["operations"]:
        assert ours["operations"][name] == theirs["operations"][name], name
    assert ours == theirs


def test_dcs_wsdl_imports_nothing() -> None:
    document = etree.parse(str(WSDL))
    imports = document.xpath("//*[local-name()='import' or local-name()='include']")
    assert imports == []


@pytest.fixture
def router() -> Iterator[FakeRouter]:
    server = FakeRouter()
    yield server
    server.close()


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[EccSimulator]:
    config_dir = tmp_path / "configs"
    config_dir.mkdir()
    for name in CONFIG_FILES:
        (config_dir / name).write_text("<Setup/>\n")
    simulator = EccSimulator(config_dir, "--sources", "CoBo[0],Mutant[master]", "--transition-time", "0.1")
    yield simulator.start()
    simulator.kill()


def test_reference_client_drives_a_whole_run(reference_wsdl: Path, sim: EccSimulator, router: FakeRouter) -> None:
    client = reference_client(reference_wsdl)
    ecc = client.create_service("{urn:ecc}ecc", address=sim.url)
    assert settled(ecc, IDLE).ErrorCode == 0

    reply = ecc.GetConfigIDs()
    assert reply.ErrorCode == 0
    config_ids = etree.fromstring(reply.Text).findall("ConfigId")
    names = ["/".join(sub.text for sub in config.findall("SubConfigId")) for config in config_ids]
    assert "cobo0/experiment/experiment" in names
    chosen = etree.tostring(config_ids[names.index("cobo0/experiment/experiment")], encoding="unicode")

    table = data_links(("CoBo[0]", router.port), ("Mutant[master]", router.port))
    step(ecc, "Describe", DESCRIBED, configID=chosen)
    step(ecc, "Prepare", PREPARED, configID=chosen)
    step(ecc, "Configure", READY, configID=chosen, table=table)
    step(ecc, "Start", RUNNING, configID=chosen)
    step(ecc, "Stop", READY, configID=chosen)
    step(ecc, "Breakup", PREPARED, configID=chosen)
    step(ecc, "Undo", DESCRIBED, configID=chosen)
    step(ecc, "Undo", IDLE, configID=chosen)

    assert sorted(line.split()[0] + " " + line.split()[1] for line in router.lines) == [
        "START CoBo[0]", "START Mutant[master]", "STOP CoBo[0]", "STOP Mutant[master]",
    ]  # fmt: skip
    # DCS's own client sees the same server the same way.
    assert make_service(sim.url).GetState().State == IDLE
    assert ecc.ServerExit().ErrorCode == 0
    assert sim.wait_exit() == 0
