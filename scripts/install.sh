#!/usr/bin/env bash
# Install everything salt-virt's tests and lab need on Debian 12. Idempotent: a second run
# only checks and returns quickly.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
VENV=${VENV:-$here/.venv}
PY=${PYTHON:-python3}

APT_PACKAGES=(
  libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-clients
  qemu-system-x86 qemu-utils libvirt-dev pkg-config gnutls-bin
  libguestfs-tools busybox-static cpio kmod iproute2 util-linux
  syslinux syslinux-common mtools dosfstools fdisk e2fsprogs linux-image-amd64
  libxml2-utils debootstrap dnsmasq-base
  novnc chromium ovmf
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install: apt packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  # No init system here: keep postinst scripts from trying to start daemons.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d
  apt-get install -y -q --no-install-recommends "${missing[@]}"
  rm -f /usr/sbin/policy-rc.d
fi

stamp=$VENV/.salt-virt-installed
req=$here/requirements-dev.txt
if [ ! -f "$stamp" ] || [ "$req" -nt "$stamp" ]; then
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  # pip's warnings about unreachable local mirrors are noise here.
  "$VENV/bin/pip" install -q --upgrade pip 2> >(grep -v 'is ignored' >&2)
  "$VENV/bin/pip" install -q -r "$req" 2> >(grep -v 'is ignored' >&2)
  touch "$stamp"
fi
echo "install: ok ($VENV)"
