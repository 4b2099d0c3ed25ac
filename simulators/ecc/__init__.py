"""Simulator of the GET ECC server (getEccSoapServer): SOAP 1.1 over HTTP (see simulators/ecc/server.py)."""
