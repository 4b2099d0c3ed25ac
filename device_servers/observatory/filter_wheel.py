"""FilterWheel (``obs/filterwheel/<camera>``): a camera's filter wheel, an ASCOM Alpaca filter wheel."""

from __future__ import annotations

from typing import Any

from tango import AttrWriteType, DevState
from tango.server import attribute, command

from device_servers.common.device import Poll
from device_servers.common.serve import serve
from device_servers.observatory.alpaca_device import AlpacaDevice


class FilterWheel(AlpacaDevice):
    """A filter wheel: Position is -1 while it moves."""

    DEVICE_TYPE = "filterwheel"
    MEMBERS = (("Position", "position", -1),)

    def create_link(self) -> Any:
        link = super().create_link()
        self.add_poll(Poll("Names", 30.0, read=lambda: list(self.alpaca().get("names")), empty=[]))
        return link

    @attribute(dtype=int, access=AttrWriteType.READ_WRITE, doc="Slot, from 0; -1 while moving", abs_change="1")
    def Position(self) -> tuple[Any, float, Any]:
        return self.polled("Position")

    @Position.write
    def Position(self, slot: int) -> None:
        names = self.value("Names")
        if names is not None and len(names) and not 0 <= slot < len(names):
            raise self.refusal(f"move to slot {slot}", f"the wheel has slots 0 to {len(names) - 1}")
        self.alpaca_action(f"move to slot {slot}", "position", Position=slot)

    @attribute(dtype=(str,), max_dim_x=32, doc="Filter names, by slot")
    def Names(self) -> tuple[Any, float, Any]:
        return self.polled("Names")

    @attribute(dtype=str, doc="The filter in the beam, or 'moving'")
    def Filter(self) -> str:
        return self._filter_name()

    def _filter_name(self) -> str:
        position, names = self.value("Position"), list(self.value("Names") or [])
        return "moving" if position < 0 else names[position] if position < len(names) else f"slot {position}"

    @command(dtype_in=str, doc_in="Filter name (one of Names)")
    def SetFilter(self, name: str) -> None:
        names = list(self.value("Names") or [])
        if name not in names:
            raise self.refusal("SetFilter", f"no filter {name!r} (filters: {', '.join(names)})")
        self.alpaca_action(f"SetFilter {name}", "position", Position=names.index(name))

    def refine_condition(self, state: DevState, status: str) -> tuple[DevState, str]:
        if state != DevState.ON:
            return state, status
        moving = self.value("Position") < 0
        self.set_moving(moving)
        return (DevState.MOVING, "moving") if moving else (DevState.ON, f"filter {self._filter_name()}")


def main(args: list[str] | None = None) -> None:
    """Console script ``FilterWheel <instance>``."""
    serve((FilterWheel,), "FilterWheel", args)


if __name__ == "__main__":
    main()
