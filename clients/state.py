"""The state directory (``var/`` by default): where a running facility keeps its files.

``tango_database.db`` (the embedded Tango database), ``plan.json``,
``supervisor.json`` and ``supervisor.pid``, ``tango_host`` (so later `dcs`
commands find the database without TANGO_HOST set), and ``log/``, one
file per process.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def default_state_dir() -> Path:
    return Path(os.environ.get("DCS_STATE_DIR", "var"))


class StateDir:
    """Paths of one state directory (created on first use)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).resolve()
        (self.root / "log").mkdir(parents=True, exist_ok=True)

    @property
    def plan(self) -> Path:
        return self.root / "plan.json"

    @property
    def supervisor_status(self) -> Path:
        return self.root / "supervisor.json"

    @property
    def supervisor_pid(self) -> Path:
        return self.root / "supervisor.pid"

    @property
    def tango_host_file(self) -> Path:
        return self.root / "tango_host"

    def log_file(self, name: str) -> Path:
        return self.root / "log" / f"{name.replace('/', '.')}.log"

    def running_supervisor(self) -> int | None:
        """The pid of this directory's live supervisor, if one runs."""
        try:
            pid = int(self.supervisor_pid.read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return pid
        return pid

    def status(self) -> dict[str, Any]:
        try:
            return json.loads(self.supervisor_status.read_text())
        except (OSError, ValueError):
            return {"processes": []}

    def saved_tango_host(self) -> str | None:
        try:
            return self.tango_host_file.read_text().strip() or None
        except OSError:
            return None
