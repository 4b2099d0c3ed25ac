"""Easy setup, Tango side: the DAQ's devices for a :class:`~db.app.DaqSetup`, written with the application database as one unit.

`dcs daq easy-setup` computes a setup with :func:`db.app.plan_easy_setup`;
this module turns it into Tango devices and writes both databases::

    plan = plan_tango(db, setup)                 # what the Tango database must hold; nothing written
    apply(db, store, setup, plan)                # both databases, or neither

Devices, named from the setup's names (``ECC`` -> ``daq/ecc/0``, ``ECC3``
-> ``daq/ecc/3``, ``ECC_mutant`` -> ``daq/ecc/mutant``; ``DataRouter2`` ->
``daq/router/2``, ``DataRouter_mutant`` -> ``daq/router/mutant``):

- ``EccServer`` per ECC server: ``Host``, ``Port``, ``DataLinks`` (one line
  ``SOURCE ROUTER IP PORT TYPE`` per data source);
- ``DataRouter`` per data source: ``Host`` (the router's address); a new
  device gets the SSH and file properties of the DAQ's existing routers
  (``SSH_PROPERTIES`` and ``ROUTER_SHARED``), overridden by the options;
- the ``DaqSequencer``'s ``EccServers``, ``MutantServers``, ``DataRouters``.

A device that stays keeps its other properties (``Workdir``, ``Timeout``);
devices of the previous DAQ (the sequencer's lists) that the new setup does
not name are deleted. New devices go into the server that runs the
previous ones of their class.

Atomic: the application database's transaction stays open while the Tango
database is written (:meth:`db.app.RunStore.replacing_setup`); what the
Tango database held for every device touched is read first, and written
back if anything fails (a Tango write, the application database refusing or
failing to commit), so neither database is left half-changed.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import tango

from db.app import DaqSetup, RunStore, StoreError

SEQUENCER = "daq/sequencer/1"
ECC_CLASS = "EccServer"
ROUTER_CLASS = "DataRouter"
SEQUENCER_CLASS = "DaqSequencer"
SSH_PROPERTIES = ("SshPort", "SshUser", "KeyFile", "KnownHosts", "SshConfig")
# What a new data router inherits from the DAQ's existing ones, and a new ECC server from its peers.
ROUTER_SHARED = (*SSH_PROPERTIES, "ConfigDir", "LogFile", "ProcessName", "PollPeriod")
ECC_SHARED = ("Timeout",)
IDLE_STATES = ("Off", "Idle")


class SetupError(Exception):
    """Easy setup was refused or failed; the message says why and what each database holds now."""


@dataclass(frozen=True)
class SshOptions:
    """SSH settings for the data routers; ``None`` keeps what the devices (or their peers) have."""

    user: str | None = None
    key_file: str | None = None
    known_hosts: str | None = None

    def properties(self) -> dict[str, list[str]]:
        given = {"SshUser": self.user, "KeyFile": self.key_file, "KnownHosts": self.known_hosts}
        return {name: [value] for name, value in given.items() if value is not None}


@dataclass(frozen=True)
class DeviceWrite:
    """One device easy setup writes: the properties it sets (others are left as they are)."""

    name: str
    device_class: str
    server: str
    properties: dict[str, list[str]]
    exists: bool
    deletions: tuple[str, ...] = ()  # properties to remove (Tango stores no empty list: the default applies)


@dataclass(frozen=True)
class TangoPlan:
    """What the Tango database must hold for a setup, and how that differs from what it holds."""

    tango_host: str
    sequencer: str
    writes: tuple[DeviceWrite, ...]
    removals: tuple[tuple[str, str, str], ...]  # (device, class, server) of the previous DAQ, dropped
    ecc_devices: dict[str, str]  # ECC server name -> device
    router_devices: dict[str, str]  # data router name -> device
    previous_ecc: tuple[str, ...]  # ECC server devices that exist and change or go (must be Idle)
    changes: tuple[str, ...]  # for people: "+ device ...", "~ property ...", "- device ..."

    @property
    def servers(self) -> list[str]:
        """Device servers whose devices change (to restart so that they serve the new ones)."""
        names = {w.server for w in self.writes} | {server for _, _, server in self.removals}
        return sorted(names)

    @property
    def touched(self) -> list[str]:
        return [w.name for w in self.writes] + [name for name, _, _ in self.removals]


@dataclass
class DeviceSnapshot:
    """What the Tango database held for one device (``device_class`` None: no such device)."""

    name: str
    device_class: str | None
    server: str | None
    properties: dict[str, list[str]] = field(default_factory=dict)
    attribute_properties: dict[str, dict[str, list[str]]] = field(default_factory=dict)


@dataclass
class Snapshot:
    """The Tango database's content for every device a plan touches, to write back on failure."""

    tango_host: str
    devices: list[DeviceSnapshot]
    new_servers: list[str]  # servers the plan adds devices to that did not exist (deleted again on restore)


@dataclass(frozen=True)
class EccActivity:
    """An ECC server device as easy setup and experiment changes see it."""

    device: str
    cobo_state: str | None  # None: could not be read
    transitioning: bool
    problem: str = ""

    @property
    def busy(self) -> bool:
        return self.transitioning or (self.cobo_state is not None and self.cobo_state not in IDLE_STATES)

    def reason(self) -> str:
        if self.transitioning:
            return f"{self.device} is changing state (from {self.cobo_state})"
        return f"{self.device} is {self.cobo_state}"


# --------------------------------------------------------------------------------------------- names
def ecc_device(name: str) -> str:
    """``ECC`` -> ``daq/ecc/0``, ``ECC3`` -> ``daq/ecc/3``, ``ECC_mutant`` -> ``daq/ecc/mutant``."""
    return f"daq/ecc/{_member(name, 'ECC')}"


def router_device(name: str) -> str:
    """``DataRouter2`` -> ``daq/router/2``, ``DataRouter_mutant`` -> ``daq/router/mutant``."""
    return f"daq/router/{_member(name, 'DataRouter')}"


def _member(name: str, prefix: str) -> str:
    rest = name[len(prefix) :] if name.startswith(prefix) else name
    member = re.sub(r"[^a-z0-9_.\-]+", "_", rest.strip("_ ").lower()).strip("_")
    return member or "0"


# --------------------------------------------------------------------------------------------- reading
def device_info(db: tango.Database, name: str) -> tuple[str, str] | None:
    """(class, server) of a device in the database, or None."""
    try:
        info = db.get_device_info(name)
    except tango.DevFailed as exc:
        if exc.args[0].reason == "DB_DeviceNotDefined":
            return None
        raise
    return info.class_name, info.ds_full_name


def device_properties(db: tango.Database, name: str) -> dict[str, list[str]]:
    names = list(db.get_device_property_list(name, "*").value_string)
    if not names:
        return {}
    return {k: list(v) for k, v in db.get_device_property(name, names).items()}


def attribute_properties(db: tango.Database, name: str) -> dict[str, dict[str, list[str]]]:
    """Every attribute property, ``__value`` (memorized values) included."""
    found = tango.StdStringVector()
    db.get_device_attribute_list(name, found)
    if not list(found):
        return {}
    props = db.get_device_attribute_property(name, list(found))
    return {attr: {p: list(v) for p, v in values.items()} for attr, values in props.items() if values}


def daq_devices(db: tango.Database, sequencer: str = SEQUENCER) -> tuple[list[str], list[str], list[str]]:
    """The DAQ as its sequencer's properties list it: (ECC server devices, MuTAnT ones, router devices)."""
    props = db.get_device_property(sequencer, ["EccServers", "MutantServers", "DataRouters"])
    routers = [line.split()[0] for line in props["DataRouters"] if line.split()]
    return list(props["EccServers"]), list(props["MutantServers"]), routers


def ecc_activity(devices: Iterable[str], timeout: float = 2.0) -> list[EccActivity]:
    """CoboState and Transitioning of each ECC server device, read now."""
    out = []
    for name in devices:
        try:
            proxy = tango.DeviceProxy(name)
            proxy.set_timeout_millis(int(timeout * 1000))
            labels = list(proxy.get_attribute_config("CoboState").enum_labels)
            cobo, moving = proxy.read_attributes(["CoboState", "Transitioning"])
        except tango.DevFailed as exc:
            out.append(EccActivity(name, None, False, exc.args[0].desc.strip().splitlines()[0]))
            continue
        if cobo.has_failed or cobo.quality == tango.AttrQuality.ATTR_INVALID:
            out.append(EccActivity(name, None, False, "its ECC server does not answer"))
            continue
        value = int(cobo.value)
        state = labels[value] if 0 <= value < len(labels) else str(value)
        out.append(EccActivity(name, state, bool(not moving.has_failed and moving.value)))
    return out


def busy_reason(activity: Iterable[EccActivity]) -> str | None:
    """Why the DAQ is not idle ("daq/ecc/0 is Described, ..."), or None when every readable server is Idle or Off."""
    busy = [a.reason() for a in activity if a.busy]
    return ", ".join(busy) if busy else None


# --------------------------------------------------------------------------------------------- planning
def plan_tango(
    db: tango.Database, setup: DaqSetup, sequencer: str = SEQUENCER, ssh: SshOptions | None = None
) -> TangoPlan:
    """The devices and properties ``setup`` needs, compared with what the database holds (nothing is written)."""
    ssh = ssh or SshOptions()
    sequencer = sequencer.lower()
    seq_info = device_info(db, sequencer)
    if seq_info is not None and seq_info[0] != SEQUENCER_CLASS:
        raise SetupError(f"{sequencer} is a {seq_info[0]} device (in {seq_info[1]}), not a {SEQUENCER_CLASS}")
    old_ecc, _, old_routers = daq_devices(db, sequencer) if seq_info else ([], [], [])
    old_ecc = [n.lower() for n in old_ecc]
    old_routers = [n.lower() for n in old_routers]
    instance = seq_info[1].split("/", 1)[1] if seq_info else "daq"
    known = {name: device_info(db, name) for name in dict.fromkeys(old_ecc + old_routers)}

    def server_and_template(devices: list[str], cls: str) -> tuple[str, dict[str, list[str]]]:
        for name in devices:
            info = known.get(name)
            if info is not None and info[0] == cls:
                return info[1], device_properties(db, name)
        return f"{cls}/{instance}", {}

    ecc_server, ecc_template = server_and_template(old_ecc, ECC_CLASS)
    router_server, router_template = server_and_template(old_routers, ROUTER_CLASS)
    ecc_devices = {e.name: ecc_device(e.name) for e in setup.ecc_servers}
    router_devices = {s.router_name: router_device(s.router_name) for s in setup.data_sources}
    _check_unique("ECC server", ecc_devices)
    _check_unique("data router", router_devices)

    wanted: list[tuple[str, str, str, dict[str, list[str]], dict[str, list[str]]]] = []
    for ecc in setup.ecc_servers:
        links = [
            f"{s.name} {s.router_name} {s.router_ip} {s.router_port} {s.router_type}"
            for s in setup.sources_of(ecc.name)
        ]
        props = {"Host": [ecc.host], "Port": [str(ecc.port)], "DataLinks": links}
        wanted.append((ecc_devices[ecc.name], ECC_CLASS, ecc_server, props, _shared(ecc_template, ECC_SHARED)))
    for source in setup.data_sources:
        props = {"Host": [source.router_ip], **ssh.properties()}
        inherited = {**_shared(router_template, ROUTER_SHARED), **ssh.properties()}
        wanted.append((router_devices[source.router_name], ROUTER_CLASS, router_server, props, inherited))
    mutants = [
        ecc_devices[e.name]
        for e in setup.ecc_servers
        if (sources := setup.sources_of(e.name)) and all(s.is_mutant for s in sources)
    ]
    seq_props = {
        "EccServers": list(ecc_devices.values()),
        "MutantServers": mutants,
        "DataRouters": [f"{router_devices[s.router_name]} {ecc_devices[s.ecc_server]}" for s in setup.data_sources],
    }
    wanted.append(
        (sequencer, SEQUENCER_CLASS, seq_info[1] if seq_info else f"{SEQUENCER_CLASS}/{instance}", seq_props, {})
    )

    writes: list[DeviceWrite] = []
    changes: list[str] = []
    for name, cls, server, props, inherited in wanted:
        info = device_info(db, name) if name not in known else known[name]
        if info is not None and info[0] != cls:
            raise SetupError(
                f"{name} already exists as a {info[0]} device (in {info[1]}); easy setup needs it for a {cls}: "
                f"remove or rename that device first"
            )
        if info is None:
            props = {**inherited, **props}
            changes.append(f"+ device {name} ({cls} in {server})")
            have: dict[str, list[str]] = {}
        else:
            server = info[1]
            have = device_properties(db, name)
        deletions = tuple(prop for prop, value in props.items() if not value and prop in have)
        props = {prop: value for prop, value in props.items() if value}
        for prop in deletions:
            changes.append(f"- property {name}/{prop}: {_show(have[prop])}")
        for prop, value in props.items():
            if prop not in have:
                changes.append(f"+ property {name}/{prop}: {_show(value)}")
            elif have[prop] != value:
                changes.append(f"~ property {name}/{prop}: {_show(have[prop])} -> {_show(value)}")
        writes.append(DeviceWrite(name, cls, server, props, info is not None, deletions))
    keep = {w.name for w in writes}
    removals = []
    for name in dict.fromkeys(old_ecc + old_routers):
        info = known[name]
        if name not in keep and info is not None and info[0] in (ECC_CLASS, ROUTER_CLASS):
            removals.append((name, info[0], info[1]))
            changes.append(f"- device {name} ({info[0]} in {info[1]})")
    in_use = [w.name for w in writes if w.device_class == ECC_CLASS and w.exists]
    return TangoPlan(
        tango_host=_tango_host(db), sequencer=sequencer, writes=tuple(writes), removals=tuple(removals),
        ecc_devices=ecc_devices, router_devices=router_devices, previous_ecc=tuple(dict.fromkeys(old_ecc + in_use)),
        changes=tuple(changes),
    )  # fmt: skip


def _shared(template: dict[str, list[str]], names: tuple[str, ...]) -> dict[str, list[str]]:
    return {name: template[name] for name in names if name in template}


def _check_unique(kind: str, devices: dict[str, str]) -> None:
    seen: dict[str, str] = {}
    for name, device in devices.items():
        if device in seen:
            raise SetupError(f"{kind}s {seen[device]!r} and {name!r} would both be device {device}; rename one")
        seen[device] = name


def _show(value: list[str]) -> str:
    return value[0] if len(value) == 1 else "[" + ", ".join(value) + "]"


def _tango_host(db: tango.Database) -> str:
    try:
        return f"{db.get_db_host()}:{db.get_db_port()}"
    except (tango.DevFailed, AttributeError):
        return "?"


# --------------------------------------------------------------------------------------------- writing
def snapshot(db: tango.Database, plan: TangoPlan) -> Snapshot:
    """What the database holds now for every device ``plan`` touches."""
    devices = []
    for name in plan.touched:
        info = device_info(db, name)
        if info is None:
            devices.append(DeviceSnapshot(name, None, None))
        else:
            devices.append(
                DeviceSnapshot(name, info[0], info[1], device_properties(db, name), attribute_properties(db, name))
            )
    existing = {s.lower() for s in db.get_server_list("*").value_string}
    new_servers = sorted({w.server for w in plan.writes if w.server.lower() not in existing})
    return Snapshot(plan.tango_host, devices, new_servers)


def write(db: tango.Database, plan: TangoPlan) -> None:
    """Write ``plan`` (removals first, then devices and their properties)."""
    for name, _, _ in plan.removals:
        db.delete_device(name)
    for device in plan.writes:
        if not device.exists:
            info = tango.DbDevInfo()
            info.name, info._class, info.server = device.name, device.device_class, device.server
            db.add_device(info)
        if device.properties:
            db.put_device_property(device.name, device.properties)
        if device.deletions:
            db.delete_device_property(device.name, list(device.deletions))


def restore(db: tango.Database, before: Snapshot) -> None:
    """Make every device of ``before`` hold exactly what it held; raises SetupError naming what could not be."""
    problems = []
    for dev in before.devices:
        try:
            _restore_device(db, dev)
        except tango.DevFailed as exc:
            problems.append(f"{dev.name}: {exc.args[0].desc.strip()}")
    for server in before.new_servers:
        try:
            if _only_admin(db, server):
                db.delete_server(server)
        except tango.DevFailed as exc:
            problems.append(f"server {server}: {exc.args[0].desc.strip()}")
    if problems:
        raise SetupError("; ".join(problems))


def _only_admin(db: tango.Database, server: str) -> bool:
    """The server exists and holds no device but its admin device."""
    if server.lower() not in {s.lower() for s in db.get_server_list(server).value_string}:
        return False
    pairs = list(db.get_device_class_list(server).value_string)
    return all(device.lower().startswith("dserver/") for device in pairs[::2])


def _restore_device(db: tango.Database, dev: DeviceSnapshot) -> None:
    info = device_info(db, dev.name)
    if dev.device_class is None:
        if info is not None:
            db.delete_device(dev.name)
        return
    if info != (dev.device_class, dev.server):
        if info is not None:
            db.delete_device(dev.name)
        new = tango.DbDevInfo()
        new.name, new._class, new.server = dev.name, dev.device_class, dev.server
        db.add_device(new)
    now = device_properties(db, dev.name)
    if dev.properties:
        db.put_device_property(dev.name, dev.properties)
    extra = [p for p in now if p not in dev.properties]
    if extra:
        db.delete_device_property(dev.name, extra)
    now_attr = attribute_properties(db, dev.name)
    if dev.attribute_properties:
        db.put_device_attribute_property(dev.name, dev.attribute_properties)
    gone = {
        attr: [p for p in props if p not in dev.attribute_properties.get(attr, {})] for attr, props in now_attr.items()
    }
    gone = {attr: props for attr, props in gone.items() if props}
    if gone:
        db.delete_device_attribute_property(dev.name, gone)


def apply(
    db: tango.Database, store: RunStore, setup: DaqSetup, plan: TangoPlan, backup_dir: Path | None = None
) -> None:
    """Write ``setup`` to the application database and ``plan`` to the Tango database: both, or neither.

    Refused while an ECC server of the DAQ being replaced is out of Idle, or a
    run is running. On failure the Tango database is put back as it was
    (if even that fails, what it held is saved as JSON in ``backup_dir`` and
    the message says where) and :class:`SetupError` says what happened.
    """
    why = busy_reason(ecc_activity(plan.previous_ecc))
    if why:
        raise SetupError(f"easy setup refused: {why}; bring every ECC server back to Idle first (`dcs daq reset`)")
    try:
        running = store.current_run()
    except StoreError:
        running = None
    if running is not None:
        raise SetupError(
            f"easy setup refused: run {running.number} of {running.experiment!r} is running; stop it first"
        )
    before: Snapshot | None = None
    try:
        with store.replacing_setup(setup):
            before = snapshot(db, plan)
            write(db, plan)
    except BaseException as exc:
        cause = _cause(exc)
        if before is None:
            raise SetupError(f"easy setup not applied: {cause}; neither database was changed") from exc
        try:
            restore(db, before)
        except Exception as again:
            saved = _save(before, backup_dir)
            raise SetupError(
                f"easy setup failed: {cause}; the application database kept the previous setup, but putting the Tango "
                f"database back failed too ({_cause(again)}): what it held is saved in {saved}"
            ) from exc
        if not isinstance(exc, Exception):
            raise
        raise SetupError(
            f"easy setup not applied: {cause}; the Tango database was put back as it was and the application "
            "database kept the previous setup"
        ) from exc


def _cause(exc: BaseException) -> str:
    if isinstance(exc, tango.DevFailed):
        return f"Tango database: {exc.args[0].desc.strip()}"
    if isinstance(exc, StoreError):
        return f"application database: {exc}"
    if isinstance(exc, SetupError):
        return str(exc)
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    return repr(exc)


def _save(before: Snapshot, directory: Path | None) -> Path:
    directory = directory or Path.cwd()
    path = directory / f"daq-setup-tango-backup-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(asdict(before), indent=2))
    return path


# --------------------------------------------------------------------------------------------- after
def restart_servers(plan: TangoPlan, timeout: float = 30.0) -> dict[str, str]:
    """Restart each running server of ``plan`` (its admin device's RestartServer) so it serves the new devices.

    Returns per server "restarted" or why not (not running, refused).
    """
    outcome: dict[str, str] = {}
    for server in plan.servers:
        admin = tango.DeviceProxy(f"dserver/{server}")
        admin.set_timeout_millis(3000)
        try:
            admin.ping()
        except tango.DevFailed:
            outcome[server] = "not running (start it with `dcs up`)"
            continue
        try:
            admin.command_inout("RestartServer")
            outcome[server] = "restarted"
        except tango.DevFailed as exc:
            outcome[server] = f"restart refused: {exc.args[0].desc.strip()}"
    deadline = time.monotonic() + timeout
    for device in (w.name for w in plan.writes if outcome.get(w.server) == "restarted"):
        while not _answers(device):
            if time.monotonic() > deadline:
                server = next(w.server for w in plan.writes if w.name == device)
                outcome[server] = f"restarted, but {device} did not answer within {timeout:.0f} s"
                break
            time.sleep(0.2)
    return outcome


def _answers(device: str) -> bool:
    try:
        proxy = tango.DeviceProxy(device)
        proxy.set_timeout_millis(1000)
        proxy.ping()
        return True
    except tango.DevFailed:
        return False


def data(plan: TangoPlan) -> dict[str, Any]:
    """The plan as plain data (for --json)."""
    return {
        "tango_host": plan.tango_host,
        "sequencer": plan.sequencer,
        "devices": [asdict(w) for w in plan.writes],
        "removed": [{"device": n, "class": c, "server": s} for n, c, s in plan.removals],
        "changes": list(plan.changes),
    }
