"""SSH to a worker node with paramiko: key authentication, host keys checked, ~/.ssh/config honoured.

Host keys are checked against a known_hosts file the project manages
(the ``KnownHosts`` property); an unknown or changed host key is refused,
never accepted blindly.
"""

from __future__ import annotations

import getpass
import os
import shlex
from dataclasses import dataclass
from pathlib import Path

import paramiko

from device_servers.common.link import CommandRefused, HardwareLink, LinkError


@dataclass(frozen=True)
class CommandResult:
    exit_status: int
    stdout: str
    stderr: str


class SshLink(HardwareLink):
    """One SSH connection to a worker node, reused for every command."""

    def __init__(
        self,
        host: str,
        port: int = 0,
        user: str = "",
        key_file: str = "",
        known_hosts: str = "",
        timeout: float = 5.0,
        ssh_config: str = "~/.ssh/config",
    ) -> None:
        super().__init__(timeout)
        settings = _from_ssh_config(host, ssh_config)
        self.host = settings.get("hostname", host)
        self.port = port or int(settings.get("port", 22))
        self.user = user or settings.get("user") or getpass.getuser()
        identity = settings.get("identityfile") or []
        self.key_file = key_file or (identity[0] if identity else "")
        self.known_hosts = os.path.expanduser(known_hosts or "~/.ssh/known_hosts")
        self._client: paramiko.SSHClient | None = None

    @property
    def address(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"

    @property
    def connected(self) -> bool:
        transport = self._client.get_transport() if self._client else None
        return transport is not None and transport.is_active()

    def connect(self) -> None:
        with self.lock:
            self.close()
            client = paramiko.SSHClient()
            try:
                client.load_host_keys(self.known_hosts)
            except OSError as exc:
                raise LinkError(f"known_hosts file {self.known_hosts} unreadable: {exc.strerror}") from exc
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
            try:
                client.connect(
                    self.host, port=self.port, username=self.user,
                    key_filename=os.path.expanduser(self.key_file) if self.key_file else None,
                    timeout=self.timeout, banner_timeout=self.timeout, auth_timeout=self.timeout,
                    allow_agent=False, look_for_keys=not self.key_file,
                )  # fmt: skip
            except paramiko.AuthenticationException as exc:
                raise LinkError(f"SSH authentication failed for {self.address} ({self._key_text()}): {exc}") from exc
            except paramiko.SSHException as exc:
                raise LinkError(f"SSH to {self.address} refused: {exc} (host keys from {self.known_hosts})") from exc
            except OSError as exc:  # includes timeouts
                raise LinkError(f"cannot reach {self.address}: {exc.strerror or exc}") from exc
            self._client = client

    def _key_text(self) -> str:
        return f"key {self.key_file}" if self.key_file else "default keys"

    def close(self) -> None:
        with self.lock:
            if self._client is not None:
                self._client.close()
            self._client = None

    def run(self, command: str, timeout: float | None = None) -> CommandResult:
        """Run a shell command on the node; LinkError if the connection fails."""
        client = self._client
        if client is None:
            raise LinkError(f"not connected to {self.address}")
        limit = timeout or self.timeout
        try:
            _, stdout, stderr = client.exec_command(command, timeout=limit)
            out = stdout.read().decode(errors="replace")
            err = stderr.read().decode(errors="replace")
            status = stdout.channel.recv_exit_status()
        except (paramiko.SSHException, OSError) as exc:
            self.close()
            raise LinkError(f"{self.address}: {command.split()[0]!r} failed: {exc or type(exc).__name__}") from exc
        return CommandResult(status, out, err)

    def check(self, command: str, timeout: float | None = None) -> str:
        """Run a command that must succeed; CommandRefused carries its stderr otherwise."""
        result = self.run(command, timeout)
        if result.exit_status != 0:
            reason = result.stderr.strip() or f"exit status {result.exit_status}"
            raise CommandRefused(f"on {self.host}: {reason}")
        return result.stdout


def _from_ssh_config(host: str, path: str) -> dict:
    config_path = Path(os.path.expanduser(path))
    if not config_path.is_file():
        return {}
    config = paramiko.SSHConfig.from_path(str(config_path))
    return config.lookup(host)


def quote(path: str) -> str:
    return shlex.quote(path)
