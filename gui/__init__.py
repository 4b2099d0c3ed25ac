"""Operator interfaces: Taurus panels (gui/taurus) and, later, the web dashboard."""
