"""Simulated vendor command-line utilities that DCS device servers wrap."""
