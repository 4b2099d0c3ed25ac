"""DataRouter: the dataRouter process of one data source, on its worker node, reached over SSH.

It watches that the process is alive and where it writes, whether its
staging directory is clean (no ``.graw`` left from a run), and at the end
of a run files the data into ``<experiment>/run_NNNN/`` with the config
files beside it.
"""

from __future__ import annotations

import os
import posixpath
from typing import Any

import tango
from tango import DevState
from tango.server import attribute, command, device_property

from device_servers.common.device import DcsDevice, Poll, ReplyError
from device_servers.common.serve import serve
from device_servers.daq.ssh_link import SshLink, quote

# One SSH round trip per poll: every dataRouter process with its working directory and .graw count.
SURVEY = (
    "for p in $(pgrep -x {name}); do d=$(readlink /proc/$p/cwd); "
    "echo \"proc|$p|$d|$(find \"$d\" -maxdepth 1 -name '*.graw' | wc -l)\"; done; "
    "{workdir_check}echo end"
)


class DataRouter(DcsDevice):
    """One data source's dataRouter process on a worker node."""

    Host = device_property(dtype=str, doc="Worker node (a name from ~/.ssh/config works too)")
    SshPort = device_property(dtype=int, default_value=0, doc="SSH port (0: from ~/.ssh/config, else 22)")
    SshUser = device_property(dtype=str, default_value="", doc="SSH user (empty: from ~/.ssh/config, else this user)")
    KeyFile = device_property(dtype=str, default_value="", doc="Private key (empty: ~/.ssh/config or default keys)")
    KnownHosts = device_property(dtype=str, default_value="~/.ssh/known_hosts", doc="known_hosts file checked for the node's host key")
    SshConfig = device_property(dtype=str, default_value="~/.ssh/config", doc="OpenSSH client config honoured for Host")
    Workdir = device_property(dtype=str, default_value="", doc="The router's working (staging) directory; empty: the running process's")
    ConfigDir = device_property(dtype=str, default_value="", doc="Where the ECC config files are, as seen from the node")
    LogFile = device_property(dtype=str, default_value="dataRouter.log", doc="Router log, relative to the working directory")
    ProcessName = device_property(dtype=str, default_value="dataRouter")
    PollPeriod = device_property(dtype=float, default_value=2.0)

    def init_device(self) -> None:
        self._survey: dict[str, Any] | None = None
        self._staging_generation = 0  # advanced by OrganizeFiles: older surveys no longer describe staging
        super().init_device()

    def get_device_properties(self, *args: Any, **kwargs: Any) -> None:
        super().get_device_properties(*args, **kwargs)
        # Paths may name $DCS_STATE_DIR (the demo's worker node keeps its keys there).
        for name in ("KeyFile", "KnownHosts", "Workdir", "ConfigDir"):
            setattr(self, name, os.path.expandvars(getattr(self, name)))

    def create_link(self) -> SshLink:
        if not self.Host:
            raise ValueError("property Host is not set (the worker node)")
        for name, read, empty in (
            ("Online", lambda: self._surveyed()["online"], False),
            ("StagingClean", lambda: self._surveyed()["graw"] == 0, False),
            ("GrawFiles", lambda: self._surveyed()["graw"], 0),
            ("WorkingDir", lambda: self._surveyed()["workdir"], ""),
        ):
            self.add_poll(Poll(name, self.PollPeriod, read=read, empty=empty))
        return SshLink(self.Host, self.SshPort, self.SshUser, self.KeyFile, self.KnownHosts, ssh_config=self.SshConfig)

    # ------------------------------------------------------------------ attributes
    @attribute(dtype=bool, doc="The dataRouter process is alive on the node")
    def Online(self) -> tuple[Any, float, Any]:
        return self.polled("Online")

    @attribute(dtype=bool, doc="No .graw file left in the staging directory (a run may start)")
    def StagingClean(self) -> tuple[Any, float, Any]:
        return self.polled("StagingClean")

    @attribute(dtype=int, doc=".graw files in the staging directory")
    def GrawFiles(self) -> tuple[Any, float, Any]:
        return self.polled("GrawFiles")

    @attribute(dtype=str, doc="The router's working directory")
    def WorkingDir(self) -> tuple[Any, float, Any]:
        return self.polled("WorkingDir")

    # ------------------------------------------------------------------ commands
    @command(dtype_in=(str,), doc_in="[experiment, run number]", dtype_out=int, doc_out="files moved")
    def OrganizeFiles(self, argument: list[str]) -> int:
        experiment, run = self._experiment_and_run("OrganizeFiles", argument)
        target = self._run_dir(experiment, run)
        workdir = quote(self._workdir("OrganizeFiles"))
        script = (
            f"mkdir -p {quote(target)} && "
            f"find {workdir} -maxdepth 1 -name '*.graw' -exec mv -t {quote(target)} {{}} + && "
            f"echo $(find {quote(target)} -maxdepth 1 -name '*.graw' | wc -l) "
            f"$(find {workdir} -maxdepth 1 -name '*.graw' | wc -l)"
        )
        out = self.hardware_call("OrganizeFiles", lambda: self._ssh().check(script, timeout=60))
        filed, left = (int(n) for n in out.split())
        # Publish the staging state now: a run may be started right after, before the next poll.
        self._staging_generation += 1
        self.publish("GrawFiles", left)
        self.publish("StagingClean", left == 0)
        return filed

    @command(dtype_in=(str,), doc_in="[experiment, run number, describe/prepare/configure]", dtype_out=(str,), doc_out="files copied")
    def BackupConfigs(self, argument: list[str]) -> list[str]:
        if len(argument) != 3:
            raise self.refusal("BackupConfigs", "give [experiment, run number, describe/prepare/configure]")
        experiment, run = self._experiment_and_run("BackupConfigs", argument[:2])
        parts = argument[2].split("/")
        if len(parts) != 3:
            raise self.refusal("BackupConfigs", f"{argument[2]!r} is not describe/prepare/configure")
        if not self.ConfigDir:
            raise self.refusal("BackupConfigs", "property ConfigDir (where the ECC config files are) is not set")
        files = [f"{kind}-{name}.xcfg" for kind, name in zip(("describe", "prepare", "configure"), parts, strict=True)]
        target = self._run_dir(experiment, run)
        sources = " ".join(quote(posixpath.join(self.ConfigDir, f)) for f in files)
        self.hardware_call("BackupConfigs", lambda: self._ssh().check(f"mkdir -p {quote(target)} && cp {sources} {quote(target)}/"))
        return [posixpath.join(target, f) for f in files]

    @command(dtype_in=int, doc_in="lines", dtype_out=str, doc_out="the end of the router's log")
    def TailLog(self, lines: int) -> str:
        if not 1 <= lines <= 10000:
            raise self.refusal("TailLog", "lines must be between 1 and 10000")
        path = self.LogFile if posixpath.isabs(self.LogFile) else posixpath.join(self._workdir("TailLog"), self.LogFile)
        return self.hardware_call("TailLog", lambda: self._ssh().check(f"tail -n {lines} {quote(path)}"))

    # ------------------------------------------------------------------ the work
    def begin_poll_cycle(self) -> None:
        self._survey = None

    def _ssh(self) -> SshLink:
        assert isinstance(self.link, SshLink)
        return self.link

    def _surveyed(self) -> dict[str, Any]:
        if self._survey is not None and self._survey["generation"] != self._staging_generation:
            self._survey = None  # taken before the files were moved: it would publish a dirty staging again
        if self._survey is None:
            generation = self._staging_generation
            workdir_check = (
                f"echo \"dir|$(find {quote(self.Workdir)} -maxdepth 1 -name '*.graw' 2>/dev/null | wc -l)\"; "
                if self.Workdir else ""
            )  # fmt: skip
            out = self._ssh().run(SURVEY.format(name=quote(self.ProcessName), workdir_check=workdir_check)).stdout
            self._survey = {**self._parse_survey(out), "generation": generation}
        return self._survey

    def _parse_survey(self, out: str) -> dict[str, Any]:
        if not out.rstrip().endswith("end"):
            raise ReplyError(f"unexpected answer from {self.Host}: {out[-80:]!r}")
        processes = []
        graw_in_workdir = None
        for line in out.splitlines():
            fields = line.split("|")
            if fields[0] == "proc" and len(fields) == 4:
                processes.append((int(fields[1]), fields[2], int(fields[3])))
            elif fields[0] == "dir" and len(fields) == 2:
                graw_in_workdir = int(fields[1])
        if self.Workdir:
            mine = [p for p in processes if posixpath.normpath(p[1]) == posixpath.normpath(self.Workdir)]
            graw = graw_in_workdir if graw_in_workdir is not None else 0
            return {"online": bool(mine), "graw": graw, "workdir": self.Workdir}
        if len(processes) > 1:
            raise ReplyError(f"{len(processes)} {self.ProcessName} processes on {self.Host}: set the Workdir property")
        if not processes:
            return {"online": False, "graw": 0, "workdir": ""}
        _, workdir, graw = processes[0]
        return {"online": True, "graw": graw, "workdir": workdir}

    def _workdir(self, operation: str) -> str:
        workdir = self.Workdir or self.polled("WorkingDir")[0]
        if not workdir:
            raise self.refusal(operation, f"working directory unknown: no {self.ProcessName} running on {self.Host} and no Workdir property")
        return workdir

    def _experiment_and_run(self, operation: str, argument: list[str]) -> tuple[str, int]:
        if len(argument) != 2 or not argument[1].isdigit():
            raise self.refusal(operation, "give [experiment, run number]")
        experiment = argument[0]
        if not experiment or "/" in experiment or experiment.startswith("."):
            raise self.refusal(operation, f"{experiment!r} is not a usable experiment name")
        return experiment, int(argument[1])

    def _run_dir(self, experiment: str, run: int) -> str:
        return posixpath.join(self._workdir("organize"), experiment, f"run_{run:04d}")

    def refine_condition(self, state: DevState, status: str) -> tuple[DevState, str]:
        online, _, quality = self.polled("Online")
        if quality == tango.AttrQuality.ATTR_INVALID or state != DevState.ON:
            return state, status
        where = f"{self.ProcessName} on {self.Host}"
        if not online:
            return DevState.FAULT, f"{where}: not running" + (f" (expected in {self.Workdir})" if self.Workdir else "")
        clean = "staging clean" if self.polled("StagingClean")[0] else f"{self.polled('GrawFiles')[0]} .graw files in staging"
        return DevState.ON, f"{where}: running in {self.polled('WorkingDir')[0]}; {clean}"



def main(args: list[str] | None = None) -> None:
    """Console script ``DataRouter <instance>``."""
    serve((DataRouter,), "DataRouter", args)


if __name__ == "__main__":
    main()
