"""The demo facility file made runnable beside anything else on the machine (tests and bench).

``facilities/demo.yaml`` names fixed ports (5025, 2222, 8083, ...) so that a
newcomer's commands are predictable; a test or benchmark needs free ones.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "facilities" / "demo.yaml"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def demo_copy(directory: Path) -> Path:
    """demo.yaml with every simulator port replaced by a free one and every ProtocolFile absolute."""
    text = DEMO.read_text()
    # Ports appear in simulator args, device properties and data-link lines: replace the numbers everywhere.
    for sim in yaml.safe_load(text).get("simulators", {}).values():
        if sim.get("port"):
            text = re.sub(rf"\b{int(sim['port'])}\b", str(_free_port()), text)
    # Files named relative to the demo's folder (protocols, weather rules) are made absolute.
    text = re.sub(
        r"(ProtocolFile|RulesFile): ([\w./-]+\.yaml)", lambda m: f"{m[1]}: {(DEMO.parent / m[2]).resolve()}", text
    )
    path = Path(directory) / "demo.yaml"
    path.write_text(text)
    return path
