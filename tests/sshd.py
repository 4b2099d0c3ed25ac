"""A real OpenSSH ``sshd`` on a loopback port, for tests that reach worker nodes over SSH.

The DAQ reaches data-router and ECC hosts over SSH with key authentication
and host keys honoured. ``SshServer`` runs OpenSSH's own server as the current
user (root in the containers and CI), with a fresh ed25519 host key and an
authorized client key, both generated into a private directory, so the code
under test meets the real thing: real key exchange, real host-key checks,
real ``exec`` channels running a login shell on this machine.

Example::

    with SshServer() as sshd:
        client = paramiko.SSHClient()
        client.load_host_keys(str(sshd.known_hosts_path))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        client.connect(sshd.host, sshd.port, username=sshd.user, key_filename=str(sshd.client_key_path),
                       look_for_keys=False, allow_agent=False)
        _, stdout, _ = client.exec_command("pgrep -x dataRouter")

``sshd.connect()`` does exactly that. ``sshd.ssh_config()`` writes an OpenSSH
client config with a ``Host`` alias for code that honours ``~/.ssh/config``;
``sshd.wrong_key()`` is a key the server does not accept.

sshd comes from the ``openssh-server`` package, which
``scripts/system-packages.sh`` installs.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import paramiko

from simulators.worker_node.server import generate_ed25519_key, sshd_config

SSHD = Path("/usr/sbin/sshd")
PRIVSEP_DIR = Path("/run/sshd")  # sshd refuses to start without it ("Missing privilege separation directory")
STARTUP_TIMEOUT = 10.0  # s
BIND_ATTEMPTS = 5  # free ports picked before giving up (another process may grab the one we picked)


class SshdUnavailable(RuntimeError):
    """sshd is not installed or cannot run here."""


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class SshServer:
    """OpenSSH's sshd on ``host:port``, accepting ``user`` with the key at ``client_key_path``.

    Attributes: ``host`` ("127.0.0.1"), ``port`` (a free port, set by
    ``start``), ``user`` (the current user's name), ``client_key_path`` (the
    authorized ed25519 private key), ``known_hosts_path`` (a known_hosts file
    holding the host key for ``[127.0.0.1]:port``), ``host_key_path``,
    ``config_path`` (the sshd_config) and ``log_path`` (sshd's own log, quoted
    in errors).

    Files live in ``directory`` (a new temporary directory by default, removed
    by ``stop``). A server runs once: ``start``, then ``stop``.
    """

    host = "127.0.0.1"

    def __init__(
        self, directory: Path | str | None = None, sshd_path: Path | str = SSHD, log_level: str = "VERBOSE"
    ) -> None:
        self.sshd_path = Path(sshd_path)
        self.log_level = log_level
        self.user = pwd.getpwuid(os.geteuid()).pw_name
        self.port = 0
        self._owns_directory = directory is None
        self.directory = Path(tempfile.mkdtemp(prefix="dcs-sshd-")) if directory is None else Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.host_key_path = self.directory / "ssh_host_ed25519_key"
        self.client_key_path = self.directory / "client_ed25519_key"
        self.authorized_keys_path = self.directory / "authorized_keys"
        self.known_hosts_path = self.directory / "known_hosts"
        self.config_path = self.directory / "sshd_config"
        self.log_path = self.directory / "sshd.log"
        self._wrong_key_path = self.directory / "wrong_ed25519_key"
        self.process: subprocess.Popen[bytes] | None = None
        self._stopped = False

    # -- lifecycle ----------------------------------------------------------

    def start(self) -> SshServer:
        """Generate the keys, write the config, run sshd and wait for its SSH banner."""
        if self.process is not None or self._stopped:
            raise RuntimeError("SshServer runs once: create a new one")
        if not self.sshd_path.is_file():
            raise SshdUnavailable(
                f"{self.sshd_path} not found: the SSH tests run OpenSSH's sshd; "
                "install the openssh-server package (as root: bash scripts/system-packages.sh)"
            )
        try:
            PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
        except OSError as error:
            raise SshdUnavailable(
                f"sshd needs the directory {PRIVSEP_DIR} and it cannot be created ({error.strerror}); "
                f"create it as root: mkdir -p {PRIVSEP_DIR}"
            ) from None
        self._host_public_key = generate_ed25519_key(self.host_key_path, "dcs-test-host")
        client_public_key = generate_ed25519_key(self.client_key_path, f"dcs-test-client@{self.user}")
        self.authorized_keys_path.write_text(client_public_key + "\n")
        self.authorized_keys_path.chmod(0o600)

        for attempt in range(1, BIND_ATTEMPTS + 1):
            self.port = _free_port(self.host)
            self._write_config()
            self.known_hosts_path.write_text(f"[{self.host}]:{self.port} {self._host_public_key}\n")
            log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
            with open(self.log_path, "ab") as log_file:
                self.process = subprocess.Popen(
                    [str(self.sshd_path), "-D", "-e", "-f", str(self.config_path)],
                    stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
                )  # fmt: skip
            if self._wait_for_banner():
                return self
            log_text = self.log_path.read_text(errors="replace")[log_start:]
            assert self.process is not None
            returncode = self.process.poll()
            self._terminate()
            if "Address already in use" in log_text and attempt < BIND_ATTEMPTS:
                continue  # somebody took the port between our pick and sshd's bind
            self._cleanup()
            what = (
                f"exited with status {returncode}"
                if returncode is not None
                else f"did not answer within {STARTUP_TIMEOUT:g} s"
            )
            raise SshdUnavailable(
                f"sshd on {self.host}:{self.port} {what} (config {self.config_path}); its log:\n{log_text.strip()}"
            )
        raise AssertionError("unreachable")

    def stop(self) -> None:
        """Stop sshd and the sessions it still serves; remove the temporary directory. Idempotent."""
        self._terminate()
        if not self._stopped:
            self._stopped = True
            self._cleanup()

    def __enter__(self) -> SshServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    # -- what tests use -------------------------------------------------------

    def wrong_key(self) -> Path:
        """A generated ed25519 private key that is *not* authorized (for authentication-failure tests)."""
        if not self._wrong_key_path.exists():
            generate_ed25519_key(self._wrong_key_path, "dcs-test-not-authorized")
        return self._wrong_key_path

    def connect(
        self,
        key_path: Path | str | None = None,
        known_hosts_path: Path | str | None = None,
        timeout: float = 10.0,
        **kwargs: Any,
    ) -> paramiko.SSHClient:
        """A paramiko client connected with the client key, checking the host key strictly (RejectPolicy)."""
        client = paramiko.SSHClient()
        client.load_host_keys(str(known_hosts_path or self.known_hosts_path))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            client.connect(
                self.host, self.port, username=self.user, key_filename=str(key_path or self.client_key_path),
                look_for_keys=False, allow_agent=False, timeout=timeout, banner_timeout=timeout,
                auth_timeout=timeout, **kwargs,
            )  # fmt: skip
        except BaseException:
            client.close()
            raise
        return client

    def ssh_config(self, alias: str = "worker", path: Path | str | None = None) -> Path:
        """Write an OpenSSH client config with ``Host <alias>`` pointing at this server; return its path.

        For code that honours ``~/.ssh/config`` (paramiko's ``SSHConfig``, or
        ``ssh -F <path> <alias> <command>``).
        """
        path = Path(path) if path is not None else self.directory / "ssh_config"
        path.write_text(
            f"Host {alias}\n"
            f"    HostName {self.host}\n"
            f"    Port {self.port}\n"
            f"    User {self.user}\n"
            f"    IdentityFile {self.client_key_path}\n"
            f"    IdentitiesOnly yes\n"
            f"    UserKnownHostsFile {self.known_hosts_path}\n"
            f"    StrictHostKeyChecking yes\n"
            f"    BatchMode yes\n"
        )
        return path

    def log_text(self) -> str:
        """sshd's log so far (authentication attempts at the default VERBOSE level)."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # -- internals ------------------------------------------------------------

    def _write_config(self) -> None:
        (self.directory / "home").mkdir(exist_ok=True)
        self.config_path.write_text(sshd_config(self.host, self.port, self.directory, self.log_level))

    def _wait_for_banner(self) -> bool:
        assert self.process is not None
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                with socket.create_connection((self.host, self.port), timeout=1.0) as sock:
                    if sock.recv(256).startswith(b"SSH-"):
                        return True
            except OSError:
                pass
            time.sleep(0.02)
        return False

    def _terminate(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        # Session processes (sshd children running a command) outlive the
        # listener; end them too so nothing of this server is left behind.
        for pid in _descendants(process.pid):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def _cleanup(self) -> None:
        if self._owns_directory:
            shutil.rmtree(self.directory, ignore_errors=True)


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid``, from /proc.

    sshd's session processes start their own sessions, so a process group
    kill would miss them; walking the parent links does not.
    """
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 1:
            parents[int(entry.name)] = int(fields[1])
    found: list[int] = []
    frontier = {pid}
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found.extend(children)
        frontier = set(children)
    return found
