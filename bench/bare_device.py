"""A bare pytango device: the reference the DCS devices are measured against.

Nothing but pytango's high-level API: one float read/write attribute kept in
memory (``Value``), one read-only float (``Reading``), and an event source
(``Counter``) that the command ``PushEvents(n)`` advances n times as fast as
it can from a thread, pushing a change event each time, so that a subscriber
can count what it received against what was pushed and spot gaps.

The benchmarks register it in the facility's Tango database (class
``BareDevice``, server ``BareDevice/<instance>``) and start it as its own
process, so both it and the DCS devices go through the same database and
CORBA/ZMQ path::

    TANGO_HOST=127.0.0.1:PORT python bench/bare_device.py bench
"""

from __future__ import annotations

import sys
import threading
import time

from tango import AttrWriteType, DevState
from tango.server import Device, attribute, command, run

PUSH_LIMIT_S = 15.0  # PushEvents stops after this long whatever the count: benchmarks stay bounded


class BareDevice(Device):
    """One float r/w attribute, one read-only float and a counter that pushes change events."""

    def init_device(self) -> None:
        super().init_device()
        self._value = 0.0
        self._counter = 0
        self._pushed = 0
        self._push_seconds = 0.0
        self._pushing = False
        self._thread: threading.Thread | None = None
        self.set_change_event("Counter", True, False)
        self.set_state(DevState.ON)

    @attribute(dtype=float, access=AttrWriteType.READ_WRITE, unit="V", format="%.3f")
    def Value(self) -> float:
        return self._value

    @Value.write
    def Value(self, value: float) -> None:
        self._value = value

    @attribute(dtype=float, unit="V", format="%.3f")
    def Reading(self) -> float:
        return self._value

    @attribute(dtype=int, doc="Advanced and pushed (change event) by PushEvents")
    def Counter(self) -> int:
        return self._counter

    @attribute(dtype=int, doc="Events pushed by the last PushEvents so far")
    def Pushed(self) -> int:
        return self._pushed

    @attribute(dtype=float, unit="s", doc="How long the last PushEvents took to push them all")
    def PushSeconds(self) -> float:
        return self._push_seconds

    @attribute(dtype=bool, doc="True while PushEvents is pushing")
    def Pushing(self) -> bool:
        return self._pushing

    @command(
        dtype_in=int,
        doc_in=f"events to push (1 .. 10,000,000); returns at once, pushing goes on in a thread for {PUSH_LIMIT_S:g} s at most",
    )
    def PushEvents(self, count: int) -> None:
        if self._pushing:
            raise RuntimeError("PushEvents is already running")
        count = max(1, min(int(count), 10_000_000))
        self._pushed = 0
        self._push_seconds = 0.0
        self._pushing = True
        self._thread = threading.Thread(target=self._push, args=(count,), daemon=True)
        self._thread.start()

    def _push(self, count: int) -> None:
        started = time.perf_counter()
        deadline = started + PUSH_LIMIT_S
        try:
            for _ in range(count):
                if self._pushed % 1000 == 0 and time.perf_counter() > deadline:
                    break
                self._counter += 1
                self.push_change_event("Counter", self._counter)
                self._pushed += 1
        finally:
            self._push_seconds = time.perf_counter() - started
            self._pushing = False


def main(args: list[str] | None = None) -> None:
    run((BareDevice,), args=["BareDevice", *(sys.argv[1:] if args is None else args)])


if __name__ == "__main__":
    main()
