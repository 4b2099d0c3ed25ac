"""Start a device server process the way Tango's Starter and `dcs up` both expect."""

from __future__ import annotations

import logging
import sys

from tango.server import Device, run


def serve(classes: tuple[type[Device], ...], executable: str, args: list[str] | None = None) -> None:
    """Run ``classes`` as server ``executable/<instance>``, whatever file Python started from.

    pytango names the server after ``argv[0]``; started as ``python -m module``
    that would be the module's file name, so the executable name is set here.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run(classes, args=[executable, *(sys.argv[1:] if args is None else args)])
