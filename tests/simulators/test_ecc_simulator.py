"""End-to-end tests of the ECC server simulator: a real subprocess driven over SOAP/HTTP.

Each test starts its own simulator (``--port 0``, its own config directory)
and, where a run starts, a fake data router on a free port, so tests are
independent and parallel-safe. Calls go through zeep with DCS's WSDL, the way
the EccServer device will make them, and through raw HTTP POSTs for the
request encodings zeep never produces.
"""

from __future__ import annotations

import itertools
import re
import select
import signal
import socketserver
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import zeep
from lxml import etree
from zeep.transports import Transport

from tests.conftest import ROOT, Simulator, free_port, project_env, wait_for

WSDL = ROOT / "device_servers" / "daq" / "ecc.wsdl"
SOURCES = ("CoBo[0]", "CoBo[1]", "Mutant[master]")
TRANSITION_TIME = 0.1  # s, per transition in most tests
SLOW_TRANSITION_TIME = 0.25  # s, where a test looks at a transition in progress
STARTUP_TIMEOUT = 15.0
LISTENING_RE = re.compile(r"^ecc simulator listening on (\S+):(\d+)$")
SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
ECC = "urn:ecc"

# State and Transition integers of the spec.
IDLE, DESCRIBED, PREPARED, READY, RUNNING, PAUSED = 1, 2, 3, 4, 5, 6
DESCRIBING, PREPARING, CONFIGURING, STARTING, STOPPING, PAUSING, RESUMING, BREAKING_UP, RESETTING = range(1, 10)

CONFIG_FILES = (
    "describe-cobo0.xcfg",
    "describe-cobos-all.xcfg",
    "prepare-experiment.xcfg",
    "prepare-pulser.xcfg",
    "configure-experiment.xcfg",
)


# -- helpers shared with test_ecc_conformance.py ------------------------------------------


_LOG_NUMBERS = itertools.count()


class EccSimulator(Simulator):
    """The ECC simulator on a port it picks itself (``--port 0``), with the options of these tests."""

    module = "simulators.ecc.server"

    def __init__(self, config_dir: Path, *options: str) -> None:
        super().__init__(port=0)
        self.config_dir = config_dir
        self.options = options
        self.log_path = config_dir.parent / f"ecc-{next(_LOG_NUMBERS)}.log"

    def start(self) -> EccSimulator:
        with open(self.log_path, "w") as log_file:
            self.process = subprocess.Popen(
                [sys.executable, "-m", self.module, "--port", "0", "--config-dir", str(self.config_dir), *self.options],
                stdout=subprocess.PIPE, stderr=log_file, text=True, env=project_env(), cwd=ROOT,
            )  # fmt: skip
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], STARTUP_TIMEOUT)
        line = self.process.stdout.readline().strip() if ready else ""
        match = LISTENING_RE.match(line)
        assert match, f"{self.module} did not start: {line!r}\n{self.log()}"
        self.port = int(match.group(2))
        return self

    def kill(self) -> None:
        stdout = self.process.stdout if self.process is not None else None
        super().kill()
        if stdout is not None:
            stdout.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_exit(self, timeout: float = 10.0) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)


class FakeRouter(socketserver.ThreadingTCPServer):
    """A data router stand-in: records each request line and answers ``reply``."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, reply: str = "OK") -> None:
        self.reply = reply
        self.lines: list[str] = []
        super().__init__(("127.0.0.1", 0), _RouterHandler)
        self.port = self.server_address[1]
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.shutdown()
        self.server_close()


class _RouterHandler(socketserver.StreamRequestHandler):
    server: FakeRouter

    def handle(self) -> None:
        line = self.rfile.readline().decode().strip()
        self.server.lines.append(line)
        self.wfile.write(self.server.reply.encode() + b"\n")


def config_id(describe: str = "cobo0", prepare: str = "experiment", configure: str = "experiment") -> str:
    return (
        f'<ConfigId><SubConfigId type="describe">{describe}</SubConfigId>'
        f'<SubConfigId type="prepare">{prepare}</SubConfigId>'
        f'<SubConfigId type="configure">{configure}</SubConfigId></ConfigId>'
    )


def data_links(*links: tuple[str, int]) -> str:
    """A DataLinkSet linking each (source, port) to a TCP router on localhost."""
    body = "".join(
        f'<DataLink><DataSender id="{source}"/>'
        f'<DataRouter name="DataRouter{number}" ipAddress="127.0.0.1" port="{port}" type="TCP"/></DataLink>'
        for number, (source, port) in enumerate(links)
    )
    return f"<DataLinkSet>{body}</DataLinkSet>"


def make_service(url: str, wsdl: Path | str = WSDL, transport: Transport | None = None, timeout: float = 5.0) -> Any:
    """The zeep recipe of the EccServer device: local WSDL, service bound to the server's address."""
    client = zeep.Client(wsdl=str(wsdl), transport=transport or Transport(timeout=timeout, operation_timeout=timeout))
    return client.create_service("{urn:ecc}ecc", address=url)


def settled(ecc: Any, state: int, timeout: float = 5.0) -> Any:
    """Wait until no transition is running and return GetState; assert it is ``state``."""
    reply = wait_for(lambda: (r := ecc.GetState()).Transition == 0 and r, timeout=timeout, what="transition to end")
    assert reply.State == state, f"expected state {state}, got {reply}"
    return reply


def step(ecc: Any, operation: str, state: int, transition: int | None = None, **arguments: str) -> Any:
    """Call a transition, check it is accepted (and in progress if ``transition``), wait for ``state``."""
    arguments.setdefault("configID", config_id())
    arguments.setdefault("table", "")
    reply = getattr(ecc, operation)(**arguments)
    assert reply.ErrorCode == 0, f"{operation} refused: {reply.ErrorMessage}"
    if transition is not None:
        during = ecc.GetState()
        assert during.Transition == transition, f"{operation} not in progress: {during}"
    after = settled(ecc, state)
    assert after.ErrorCode == 0, after.ErrorMessage
    return after


def to_ready(ecc: Any, table: str) -> None:
    step(ecc, "Describe", DESCRIBED)
    step(ecc, "Prepare", PREPARED)
    step(ecc, "Configure", READY, table=table)


def refused(reply: Any, code: int, *words: str) -> None:
    assert reply.ErrorCode == code, f"expected ErrorCode {code}, got {reply}"
    for word in words:
        assert word in reply.ErrorMessage, f"{word!r} not in {reply.ErrorMessage!r}"


def envelope(inner: str, declarations: str = "") -> bytes:
    return (
        f'<?xml version="1.0"?><SOAP-ENV:Envelope xmlns:SOAP-ENV="{SOAP_ENV}" {declarations}>'
        f"<SOAP-ENV:Body>{inner}</SOAP-ENV:Body></SOAP-ENV:Envelope>"
    ).encode()


def post(url: str, body: bytes, timeout: float = 5.0) -> tuple[int, etree._Element]:
    """POST a raw envelope; the HTTP status and the first element of the response Body."""
    response = requests.post(
        url, data=body, headers={"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'}, timeout=timeout
    )
    document = etree.fromstring(response.content)
    return response.status_code, document.find(f"{{{SOAP_ENV}}}Body")[0]


def field(element: etree._Element, name: str) -> str:
    return element.findtext(f"{{{ECC}}}{name}") or ""


# -- fixtures ---------------------------------------------------------------------------------------


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "configs"
    directory.mkdir()
    for name in CONFIG_FILES:
        (directory / name).write_text("<Setup/>\n")
    return directory


@pytest.fixture
def start_ecc(config_dir: Path) -> Iterator[Any]:
    """Factory: start a simulator with extra options; all are killed at the end."""
    started: list[EccSimulator] = []

    def start(*options: str) -> EccSimulator:
        sim = EccSimulator(config_dir, "--sources", ",".join(SOURCES), *options)
        started.append(sim)
        return sim.start()

    yield start
    for sim in started:
        sim.kill()


@pytest.fixture
def sim(start_ecc: Any) -> EccSimulator:
    return start_ecc("--transition-time", str(TRANSITION_TIME))


@pytest.fixture
def ecc(sim: EccSimulator) -> Any:
    return make_service(sim.url)


@pytest.fixture
def router() -> Iterator[FakeRouter]:
    server = FakeRouter()
    yield server
    server.close()


# -- WSDL -------------------------------------------------------------------------------------------


def test_wsdl_is_served_with_this_servers_address(sim: EccSimulator) -> None:
    for path in ("/?wsdl", "/ecc?wsdl"):
        with urllib.request.urlopen(sim.url + path, timeout=5) as response:
            document = etree.fromstring(response.read())
        locations = [e.get("location") for e in document.iter("{http://schemas.xmlsoap.org/wsdl/soap/}address")]
        assert locations == [sim.url]
        # A client can also be built from the served WSDL alone.
        served = zeep.Client(wsdl=sim.url + path, transport=Transport(timeout=5, operation_timeout=5))
        assert served.service.GetState().State == IDLE


def test_other_get_is_not_found(sim: EccSimulator) -> None:
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(sim.url + "/", timeout=5)
    assert error.value.code == 404


# -- state machine ----------------------------------------------------------------------------------


def test_starts_idle(ecc: Any) -> None:
    reply = ecc.GetState()
    assert (reply.ErrorCode, reply.State, reply.Transition) == (0, IDLE, 0)


def test_every_transition_in_turn(start_ecc: Any, router: FakeRouter) -> None:
    ecc = make_service(start_ecc("--transition-time", str(SLOW_TRANSITION_TIME)).url)
    step(ecc, "Describe", DESCRIBED, DESCRIBING)
    step(ecc, "Prepare", PREPARED, PREPARING)
    step(ecc, "Configure", READY, CONFIGURING, table=data_links(("CoBo[0]", router.port)))
    before = int(time.time())
    step(ecc, "Start", RUNNING, STARTING)
    step(ecc, "Pause", PAUSED, PAUSING)
    step(ecc, "Resume", RUNNING, RESUMING)
    step(ecc, "Stop", READY, STOPPING)
    step(ecc, "Breakup", PREPARED, BREAKING_UP)
    step(ecc, "Undo", DESCRIBED, RESETTING)
    step(ecc, "Undo", IDLE, RESETTING)

    start, stop = router.lines
    word, source, run_time = start.split()
    assert (word, source) == ("START", "CoBo[0]")
    assert before <= int(run_time) <= time.time() + 1
    assert stop == "STOP CoBo[0]"


def test_start_and_stop_reach_every_linked_router(ecc: Any) -> None:
    routers = [FakeRouter() for _ in SOURCES]
    try:
        to_ready(ecc, data_links(*((source, r.port) for source, r in zip(SOURCES, routers, strict=True))))
        step(ecc, "Start", RUNNING)
        step(ecc, "Stop", READY)
        for source, r in zip(SOURCES, routers, strict=True):
            assert [line.split()[:2] for line in r.lines] == [["START", source], ["STOP", source]]
    finally:
        for r in routers:
            r.close()


JUMPS_FROM_IDLE = {
    "Prepare": ("cannot Prepare from Idle", "Describe first"),
    "Configure": ("cannot Configure from Idle", "Describe, then Prepare first"),
    "Start": ("cannot Start from Idle", "Describe, then Prepare, then Configure first"),
    "Stop": ("cannot Stop from Idle",),
    "Pause": ("cannot Pause from Idle",),
    "Resume": ("cannot Resume from Idle",),
    "Breakup": ("cannot Breakup from Idle",),
    "Undo": ("cannot Undo from Idle", "already Idle"),
}


def test_jumps_from_idle_are_refused(ecc: Any) -> None:
    for operation, words in JUMPS_FROM_IDLE.items():
        refused(getattr(ecc, operation)(configID=config_id(), table=data_links(("CoBo[0]", 1))), 1, *words)
        reply = ecc.GetState()
        assert (reply.ErrorCode, reply.State, reply.Transition) == (0, IDLE, 0)


def test_same_state_and_jumps_are_refused_along_the_way(ecc: Any, router: FakeRouter) -> None:
    table = data_links(("CoBo[0]", router.port))
    step(ecc, "Describe", DESCRIBED)
    refused(ecc.Describe(configID=config_id(), table=""), 1, "already Described")
    refused(
        ecc.Start(configID=config_id(), table=""), 1, "cannot Start from Described", "Prepare, then Configure first"
    )
    step(ecc, "Prepare", PREPARED)
    refused(ecc.Prepare(configID=config_id(), table=""), 1, "already Prepared")
    refused(ecc.Breakup(configID=config_id(), table=""), 1, "already Prepared")
    step(ecc, "Configure", READY, table=table)
    refused(ecc.Configure(configID=config_id(), table=table), 1, "already Ready")
    refused(ecc.Stop(configID=config_id(), table=""), 1, "already Ready")
    refused(ecc.Undo(configID=config_id(), table=""), 1, "cannot Undo from Ready", "Breakup first")
    step(ecc, "Start", RUNNING)
    refused(ecc.Start(configID=config_id(), table=""), 1, "already Running")
    refused(ecc.Resume(configID=config_id(), table=""), 1, "already Running")
    step(ecc, "Pause", PAUSED)
    refused(ecc.Stop(configID=config_id(), table=""), 1, "cannot Stop from Paused", "Resume first")
    assert settled(ecc, PAUSED).ErrorCode == 0


def test_calls_during_a_transition_are_refused(start_ecc: Any) -> None:
    ecc = make_service(start_ecc("--transition-time", str(SLOW_TRANSITION_TIME)).url)
    assert ecc.Describe(configID=config_id(), table="").ErrorCode == 0
    refused(ecc.Undo(configID=config_id(), table=""), 2, "Describe in progress")
    refused(ecc.Prepare(configID=config_id(), table=""), 2, "Describe in progress")
    settled(ecc, DESCRIBED)


def test_missing_config_files_are_refused(ecc: Any, config_dir: Path) -> None:
    refused(ecc.Describe(configID=config_id(describe="nosuch"), table=""), 3, "describe-nosuch.xcfg", "not found")
    assert settled(ecc, IDLE).ErrorCode == 0
    step(ecc, "Describe", DESCRIBED)
    refused(ecc.Prepare(configID=config_id(prepare="gone"), table=""), 3, "prepare-gone.xcfg")
    step(ecc, "Prepare", PREPARED)
    (config_dir / "configure-experiment.xcfg").unlink()
    refused(ecc.Configure(configID=config_id(), table=data_links(("CoBo[0]", 1))), 3, "configure-experiment.xcfg")
    settled(ecc, PREPARED)


def test_bad_config_ids_are_refused(ecc: Any) -> None:
    refused(ecc.Describe(configID="", table=""), 3, "empty configID")
    refused(ecc.Describe(configID="<ConfigId><oops", table=""), 3, "not well-formed")
    no_describe = '<ConfigId><SubConfigId type="prepare">experiment</SubConfigId></ConfigId>'
    refused(ecc.Describe(configID=no_describe, table=""), 3, "names no describe config")
    refused(
        ecc.Describe(configID=config_id(describe="../configs/describe-cobo0"), table=""), 3, "bad describe config name"
    )
    # The user-facing form describe/prepare/configure is accepted too.
    step(ecc, "Describe", DESCRIBED, configID="cobo0/experiment/experiment")


def test_data_link_set_is_checked(ecc: Any) -> None:
    step(ecc, "Describe", DESCRIBED)
    step(ecc, "Prepare", PREPARED)
    refused(
        ecc.Configure(configID=config_id(), table=data_links(("CoBo[7]", 46005))), 4, "CoBo[7]", "unknown data source"
    )
    refused(ecc.Configure(configID=config_id(), table=""), 4, "DataLinkSet")
    refused(ecc.Configure(configID=config_id(), table="<DataLinkSet/>"), 4, "no DataLink")
    twice = data_links(("CoBo[0]", 46005), ("CoBo[0]", 46006))
    refused(ecc.Configure(configID=config_id(), table=twice), 4, "CoBo[0] twice")
    bad_type = data_links(("CoBo[0]", 46005)).replace('type="TCP"', 'type="UDP"')
    refused(ecc.Configure(configID=config_id(), table=bad_type), 4, "'UDP'")
    settled(ecc, PREPARED)


def test_get_config_ids_lists_every_permutation(ecc: Any, config_dir: Path) -> None:
    def listed() -> set[tuple[str, str, str]]:
        reply = ecc.GetConfigIDs()
        assert reply.ErrorCode == 0
        root = etree.fromstring(reply.Text)
        assert root.tag == "ConfigIdList"
        return {
            tuple(config.findtext(f"SubConfigId[@type='{kind}']") for kind in ("describe", "prepare", "configure"))
            for config in root.iter("ConfigId")
        }

    assert listed() == {
        (describe, prepare, "experiment") for describe in ("cobo0", "cobos-all") for prepare in ("experiment", "pulser")
    }
    (config_dir / "configure-pulser.xcfg").write_text("<Setup/>\n")
    (config_dir / "notes.txt").write_text("not a config\n")
    assert len(listed()) == 8


def test_empty_config_dir_lists_nothing(start_ecc: Any, config_dir: Path) -> None:
    for path in config_dir.iterdir():
        path.unlink()
    ecc = make_service(start_ecc().url)
    reply = ecc.GetConfigIDs()
    assert reply.ErrorCode == 0
    assert etree.fromstring(reply.Text).tag == "ConfigIdList"
    assert len(etree.fromstring(reply.Text)) == 0


def test_per_transition_times(start_ecc: Any) -> None:
    ecc = make_service(start_ecc("--transition-time", "0.05", "--transition-time", "describe=0.8").url)
    began = time.monotonic()
    step(ecc, "Describe", DESCRIBED)
    assert time.monotonic() - began >= 0.75
    began = time.monotonic()
    step(ecc, "Undo", IDLE)
    assert time.monotonic() - began < 0.6


# -- request encodings ------------------------------------------------------------------------------

ESCAPED_ID = config_id().replace("<", "&lt;").replace(">", "&gt;")


def _links_escaped(port: int) -> str:
    return data_links(("CoBo[0]", port)).replace("<", "&lt;").replace(">", "&gt;")


ENCODINGS = {
    # what zeep sends: prefixed operation and children
    "ns0-prefix": (
        'xmlns:ns0="urn:ecc"',
        "<ns0:{op}><ns0:configID>{cid}</ns0:configID><ns0:table>{table}</ns0:table></ns0:{op}>",
        lambda port: (ESCAPED_ID, _links_escaped(port)),
    ),
    "default-namespace": (
        "",
        '<{op} xmlns="urn:ecc"><configID>{cid}</configID><table>{table}</table></{op}>',
        lambda port: (ESCAPED_ID, _links_escaped(port)),
    ),
    "no-namespace": (
        "",
        "<{op}><configID>{cid}</configID><table>{table}</table></{op}>",
        lambda port: (ESCAPED_ID, _links_escaped(port)),
    ),
    "unescaped-xml": (
        'xmlns:ecc="urn:ecc"',
        "<ecc:{op}><configID>{cid}</configID><table>{table}</table></ecc:{op}>",
        lambda port: (config_id(), data_links(("CoBo[0]", port))),
    ),
    "unescaped-xml-default-namespace": (
        "",
        '<{op} xmlns="urn:ecc"><configID>{cid}</configID><table>{table}</table></{op}>',
        lambda port: (config_id(), data_links(("CoBo[0]", port))),
    ),
}


@pytest.mark.parametrize("encoding", list(ENCODINGS))
def test_request_encodings(start_ecc: Any, router: FakeRouter, encoding: str) -> None:
    sim = start_ecc("--transition-time", "0.05")
    ecc = make_service(sim.url)
    declarations, template, payloads = ENCODINGS[encoding]
    cid, table = payloads(router.port)
    for operation, state in (("Describe", DESCRIBED), ("Prepare", PREPARED), ("Configure", READY), ("Start", RUNNING)):
        status, response = post(sim.url, envelope(template.format(op=operation, cid=cid, table=table), declarations))
        assert status == 200
        assert response.tag == f"{{{ECC}}}ResponseText"
        assert field(response, "ErrorCode") == "0", field(response, "ErrorMessage")
        settled(ecc, state)
    assert router.lines[0].startswith("START CoBo[0] ")

    for inner in ('<ns0:GetState xmlns:ns0="urn:ecc"/>', '<GetState xmlns="urn:ecc"/>', "<GetState/>"):
        status, response = post(sim.url, envelope(inner))
        assert status == 200
        assert response.tag == f"{{{ECC}}}ResponseState"
        assert [child.tag for child in response] == [
            f"{{{ECC}}}{name}" for name in ("ErrorCode", "ErrorMessage", "State", "Transition")
        ]
        assert field(response, "State") == str(RUNNING)


def test_response_text_carries_escaped_xml(sim: EccSimulator) -> None:
    raw = requests.post(sim.url, data=envelope("<GetConfigIDs/>"), timeout=5).content
    assert b"&lt;ConfigIdList&gt;" in raw
    _, response = post(sim.url, envelope("<GetConfigIDs/>"))
    assert etree.fromstring(field(response, "Text")).tag == "ConfigIdList"


def test_unknown_operation_is_a_fault(sim: EccSimulator) -> None:
    status, response = post(sim.url, envelope('<ns0:Frobnicate xmlns:ns0="urn:ecc"/>'))
    assert status == 500
    assert response.tag == f"{{{SOAP_ENV}}}Fault"
    assert response.findtext("faultcode") == "SOAP-ENV:Client"
    assert "Frobnicate" in response.findtext("faultstring")


def test_operation_in_a_foreign_namespace_is_a_fault(sim: EccSimulator) -> None:
    status, response = post(sim.url, envelope('<GetState xmlns="urn:other"/>'))
    assert status == 500
    assert "urn:other" in response.findtext("faultstring")


def test_malformed_xml_is_a_fault(sim: EccSimulator) -> None:
    for body in (b"<SOAP-ENV:Envelope><unclosed>", b"", b"not xml at all"):
        status, response = post(sim.url, body)
        assert status == 500
        assert response.tag == f"{{{SOAP_ENV}}}Fault"
        assert "malformed XML" in response.findtext("faultstring")
    # The server carries on.
    assert make_service(sim.url).GetState().State == IDLE


def test_not_an_envelope_is_a_fault(sim: EccSimulator) -> None:
    response = requests.post(sim.url, data=b"<GetState/>", timeout=5)
    assert response.status_code == 500
    assert b"not a SOAP 1.1 Envelope" in response.content


def test_any_path_takes_soap_requests(sim: EccSimulator) -> None:
    assert make_service(sim.url + "/ecc").GetState().State == IDLE


# -- data routers -------------------------------------------------------------------------------------


def test_unreachable_router_fails_start(ecc: Any) -> None:
    dead_port = free_port()  # nothing listens there
    to_ready(ecc, data_links(("CoBo[1]", dead_port)))
    assert ecc.Start(configID=config_id(), table="").ErrorCode == 0
    reply = settled(ecc, READY)
    refused(reply, 5, "Start failed", "DataRouter0", f"127.0.0.1:{dead_port}", "CoBo[1]", "unreachable")
    assert ecc.GetState().ErrorCode == 5  # sticky until the next accepted transition call
    step(ecc, "Breakup", PREPARED)


def test_failed_start_stops_the_routers_already_started(ecc: Any, router: FakeRouter) -> None:
    to_ready(ecc, data_links(("CoBo[0]", router.port), ("CoBo[1]", free_port())))
    assert ecc.Start(configID=config_id(), table="").ErrorCode == 0
    refused(settled(ecc, READY), 5, "CoBo[1]")
    assert [line.split()[0] for line in router.lines] == ["START", "STOP"]


def test_router_refusing_fails_start(ecc: Any) -> None:
    grumpy = FakeRouter(reply="ERR disk full")
    try:
        to_ready(ecc, data_links(("Mutant[master]", grumpy.port)))
        assert ecc.Start(configID=config_id(), table="").ErrorCode == 0
        refused(settled(ecc, READY), 5, "answered 'ERR disk full' to START", "Mutant[master]")
    finally:
        grumpy.close()


def test_unreachable_router_fails_stop(ecc: Any) -> None:
    router = FakeRouter()
    to_ready(ecc, data_links(("CoBo[0]", router.port)))
    step(ecc, "Start", RUNNING)
    router.close()
    assert ecc.Stop(configID=config_id(), table="").ErrorCode == 0
    refused(settled(ecc, RUNNING), 5, "Stop failed", "CoBo[0]")


# -- fault injection ----------------------------------------------------------------------------------


def special(ecc: Any, command: str) -> Any:
    return ecc.Special(command=command, table="")


def test_sim_fail_makes_a_transition_fail_at_its_end(ecc: Any) -> None:
    assert special(ecc, "sim:fail Describe 42 CoBo[0] did not answer").ErrorCode == 0
    assert ecc.Describe(configID=config_id(), table="").ErrorCode == 0
    reply = settled(ecc, IDLE)
    assert (reply.ErrorCode, reply.ErrorMessage) == (42, "CoBo[0] did not answer")
    # Only the next call fails; an accepted call clears the error.
    assert ecc.Describe(configID=config_id(), table="").ErrorCode == 0
    assert ecc.GetState().ErrorCode == 0
    settled(ecc, DESCRIBED)


def test_sim_fail_refuses_the_next_plain_call(ecc: Any) -> None:
    assert special(ecc, "sim:fail GetState 7 ECC busy").ErrorCode == 0
    reply = ecc.GetState()
    assert (reply.ErrorCode, reply.ErrorMessage, reply.State) == (7, "ECC busy", IDLE)
    assert ecc.GetState().ErrorCode == 0
    assert special(ecc, "sim:fail getconfigids 8").ErrorCode == 0
    refused(ecc.GetConfigIDs(), 8, "injected failure of GetConfigIDs")


def test_sim_refuse_refuses_a_transition_at_once(ecc: Any) -> None:
    assert special(ecc, "sim:refuse Describe 9 no CoBo").ErrorCode == 0
    refused(ecc.Describe(configID=config_id(), table=""), 9, "no CoBo")
    assert settled(ecc, IDLE).ErrorCode == 0
    step(ecc, "Describe", DESCRIBED)


def test_sim_clear_drops_pending_faults_and_the_error(ecc: Any) -> None:
    special(ecc, "sim:fail Describe 42 boom")
    special(ecc, "sim:refuse GetConfigIDs 3 nope")
    assert special(ecc, "sim:clear").ErrorCode == 0
    assert ecc.GetConfigIDs().ErrorCode == 0
    step(ecc, "Describe", DESCRIBED)
    special(ecc, "sim:fail Undo 11 stuck")
    ecc.Undo(configID="", table="")
    assert settled(ecc, DESCRIBED).ErrorCode == 11
    special(ecc, "sim:clear")
    assert ecc.GetState().ErrorCode == 0


BAD_SPECIALS = (
    "hello", "sim:fail", "sim:fail Describe", "sim:fail Describe zero", "sim:fail Describe 0", "sim:fail Special 3",
    "sim:fail Nothing 3", "sim:refuse Special 3", "sim:hang", "sim:hang soon", "sim:hang -1", "sim:exit now",
)  # fmt: skip


def test_bad_special_commands_are_refused(ecc: Any) -> None:
    for command in BAD_SPECIALS:
        assert special(ecc, command).ErrorCode == 6, command
    assert ecc.GetState().State == IDLE


def test_sim_hang_answers_nothing_until_it_ends(sim: EccSimulator) -> None:
    ecc = make_service(sim.url)
    impatient = make_service(sim.url, timeout=0.3)
    assert special(ecc, "sim:hang 1.0").ErrorCode == 0
    began = time.monotonic()
    with pytest.raises(requests.exceptions.Timeout):
        impatient.GetState()
    assert time.monotonic() - began < 0.8
    # A patient client has its connection closed unanswered when the hang ends.
    with pytest.raises(requests.exceptions.ConnectionError):
        make_service(sim.url, timeout=5).GetState()
    assert time.monotonic() - began >= 0.9
    assert ecc.GetState().State == IDLE


def test_sim_hang_does_not_execute_what_arrives_meanwhile(sim: EccSimulator) -> None:
    ecc = make_service(sim.url)
    special(ecc, "sim:hang 0.5")
    with pytest.raises(requests.exceptions.ConnectionError):
        ecc.Describe(configID=config_id(), table="")
    assert settled(ecc, IDLE).ErrorCode == 0


def test_sim_clear_ends_a_hang(sim: EccSimulator) -> None:
    ecc = make_service(sim.url)
    impatient = make_service(sim.url, timeout=0.3)
    special(ecc, "sim:hang 60")
    with pytest.raises(requests.exceptions.Timeout):
        impatient.GetState()
    assert special(ecc, "sim:clear").ErrorCode == 0  # sim: commands are still answered
    assert impatient.GetState().State == IDLE


def test_sim_exit_kills_the_process_unanswered(sim: EccSimulator, ecc: Any) -> None:
    with pytest.raises(requests.exceptions.ConnectionError):
        special(ecc, "sim:exit")
    assert sim.wait_exit() == 3


def test_server_exit_answers_then_exits_cleanly(sim: EccSimulator, ecc: Any) -> None:
    reply = ecc.ServerExit()
    assert reply.ErrorCode == 0
    assert sim.wait_exit() == 0


def test_server_exit_can_be_refused(sim: EccSimulator, ecc: Any) -> None:
    special(ecc, "sim:refuse ServerExit 12 not now")
    refused(ecc.ServerExit(), 12, "not now")
    assert ecc.GetState().State == IDLE


def test_sigterm_exits_zero(sim: EccSimulator) -> None:
    assert sim.process is not None
    sim.process.send_signal(signal.SIGTERM)
    assert sim.wait_exit() == 0


# -- command line -------------------------------------------------------------------------------------


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "simulators.ecc.server", *args],
        capture_output=True, text=True, env=project_env(), cwd=ROOT, timeout=30,
    )  # fmt: skip


def test_missing_config_dir_is_an_error(tmp_path: Path) -> None:
    done = _run("--port", "0", "--config-dir", str(tmp_path / "nowhere"))
    assert done.returncode == 2
    assert "--example-configs" in done.stderr


@pytest.mark.parametrize(
    "args",
    [("--transition-time", "warp=1"), ("--transition-time", "-1"), ("--sources", "CoBo[0],,x"), ("--port", "70000")],
)
def test_bad_arguments_are_refused(args: tuple[str, ...]) -> None:
    done = _run(*args)
    assert done.returncode == 2
    assert "error" in done.stderr


def test_example_configs(tmp_path: Path) -> None:
    directory = tmp_path / "new" / "configs"
    sim = EccSimulator(directory, "--example-configs", "--transition-time", "0.05")
    directory.parent.mkdir(parents=True)
    try:
        ecc = make_service(sim.start().url)
        assert sorted(path.name for path in directory.iterdir()) == [
            "configure-experiment.xcfg", "describe-cobo0.xcfg", "describe-cobos-all.xcfg", "prepare-experiment.xcfg",
        ]  # fmt: skip
        assert len(etree.fromstring(ecc.GetConfigIDs().Text)) == 2
        # The default data source is CoBo[0].
        step(ecc, "Describe", DESCRIBED)
        step(ecc, "Prepare", PREPARED)
        refused(ecc.Configure(configID=config_id(), table=data_links(("CoBo[1]", 1))), 4, "controls CoBo[0])")
    finally:
        sim.kill()
