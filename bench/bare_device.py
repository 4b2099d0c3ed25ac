"""A bare pytango device: the reference the DCS devices are measured against.

Nothing but pytango's high-level API and the standard library: one float
read/write attribute kept in memory (``Value``), one read-only float
(``Reading``), a float read/write attribute whose write does the same hardware
round trip as a DCS write (``HardwareSetpoint``, below), and an event source
(``Counter``) that the command ``PushEvents(n)`` advances n times as fast as
it can from a thread, pushing a change event each time, so that a subscriber
can count what it received against what was pushed and spot gaps.

``HardwareSetpoint``: a write sends ``VSET 15 <value:.3f>`` to the HV crate
simulator (docs/hv-protocol.md) over one persistent TCP connection and
returns once the ``OK`` line is back; any other reply, a timeout or a closed
connection raises. The connection is opened at the first write (lazily), under
a lock, with TCP_NODELAY and a 1 s timeout like the DCS link, and dropped on
any error so that the next write reconnects. A read returns the last value
written (memory, no hardware call). The simulator's address comes from the
device properties ``SimulatorHost`` (default 127.0.0.1) and ``SimulatorPort``
(default 0: not configured, and a write says so). Channel 15 is used so the
reference never touches the channel the DCS device is measured on.

The benchmarks register it in the facility's Tango database (class
``BareDevice``, server ``BareDevice/<instance>``) and start it as its own
process, so both it and the DCS devices go through the same database and
CORBA/ZMQ path::

    TANGO_HOST=127.0.0.1:PORT python bench/bare_device.py bench
"""

from __future__ import annotations

import socket
import sys
import threading
import time

from tango import AttrWriteType, DevState
from tango.server import Device, attribute, command, device_property, run

PUSH_LIMIT_S = 15.0  # PushEvents stops after this long whatever the count: benchmarks stay bounded
HW_CHANNEL = 15  # the simulator channel HardwareSetpoint writes (the DCS benchmark uses channel 0)
HW_TIMEOUT_S = 1.0  # connect and reply timeout, as the DCS link (facilities/protocols/hv_crate.yaml: timeout)


class BareDevice(Device):
    """One float r/w attribute, one read-only float, a setpoint written to the simulator and a counter that pushes change events."""

    SimulatorHost = device_property(dtype=str, default_value="127.0.0.1", doc="HV simulator host, for HardwareSetpoint")
    SimulatorPort = device_property(dtype=int, default_value=0, doc="HV simulator port, for HardwareSetpoint (0: none)")

    def init_device(self) -> None:
        super().init_device()
        self._value = 0.0
        self._setpoint = 0.0
        self._sim_lock = threading.Lock()
        self._sim_sock: socket.socket | None = None
        self._sim_buffer = b""
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

    @attribute(
        dtype=float,
        access=AttrWriteType.READ_WRITE,
        unit="V",
        format="%.3f",
        doc=f"Write: VSET {HW_CHANNEL} <v> to the HV simulator, returns on its OK. Read: the last value written.",
    )
    def HardwareSetpoint(self) -> float:
        return self._setpoint

    @HardwareSetpoint.write
    def HardwareSetpoint(self, value: float) -> None:
        reply = self._simulator_query(f"VSET {HW_CHANNEL} {value:.3f}")
        if reply != "OK":
            raise RuntimeError(f"simulator refused VSET {HW_CHANNEL} {value:.3f}: {reply!r}")
        self._setpoint = value

    def _simulator_query(self, request: str) -> str:
        """One request line, one reply line, on the persistent connection; any failure drops the connection."""
        with self._sim_lock:
            try:
                if self._sim_sock is None:
                    if not self.SimulatorPort:
                        raise ConnectionError("no simulator configured (device property SimulatorPort)")
                    sock = socket.create_connection((self.SimulatorHost, self.SimulatorPort), timeout=HW_TIMEOUT_S)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    self._sim_sock, self._sim_buffer = sock, b""
                self._sim_sock.sendall(request.encode("ascii") + b"\n")
                while b"\n" not in self._sim_buffer:
                    chunk = self._sim_sock.recv(4096)
                    if not chunk:
                        raise ConnectionError("simulator closed the connection")
                    self._sim_buffer += chunk
            except OSError:
                self._close_simulator()
                raise
            line, _, self._sim_buffer = self._sim_buffer.partition(b"\n")
            return line.decode("ascii", errors="replace").rstrip("\r")

    def _close_simulator(self) -> None:
        if self._sim_sock is not None:
            try:
                self._sim_sock.close()
            except OSError:
                pass
        self._sim_sock, self._sim_buffer = None, b""

    def delete_device(self) -> None:
        with self._sim_lock:
            self._close_simulator()
        super().delete_device()

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
