"""The ``tests.sshd`` helper, and the worker-node shell commands the DAQ runs over SSH.

A real OpenSSH server (``SshServer``) and a real ``dataRouter`` (the
simulator) on this machine stand in for a DAQ worker node. The commands
below are the ones DCS sends to find a data router, check and empty its
staging directory, back up the run's configs and tail a log; each is tested
here as sent, over SSH, through a login shell.
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from tests.simulators.test_datarouter_simulator import RUN_START, DataRouterProcess, wait_for
from tests.sshd import SshdUnavailable, SshServer, generate_ed25519_key

COMMAND_TIMEOUT = 10.0


# -- the commands, as sent over SSH ------------------------------------------


def find_data_router_pids() -> str:
    """Pids of every dataRouter on the host, one per line (exit 1, no output: none running)."""
    return "pgrep -x dataRouter"


def data_router_on_port(port: int) -> str:
    """Pid of the dataRouter listening on ``port`` (for hosts running several)."""
    return f"lsof -nP -a -c dataRouter -iTCP:{port} -sTCP:LISTEN -t"


def working_directory(pid: int) -> str:
    """The working directory (staging directory) of process ``pid``."""
    return f"readlink /proc/{pid}/cwd"


def working_directory_lsof(pid: int) -> str:
    """Same with lsof (also works where there is no /proc); the path is on the line starting with ``n``."""
    return f"lsof -a -p {pid} -d cwd -Fn"


def staged_files(workdir: str) -> str:
    """The .graw files in the staging directory, one path per line; no output means clean."""
    return f"find {shlex.quote(workdir)} -maxdepth 1 -type f -name '*.graw'"


def run_directory(workdir: str, experiment: str, run_number: int) -> str:
    return f"{workdir}/{experiment}/run_{run_number:04d}"


def organize_files(workdir: str, experiment: str, run_number: int) -> str:
    """Move every staged .graw file into ``<workdir>/<experiment>/run_<NNNN>/``, creating it."""
    destination = shlex.quote(f"{experiment}/run_{run_number:04d}")
    return (
        f"cd {shlex.quote(workdir)} && mkdir -p {destination} && "
        f"find . -maxdepth 1 -type f -name '*.graw' -exec mv {{}} {destination}/ \\;"
    )


def back_up_configs(config_paths: list[str], destination: str) -> str:
    """Copy the config files a run used next to its data (on the ECC host)."""
    return f"mkdir -p {shlex.quote(destination)} && cp -p {' '.join(map(shlex.quote, config_paths))} {shlex.quote(destination)}/"


def tail_file(path: str, lines: int = 50) -> str:
    return f"tail -n {int(lines)} {shlex.quote(path)}"


# -- fixtures ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def sshd() -> Iterator[SshServer]:
    server = SshServer().start()
    yield server
    server.stop()


@pytest.fixture
def ssh(sshd: SshServer) -> Iterator[paramiko.SSHClient]:
    """A client connected the way the brief asks: client key, known_hosts, RejectPolicy."""
    client = paramiko.SSHClient()
    client.load_host_keys(str(sshd.known_hosts_path))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(
        sshd.host, sshd.port, username=sshd.user, key_filename=str(sshd.client_key_path),
        look_for_keys=False, allow_agent=False, timeout=COMMAND_TIMEOUT,
    )  # fmt: skip
    yield client
    client.close()


@pytest.fixture
def router(tmp_path: Path) -> Iterator[DataRouterProcess]:
    process = DataRouterProcess(tmp_path / "staging", tmp_path / "router.stderr")
    yield process
    process.kill()


def run(client: paramiko.SSHClient, command: str) -> tuple[int, str, str]:
    """Run ``command`` on the remote host; return (exit status, stdout, stderr)."""
    _, stdout, stderr = client.exec_command(command, timeout=COMMAND_TIMEOUT)
    out = stdout.read().decode()
    err = stderr.read().decode()
    return stdout.channel.recv_exit_status(), out, err


# -- the helper ------------------------------------------------------------------


def test_client_key_and_known_host_key_log_in(sshd: SshServer, ssh: paramiko.SSHClient) -> None:
    assert run(ssh, "id -un") == (0, f"{sshd.user}\n", "")
    assert sshd.known_hosts_path.read_text().startswith(f"[127.0.0.1]:{sshd.port} ssh-ed25519 ")
    assert "Accepted publickey for" in sshd.log_text()


def test_connect_shortcut(sshd: SshServer) -> None:
    client = sshd.connect()
    try:
        assert run(client, "echo ok") == (0, "ok\n", "")
    finally:
        client.close()


def test_wrong_key_is_refused(sshd: SshServer) -> None:
    with pytest.raises(paramiko.AuthenticationException):
        sshd.connect(key_path=sshd.wrong_key())


def test_unknown_host_key_is_rejected(sshd: SshServer, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(paramiko.SSHException, match="not found in known_hosts") as caught:
        sshd.connect(known_hosts_path=empty)
    assert not isinstance(caught.value, paramiko.AuthenticationException)


def test_changed_host_key_is_rejected(sshd: SshServer, tmp_path: Path) -> None:
    other = tmp_path / "other.pub"
    public = generate_ed25519_key(tmp_path / "other", "impostor")
    other.write_text(f"[127.0.0.1]:{sshd.port} {public}\n")
    with pytest.raises(paramiko.BadHostKeyException):
        sshd.connect(known_hosts_path=other)


def test_ssh_config_alias_works_with_paramiko_and_openssh(sshd: SshServer) -> None:
    config_path = sshd.ssh_config("router-node")
    config = paramiko.SSHConfig.from_path(str(config_path)).lookup("router-node")
    assert (config["hostname"], int(config["port"]), config["user"]) == (sshd.host, sshd.port, sshd.user)
    assert config["identityfile"] == [str(sshd.client_key_path)]
    done = subprocess.run(
        ["ssh", "-F", str(config_path), "router-node", "echo", "hello"],
        capture_output=True, text=True, timeout=COMMAND_TIMEOUT, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert (done.returncode, done.stdout) == (0, "hello\n"), done.stderr


def test_missing_sshd_says_how_to_install_it(tmp_path: Path) -> None:
    server = SshServer(directory=tmp_path / "sshd", sshd_path=tmp_path / "no-sshd")
    with pytest.raises(SshdUnavailable, match=r"openssh-server.*scripts/system-packages\.sh"):
        server.start()


def test_stop_ends_sshd_its_sessions_and_removes_its_files() -> None:
    with SshServer() as server:
        process = server.process
        assert process is not None
        directory = server.directory
        client = server.connect()
        _, stdout, _ = client.exec_command("echo $$; exec sleep 30")  # a session still running at stop
        session_pid = int(stdout.readline())
        assert Path(f"/proc/{session_pid}").exists()
    try:
        assert process.poll() is not None
        assert not directory.exists()
        assert wait_for(lambda: not Path(f"/proc/{session_pid}").exists()), "the session outlived sshd"
    finally:
        client.close()


# -- the worker-node commands, over SSH, against a running data router -------------------------


def test_finds_the_data_router_pid_and_working_directory(ssh: paramiko.SSHClient, router: DataRouterProcess) -> None:
    status, out, _ = run(ssh, find_data_router_pids())
    assert status == 0
    assert str(router.pid) in out.split()  # other tests' routers may be listed too

    status, out, _ = run(ssh, data_router_on_port(router.port))
    assert (status, out.split()) == (0, [str(router.pid)])

    status, out, _ = run(ssh, working_directory(router.pid))
    assert (status, out.strip()) == (0, str(router.workdir.resolve()))

    status, out, _ = run(ssh, working_directory_lsof(router.pid))
    assert status == 0
    assert f"n{router.workdir.resolve()}" in out.splitlines()


def test_no_data_router_running_is_exit_status_1(ssh: paramiko.SSHClient) -> None:
    assert run(ssh, "pgrep -x noSuchRouter") == (1, "", "")


def test_staging_check_organize_backup_and_tail(
    ssh: paramiko.SSHClient, router: DataRouterProcess, tmp_path: Path
) -> None:
    workdir = str(router.workdir.resolve())
    assert run(ssh, staged_files(workdir)) == (0, "", "")  # clean

    assert router.request(f"START CoBo[3] {RUN_START}") == "OK"
    assert router.request("STOP CoBo[3]") == "OK"
    written = sorted(path.name for path in router.graw_files())
    assert written
    status, out, _ = run(ssh, staged_files(workdir))
    assert status == 0
    assert sorted(Path(line).name for line in out.splitlines()) == written  # dirty

    experiment = "beam test 2017"  # a space, to prove the quoting
    assert run(ssh, organize_files(workdir, experiment, 4)) == (0, "", "")
    destination = Path(run_directory(workdir, experiment, 4))
    assert sorted(path.name for path in destination.iterdir()) == written
    assert run(ssh, staged_files(workdir)) == (0, "", "")  # clean again
    assert (router.workdir / "dataRouter.log").exists()  # only .graw files move
    assert run(ssh, organize_files(workdir, experiment, 5)) == (0, "", "")  # nothing staged: fine
    assert list(Path(run_directory(workdir, experiment, 5)).iterdir()) == []

    configs = []
    for name in ("describe-cobo0.xcfg", "prepare-experiment.xcfg", "configure-experiment.xcfg"):
        path = tmp_path / "configs" / name
        path.parent.mkdir(exist_ok=True)
        path.write_text(f"<{name}/>\n")
        configs.append(str(path))
    assert run(ssh, back_up_configs(configs, str(destination))) == (0, "", "")
    assert (destination / "prepare-experiment.xcfg").read_text() == "<prepare-experiment.xcfg/>\n"

    log_path = f"{workdir}/dataRouter.log"
    status, out, _ = run(ssh, tail_file(log_path, 3))
    assert status == 0
    assert out.splitlines() == Path(log_path).read_text().splitlines()[-3:]
    assert "STOP CoBo[3]" in run(ssh, tail_file(log_path, 50))[1]
