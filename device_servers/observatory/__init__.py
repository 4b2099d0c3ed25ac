"""Robotic observatory: the weather PLC, weather synthesis, Alpaca mount, dome, cameras, filter wheels, the conductor."""
