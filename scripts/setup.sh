#!/usr/bin/env bash
# Installs ringplan's build dependencies from Debian packages (Debian 12 or newer).
# Usage: setup.sh [--tests]. CUDA Toolkit and NCCL are optional and not installed here: the CPU build needs neither.
set -euo pipefail
packages=(
  cmake ninja-build g++ pkg-config
  libeigen3-dev libfmt-dev libyaml-cpp-dev nlohmann-json3-dev libcli11-dev libtomlplusplus-dev
  doctest-dev libbenchmark-dev
  libopenmpi-dev openmpi-bin
  python3
)
# The report test renders the HTML report in headless Chromium: only the tests need it.
if [ "${1:-}" = "--tests" ]; then packages+=(chromium); fi
sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then sudo_cmd=(sudo); fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  "${sudo_cmd[@]}" apt-get update
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y "${missing[@]}"
else
  echo "setup: all Debian packages present"
fi
