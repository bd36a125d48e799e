#!/usr/bin/env bash
# Debian/Ubuntu packages the tests need beyond what nox installs into its environments: the
# arm64 cross compiler and qemu-user run the NEON kernels under emulation
# (tests/test_kernels_neon.py skips itself without them, which would hide that path on Linux).
set -euo pipefail

packages=(gcc-aarch64-linux-gnu g++-aarch64-linux-gnu qemu-user)
sudo=()
if [ "$(id -u)" -ne 0 ]; then
    sudo=(sudo)
fi

echo "::group::apt-get install ${packages[*]}"
"${sudo[@]}" apt-get update -q
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends "${packages[@]}"
echo "::endgroup::"
