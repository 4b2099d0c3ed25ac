"""Data links: which data router each data source sends to, and the simulated start/stop handshake.

``Configure`` carries the links in its ``table`` argument::

    <DataLinkSet><DataLink><DataSender id="CoBo[0]"/>
      <DataRouter name="DataRouter0" ipAddress="10.0.0.10" port="46005" type="TCP"/>
    </DataLink></DataLinkSet>

A real CoBo streams its data to the router. The simulator stands that in by
a one-line handshake over TCP with each linked router, one connection per
data source: ``START <source-id> <run-unix-time>`` (integer seconds) when a
run starts, ``STOP <source-id>`` when it stops; the router answers ``OK``.
"""

from __future__ import annotations

import socket
from collections.abc import Collection
from dataclasses import dataclass

from lxml import etree

ROUTER_TYPES: tuple[str, ...] = ("ICE", "TCP", "FDT", "ZBUF")
ROUTER_TIMEOUT = 3.0  # s, to connect to a data router and again to read its answer
MAX_REPLY = 1024  # bytes; a router answer longer than this is garbage

_PARSER = etree.XMLParser(resolve_entities=False, no_network=True)


class DataLinkError(Exception):
    """A DataLinkSet the server refuses; the message names the offending link or source."""


class RouterError(Exception):
    """A data router that could not be reached or did not answer ``OK``."""


@dataclass(frozen=True)
class DataLink:
    """One data source and the data router it sends to."""

    source: str
    router_name: str
    ip_address: str
    port: int
    router_type: str

    def __str__(self) -> str:
        return f"data router {self.router_name} at {self.ip_address}:{self.port} for {self.source}"


def parse_data_link_set(text: str, sources: Collection[str]) -> list[DataLink]:
    """The links of a DataLinkSet document; every sender must be one of ``sources``.

    Namespaces are ignored, so the document may arrive in any of the request encodings.
    """
    if not text.strip():
        raise DataLinkError("table is empty (Configure needs the DataLinkSet XML)")
    try:
        root = etree.fromstring(text.strip().encode(), _PARSER)
    except etree.XMLSyntaxError as error:
        raise DataLinkError(f"DataLinkSet is not well-formed XML: {error}") from None
    if etree.QName(root).localname != "DataLinkSet":
        raise DataLinkError(f"table root element is <{etree.QName(root).localname}>, expected <DataLinkSet>")
    links: list[DataLink] = []
    for number, element in enumerate(_children(root, "DataLink"), start=1):
        link = _parse_link(element, number, sources)
        if any(other.source == link.source for other in links):
            raise DataLinkError(f"DataLinkSet links data source {link.source} twice")
        links.append(link)
    if not links:
        raise DataLinkError("DataLinkSet has no DataLink")
    return links


def _children(element: etree._Element, name: str) -> list[etree._Element]:
    return [child for child in element.iterchildren(etree.Element) if etree.QName(child).localname == name]


def _parse_link(element: etree._Element, number: int, sources: Collection[str]) -> DataLink:
    senders = _children(element, "DataSender")
    routers = _children(element, "DataRouter")
    if len(senders) != 1 or len(routers) != 1:
        raise DataLinkError(f"DataLink {number} needs exactly one DataSender and one DataRouter")
    source = senders[0].get("id", "")
    if source not in sources:
        known = ", ".join(sources)
        raise DataLinkError(f"unknown data source {source!r} in DataLink {number} (this ECC server controls {known})")
    router = routers[0]
    missing = [name for name in ("name", "ipAddress", "port", "type") if not router.get(name)]
    if missing:
        raise DataLinkError(f"DataRouter of {source} lacks {', '.join(missing)}")
    port_text = router.get("port", "")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise DataLinkError(f"DataRouter of {source} has a bad port {port_text!r}")
    router_type = router.get("type", "").upper()
    if router_type not in ROUTER_TYPES:
        raise DataLinkError(
            f"DataRouter of {source} has type {router.get('type')!r} (one of {', '.join(ROUTER_TYPES)})"
        )
    return DataLink(source, router.get("name", ""), router.get("ipAddress", ""), int(port_text), router_type)


def tell_router(link: DataLink, line: str, timeout: float = ROUTER_TIMEOUT) -> None:
    """Send one request line to the router of ``link``; RouterError unless it answers ``OK``."""
    word = line.split()[0]
    try:
        with socket.create_connection((link.ip_address, link.port), timeout=timeout) as sock:
            sock.sendall(line.encode() + b"\n")
            reply = _read_line(sock)
    except OSError as error:
        raise RouterError(f"{link} unreachable: {error}") from None
    if reply != "OK":
        raise RouterError(f"{link} answered {reply!r} to {word} (expected 'OK')")


def _read_line(sock: socket.socket) -> str:
    data = b""
    while b"\n" not in data and len(data) < MAX_REPLY:
        chunk = sock.recv(MAX_REPLY)
        if not chunk:
            break
        data += chunk
    return data.split(b"\n", 1)[0].decode(errors="replace").strip()
