"""Simulated filter wheels: ``filterwheel/0`` in front of the VIS camera, ``filterwheel/1`` of the NIR camera.

Datasheet
    InterfaceVersion 3 (Platform 7). ``Names`` and ``FocusOffsets`` (focuser
    steps, one per slot) below; ``Position`` is zero based.

Motion
    Setting ``Position`` turns the wheel the short way round, taking
    ``--filter-time`` seconds per slot passed; ``Position`` reads -1 until
    the filter is in place. Setting the slot it is already on does nothing.
    A position outside [0, slots) is 0x401; a new position while moving is
    0x40B (wait until ``Position`` is not -1).
"""

from __future__ import annotations

import logging

from simulators.alpaca.device import (
    INVALID_OPERATION,
    AlpacaDevice,
    AlpacaError,
    SimClock,
    get,
    in_range,
    integer,
    interface,
    put,
)

log = logging.getLogger("simulators.alpaca")

DEFAULT_FILTER_TIME = 1.0  # s per slot

VIS_FILTERS = (("g", 0), ("r", 12), ("i", 25), ("z", 40), ("y", 52), ("Open", -8))
NIR_FILTERS = (("J", 0), ("H", 18), ("Open", -10), ("Dark", 0))

INTERFACE = interface("FocusOffsets:G Names:G Position:GP")


class FilterWheel(AlpacaDevice):
    """A filter wheel: named slots with focus offsets, moved one slot every ``filter_time`` seconds."""

    device_type = "filterwheel"
    interface_version = 3
    standard = INTERFACE
    state_members = ("Position",)

    def __init__(
        self,
        number: int,
        clock: SimClock,
        filters: tuple[tuple[str, int], ...],
        label: str,
        filter_time: float = DEFAULT_FILTER_TIME,
    ) -> None:
        super().__init__(number, f"DCS {label} filter wheel simulator", f"Simulated {label} filter wheel", clock)
        self.names = [name for name, _ in filters]
        self.focus_offsets = [offset for _, offset in filters]
        self.filter_time = filter_time
        self.position = 0
        self._target = 0
        self._arrives = 0.0  # simulated time the wheel reaches ``_target``

    def update(self, now: float) -> None:
        super().update(now)
        if self.position != self._target and now >= self._arrives:
            self.position = self._target
            log.info("%s: filter %d (%s) in place", self.path, self.position, self.names[self.position])

    @get("Names")
    def get_names(self) -> list[str]:
        return list(self.names)

    @get("FocusOffsets")
    def get_focus_offsets(self) -> list[int]:
        return list(self.focus_offsets)

    @get("Position")
    def get_position(self) -> int:
        return self.position if self.position == self._target else -1

    @put("Position", Position=integer)
    def set_position(self, position: int) -> None:
        slots = len(self.names)
        in_range("Position", position, 0, slots - 1)
        if self.position != self._target:
            raise AlpacaError(INVALID_OPERATION, f"{self.path}: Position refused: the wheel is moving (wait for it)")
        passed = abs(position - self.position)
        passed = min(passed, slots - passed)
        self._target = position
        self._arrives = self.clock.now() + passed * self.filter_time
        if passed:
            log.info("%s: moving to filter %d (%s), %d slot(s)", self.path, position, self.names[position], passed)
