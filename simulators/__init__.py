"""Simulated hardware for DCS: stand-ins for real devices and vendor tools."""
