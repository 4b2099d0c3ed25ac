"""A simulated DAQ worker node: OpenSSH's sshd on a loopback port with keys of its own."""
