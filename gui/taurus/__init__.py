"""Taurus panels for DCS devices."""
