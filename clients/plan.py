"""What `dcs up` asks the supervisor to run: the plan, built from a facility file.

The plan is a JSON file in the state directory. It lists every process
(the embedded Tango database if DCS runs one, the simulators, the device
servers) with its command line, environment, working directory, start-up
level, log file and how to tell that it is ready.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from db.facility import Facility
from device_servers.catalog import SERVERS

# Start-up levels: the database first, then simulators, then servers from their own level upwards.
DATABASE_LEVEL = -1
SIMULATOR_LEVEL = 0


@dataclass
class ProcessSpec:
    """One process the supervisor keeps running."""

    name: str
    kind: str  # "database", "simulator" or "server"
    argv: list[str]
    level: int
    cwd: str
    env: dict[str, str] = field(default_factory=dict)
    ready_tcp: str | None = None  # host:port that accepts connections once it is up
    devices: list[str] = field(default_factory=list)  # devices that answer once it is up

    @property
    def log_name(self) -> str:
        return self.name.replace("/", ".")


@dataclass
class Plan:
    """Everything one facility runs on this machine."""

    facility: str
    facility_file: str
    tango_host: str
    processes: list[ProcessSpec]

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(path)  # the supervisor never reads half a plan

    @classmethod
    def load(cls, path: Path) -> Plan:
        data: dict[str, Any] = json.loads(path.read_text())
        return cls(
            facility=data["facility"],
            facility_file=data["facility_file"],
            tango_host=data["tango_host"],
            processes=[ProcessSpec(**p) for p in data["processes"]],
        )

    def get(self, name: str) -> ProcessSpec | None:
        return next((p for p in self.processes if p.name == name), None)


def tool_path() -> str:
    """PATH for child processes: this interpreter's scripts first, so console scripts resolve."""
    return os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])


def build_plan(
    facility: Facility,
    facility_file: Path,
    tango_host: str,
    database: ProcessSpec | None = None,
) -> Plan:
    """The processes for ``facility``; ``database`` is the embedded Tango database, if DCS runs it."""
    base = str(facility_file.resolve().parent)
    processes = [database] if database is not None else []
    for name, sim in facility.simulators.items():
        argv = [sys.executable, "-m", sim.module] if sim.module else list(sim.command or [])
        argv += [str(a) for a in sim.args]
        processes.append(
            ProcessSpec(
                name=f"sim/{name}",
                kind="simulator",
                argv=argv,
                level=SIMULATOR_LEVEL,
                cwd=base,
                ready_tcp=f"{sim.host}:{sim.port}" if sim.port else None,
            )
        )
    for server, spec in facility.servers.items():
        executable, instance = server.split("/", 1)
        processes.append(
            ProcessSpec(
                name=server,
                kind="server",
                argv=[sys.executable, "-m", SERVERS[executable].module, instance],
                level=spec.level,
                cwd=base,
                devices=sorted(spec.devices),
            )
        )
    return Plan(facility.facility, str(facility_file.resolve()), tango_host, processes)
