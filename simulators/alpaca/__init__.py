"""ASCOM Alpaca simulator: mount, dome, VIS/NIR cameras and filter wheels in one server (see simulators/alpaca/server.py)."""
