"""Tango device servers: one class per hardware kind (see device_servers/catalog.py)."""
