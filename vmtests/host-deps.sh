#!/usr/bin/env bash
# Install the host packages the vmtests need (idempotent): QEMU, debootstrap, dtc,
# and the kernel build tools. Only bookworm's own suites are used on the host.
set -euo pipefail
pkgs=(qemu-system-x86 qemu-utils debootstrap device-tree-compiler build-essential
      flex bison bc libelf-dev libssl-dev dwarves ccache cpio xz-utils rsync
      kmod zstd ca-certificates debian-archive-keyring socat)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "host-deps: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
