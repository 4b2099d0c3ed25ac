#!/usr/bin/env bash
# System packages the tests need that pip cannot provide: the shared
# libraries Qt loads for offscreen rendering (Taurus tests). Installs only
# what is missing, so it is quick on a machine that has them.
set -euo pipefail
# openssh-server: the DAQ tests reach data routers over a real sshd on a loopback port.
packages=(libgl1 libegl1 libglib2.0-0 libfontconfig1 libdbus-1-3 libxkbcommon0 openssh-server lsof)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "system packages missing: ${missing[*]} (run as root, or: sudo apt-get install ${missing[*]})" >&2
  exit 1
fi
echo "installing system packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
