"""Simulator of a 16-channel SiPM bias high-voltage crate (see docs/hv-protocol.md)."""
