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

stamp=$VENV/.salt-virt-installed
req=$here/requirements-dev.txt
pip_log=
if [ ! -f "$stamp" ] || [ "$req" -nt "$stamp" ]; then
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  # Everything but libvirt-python (built against libvirt-dev, from apt) installs while apt works.
  pip_log=$(mktemp)
  ( "$VENV/bin/pip" install -q --upgrade pip &&
    grep -v '^libvirt-python' "$req" | "$VENV/bin/pip" install -q -r /dev/stdin ) > "$pip_log" 2>&1 &
  pip_pid=$!
fi

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

if [ -n "$pip_log" ]; then
  if ! wait "$pip_pid"; then
    grep -v 'is ignored' "$pip_log" >&2  # (pip's warnings about unreachable local mirrors: noise)
    echo "install: pip install -r $req failed" >&2
    exit 1
  fi
  rm -f "$pip_log"
  "$VENV/bin/pip" install -q -r "$req" 2> >(grep -v 'is ignored' >&2)
  touch "$stamp"
fi
echo "install: ok ($VENV)"
