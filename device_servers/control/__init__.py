"""Detector control: text-protocol instruments (HV crates, data loggers, command-line tools)."""
