"""Persistence: the facility file, the Tango database (embedded or external)."""
