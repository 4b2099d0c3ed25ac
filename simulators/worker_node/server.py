"""A worker node for the demo: OpenSSH's real sshd on a loopback port, with keys it keeps.

The DAQ reaches data routers over SSH. On one machine the "worker node" is
this machine, reached through an sshd of our own on its own port, so the
DataRouter devices exercise the real thing: key authentication, host keys
checked against a known_hosts file, commands run by a login shell.

In ``--dir`` it keeps (and reuses across restarts, so known_hosts stays
valid): ``ssh_host_ed25519_key`` (host key), ``client_ed25519_key`` (the key
DataRouter devices log in with), ``authorized_keys``, ``known_hosts`` (the
host key for ``[HOST]:PORT``) and ``sshd_config``. Then it becomes sshd
(``exec``), so stopping it stops sshd.

sshd comes from Debian's ``openssh-server`` (``scripts/system-packages.sh``).
"""

from __future__ import annotations

import argparse
import os
import pwd
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

SSHD = Path("/usr/sbin/sshd")
PRIVSEP_DIR = Path("/run/sshd")  # sshd refuses to start without it


def generate_ed25519_key(path: Path, comment: str) -> str:
    """Write an unencrypted OpenSSH ed25519 private key (mode 0600) and ``path.pub``; return the public line."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_bytes(private)
    line = f"{public.decode()} {comment}"
    path.with_name(path.name + ".pub").write_text(line + "\n")
    return line


def sshd_config(host: str, port: int, directory: Path, log_level: str = "INFO") -> str:
    """An sshd_config for one user with one key on a loopback port, all files in ``directory``."""
    return (
        f"ListenAddress {host}\n"
        f"Port {port}\n"
        f"HostKey {directory / 'ssh_host_ed25519_key'}\n"
        f"AuthorizedKeysFile {directory / 'authorized_keys'}\n"
        f"PidFile {directory / 'sshd.pid'}\n"
        f"LogLevel {log_level}\n"
        # Sessions get a home of their own: this machine's user runs a shell whose startup files (a
        # version manager's init, say) could be slow or wait on locks; a worker node's login is plain.
        f"SetEnv HOME={directory / 'home'}\n"
        "PubkeyAuthentication yes\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "PermitRootLogin prohibit-password\n"
        "UsePAM no\n"
        "StrictModes no\n"
        "UseDNS no\n"
        "PrintMotd no\n"
        "PrintLastLog no\n"
        "MaxStartups 50:30:100\n"
        "MaxSessions 20\n"
        "LoginGraceTime 30\n"
        "Subsystem sftp internal-sftp\n"
    )


def _public_line(key_path: Path, comment: str) -> str:
    pub = key_path.with_name(key_path.name + ".pub")
    if key_path.exists() and pub.exists():
        return pub.read_text().strip()
    return generate_ed25519_key(key_path, comment)


def prepare(directory: Path, host: str, port: int, log_level: str = "INFO") -> Path:
    """Keys, authorized_keys, known_hosts and sshd_config in ``directory``; returns the config's path."""
    directory.mkdir(parents=True, exist_ok=True)
    user = pwd.getpwuid(os.geteuid()).pw_name
    host_public = _public_line(directory / "ssh_host_ed25519_key", "dcs-worker-node")
    client_public = _public_line(directory / "client_ed25519_key", f"dcs-daq@{user}")
    (directory / "authorized_keys").write_text(client_public + "\n")
    (directory / "known_hosts").write_text(f"[{host}]:{port} {host_public}\n")
    (directory / "home").mkdir(exist_ok=True)
    config = directory / "sshd_config"
    config.write_text(sshd_config(host, port, directory, log_level))
    return config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m simulators.worker_node.server",
        description="Run OpenSSH's sshd as a DAQ worker node on a loopback port, with keys kept in --dir "
        "(client_ed25519_key to log in, known_hosts to check the node).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=2222, help="SSH port (default 2222)")
    parser.add_argument("--dir", type=Path, required=True, help="where the keys, known_hosts and sshd_config live")
    parser.add_argument("--log-level", default="INFO", help="sshd LogLevel (default INFO)")
    args = parser.parse_args(argv)
    if not SSHD.is_file():
        print(f"{SSHD} not found: install openssh-server (as root: bash scripts/system-packages.sh)", file=sys.stderr)
        return 2
    try:
        PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
    except OSError as exc:
        print(f"sshd needs {PRIVSEP_DIR}: {exc.strerror}; create it as root", file=sys.stderr)
        return 2
    config = prepare(args.dir.resolve(), args.host, args.port, args.log_level)
    print(f"worker node sshd on {args.host}:{args.port}, keys in {args.dir}", flush=True)
    os.execv(str(SSHD), [str(SSHD), "-D", "-e", "-f", str(config)])
    return 0  # not reached


if __name__ == "__main__":
    raise SystemExit(main())
