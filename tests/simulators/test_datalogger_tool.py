"""Tests of the simulated data-logger text utility, run as a real subprocess."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TEMPERATURE_RE = re.compile(r"-?\d+\.\d{2}")


def run_tool(*args: str, home: Path, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("DCS_DATALOGGER_STATE", None)
    # A private HOME keeps the default state path away from the real one.
    env["HOME"] = str(home)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(extra_env or {})
    return subprocess.run(
        [sys.executable, "-m", "simulators.tools.datalogger", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        check=False,
        text=True,
        timeout=30,
    )


@pytest.fixture
def state(tmp_path: Path) -> Path:
    # Nested on purpose: the tool must create missing parent directories.
    return tmp_path / "nested" / "dir" / "datalogger.json"


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.endswith("\n") and result.stdout.count("\n") == 1, repr(result.stdout)
    return result.stdout.strip()


def test_idn(tmp_path: Path) -> None:
    assert ok(run_tool("idn", home=tmp_path)) == "DCS-SIM,DATALOGGER40,DL0001,1.0"


@pytest.mark.parametrize("sensor", ["0", "17", "39"])
def test_read_one_sensor(tmp_path: Path, sensor: str) -> None:
    value = ok(run_tool("read", sensor, home=tmp_path))
    assert TEMPERATURE_RE.fullmatch(value), value
    assert 20.0 < float(value) < 26.0


def test_read_all_matches_single_reads(tmp_path: Path) -> None:
    values = ok(run_tool("read-all", home=tmp_path)).split(",")
    assert len(values) == 40
    assert all(TEMPERATURE_RE.fullmatch(v) for v in values), values
    assert all(20.0 < float(v) < 26.0 for v in values)
    assert len(set(values)) > 1, "sensors should not all read the same"
    # Same deterministic function of time: a read a moment later agrees closely.
    assert float(ok(run_tool("read", "12", home=tmp_path))) == pytest.approx(float(values[12]), abs=0.1)


def test_interval_default_set_and_get(tmp_path: Path, state: Path) -> None:
    assert ok(run_tool("--state", str(state), "get-interval", home=tmp_path)) == "10"
    assert not state.exists(), "reading must not create the state file"
    assert ok(run_tool("--state", str(state), "set-interval", "30", home=tmp_path)) == "OK"
    assert json.loads(state.read_text())["interval"] == 30
    assert ok(run_tool("--state", str(state), "get-interval", home=tmp_path)) == "30"
    assert ok(run_tool("--state", str(state), "set-interval", "2.5", home=tmp_path)) == "OK"
    assert ok(run_tool("--state", str(state), "get-interval", home=tmp_path)) == "2.5"


@pytest.mark.parametrize("seconds", ["1", "3600"])
def test_interval_limits_accepted(tmp_path: Path, state: Path, seconds: str) -> None:
    assert ok(run_tool("--state", str(state), "set-interval", seconds, home=tmp_path)) == "OK"
    assert ok(run_tool("--state", str(state), "get-interval", home=tmp_path)) == seconds


def test_state_from_environment(tmp_path: Path, state: Path) -> None:
    env = {"DCS_DATALOGGER_STATE": str(state)}
    assert ok(run_tool("set-interval", "45", home=tmp_path, extra_env=env)) == "OK"
    assert json.loads(state.read_text())["interval"] == 45
    assert ok(run_tool("get-interval", home=tmp_path, extra_env=env)) == "45"
    # --state wins over the environment.
    other = tmp_path / "other.json"
    assert ok(run_tool("--state", str(other), "get-interval", home=tmp_path, extra_env=env)) == "10"


def test_default_state_path_under_home(tmp_path: Path) -> None:
    assert ok(run_tool("set-interval", "60", home=tmp_path)) == "OK"
    default = tmp_path / ".cache" / "dcs" / "datalogger.json"
    assert json.loads(default.read_text())["interval"] == 60
    assert ok(run_tool("get-interval", home=tmp_path)) == "60"


@pytest.mark.parametrize(
    ("args", "mentions"),
    [
        (["read", "40"], "40"),
        (["read", "-1"], "-1"),
        (["read", "abc"], "abc"),
        (["read", "1.5"], "1.5"),
        (["set-interval", "0"], "0"),
        (["set-interval", "3601"], "3601"),
        (["set-interval", "soon"], "soon"),
        (["set-interval", "nan"], "nan"),
        (["read"], "sensor"),
        (["set-interval"], "seconds"),
        (["frobnicate"], "frobnicate"),
        ([], "COMMAND"),
    ],
)
def test_bad_input(tmp_path: Path, state: Path, args: list[str], mentions: str) -> None:
    result = run_tool("--state", str(state), *args, home=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert mentions in result.stderr, result.stderr
    assert not state.exists(), "bad input must not touch the state"


def test_bad_interval_keeps_previous_value(tmp_path: Path, state: Path) -> None:
    assert ok(run_tool("--state", str(state), "set-interval", "20", home=tmp_path)) == "OK"
    assert run_tool("--state", str(state), "set-interval", "99999", home=tmp_path).returncode == 2
    assert ok(run_tool("--state", str(state), "get-interval", home=tmp_path)) == "20"


def test_corrupt_state_file(tmp_path: Path, state: Path) -> None:
    state.parent.mkdir(parents=True)
    state.write_text("{not json")
    result = run_tool("--state", str(state), "get-interval", home=tmp_path)
    assert result.returncode == 1
    assert result.stdout == ""
    assert str(state) in result.stderr


def test_help(tmp_path: Path) -> None:
    result = run_tool("--help", home=tmp_path)
    assert result.returncode == 0
    for word in (
        "idn",
        "read",
        "read-all",
        "get-interval",
        "set-interval",
        "--state",
        "DCS_DATALOGGER_STATE",
    ):
        assert word in result.stdout
