"""SOAP 1.1 envelopes of the ECC server, read and written with lxml.

Requests are read leniently, as the real server must: the operation element
and its children may be in ``urn:ecc`` under any prefix, in the default
namespace, or in no namespace; ``configID`` and ``table`` may carry their
XML escaped as text (the norm) or unescaped as child elements, which are
turned back into a string without namespaces. Responses are written
qualified in ``urn:ecc``, as the WSDL's ``elementFormDefault`` says.
"""

from __future__ import annotations

import functools
import importlib.resources
import re
from collections.abc import Collection, Sequence
from copy import deepcopy
from dataclasses import dataclass

from lxml import etree

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12_ENV = "http://www.w3.org/2003/05/soap-envelope"
ECC_NS = "urn:ecc"
WSDL_SOAP_NS = "http://schemas.xmlsoap.org/wsdl/soap/"

# Response element of each operation (the rest answer ResponseText).
RESPONSE_ELEMENTS = {"GetState": "ResponseState", "ServerExit": "Response"}

_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, remove_comments=True)
_WSDL_PARSER = etree.XMLParser(resolve_entities=False, no_network=True)
# Characters XML 1.0 cannot carry, even escaped.
_NOT_XML = re.compile("[^\u0009\u000a\u000d\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


class SoapFault(Exception):
    """A request answered by a SOAP Fault; ``code`` is Client, Server or VersionMismatch."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class SoapRequest:
    """The operation named by the Body's element and its children's string values by local name."""

    operation: str
    arguments: dict[str, str]


def parse_request(body: bytes, operations: Collection[str]) -> SoapRequest:
    """Read a request envelope; SoapFault if it is not one the server can answer."""
    try:
        envelope = etree.fromstring(body, _PARSER)
    except etree.XMLSyntaxError as error:
        raise SoapFault("Client", f"malformed XML: {error}") from None
    if envelope.tag == f"{{{SOAP12_ENV}}}Envelope":
        raise SoapFault("VersionMismatch", "SOAP 1.2 envelope; this server speaks SOAP 1.1")
    if envelope.tag != f"{{{SOAP_ENV}}}Envelope":
        raise SoapFault("Client", f"root element {envelope.tag} is not a SOAP 1.1 Envelope")
    body_element = envelope.find(f"{{{SOAP_ENV}}}Body")
    if body_element is None:
        raise SoapFault("Client", "SOAP Envelope has no Body")
    element = next(body_element.iterchildren(etree.Element), None)
    if element is None:
        raise SoapFault("Client", "SOAP Body is empty (expected an operation element)")
    name = etree.QName(element)
    if name.namespace not in (ECC_NS, None) or name.localname not in operations:
        raise SoapFault("Client", f"unknown operation {element.tag} (operations: {', '.join(operations)})")
    arguments = {etree.QName(child).localname: _string_value(child) for child in element.iterchildren(etree.Element)}
    return SoapRequest(name.localname, arguments)


def _string_value(element: etree._Element) -> str:
    """The string an argument carries: its text, or its child elements serialized back to XML."""
    children = list(element.iterchildren(etree.Element))
    if not children:
        return element.text or ""
    return "".join(_without_namespaces(child) for child in children)


def _without_namespaces(element: etree._Element) -> str:
    copy = deepcopy(element)
    for node in copy.iter(etree.Element):
        node.tag = etree.QName(node).localname
    etree.cleanup_namespaces(copy)
    return etree.tostring(copy, encoding="unicode", with_tail=False)


def response_envelope(operation: str, fields: Sequence[tuple[str, object]]) -> bytes:
    """The response of ``operation``, its fields in schema order."""
    envelope = etree.Element(f"{{{SOAP_ENV}}}Envelope", nsmap={"SOAP-ENV": SOAP_ENV, "ecc": ECC_NS})
    body = etree.SubElement(envelope, f"{{{SOAP_ENV}}}Body")
    response = etree.SubElement(body, f"{{{ECC_NS}}}{RESPONSE_ELEMENTS.get(operation, 'ResponseText')}")
    for name, value in fields:
        etree.SubElement(response, f"{{{ECC_NS}}}{name}").text = _NOT_XML.sub("?", str(value))
    return etree.tostring(envelope, xml_declaration=True, encoding="UTF-8")


def fault_envelope(fault: SoapFault) -> bytes:
    envelope = etree.Element(f"{{{SOAP_ENV}}}Envelope", nsmap={"SOAP-ENV": SOAP_ENV})
    body = etree.SubElement(envelope, f"{{{SOAP_ENV}}}Body")
    element = etree.SubElement(body, f"{{{SOAP_ENV}}}Fault")
    etree.SubElement(element, "faultcode").text = f"SOAP-ENV:{fault.code}"
    etree.SubElement(element, "faultstring").text = _NOT_XML.sub("?", fault.message)
    return etree.tostring(envelope, xml_declaration=True, encoding="UTF-8")


@functools.cache
def _wsdl_bytes() -> bytes:
    return importlib.resources.files("device_servers.daq").joinpath("ecc.wsdl").read_bytes()


def wsdl_document(location: str) -> bytes:
    """DCS's ECC WSDL with its soap:address pointing at ``location``."""
    document = etree.fromstring(_wsdl_bytes(), _WSDL_PARSER)
    for address in document.iter(f"{{{WSDL_SOAP_NS}}}address"):
        address.set("location", location)
    return etree.tostring(document, xml_declaration=True, encoding="UTF-8")
