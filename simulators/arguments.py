"""Argument types every simulator's command line shares (argparse ``type=``)."""

from __future__ import annotations

import argparse
import math


def port(text: str) -> int:
    """A TCP port, 0 meaning "pick a free one"."""
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be 0 to 65535, got {text}")
    return value


def positive_float(text: str) -> float:
    """A finite number above zero (periods, durations)."""
    value = float(text)
    if not value > 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value
