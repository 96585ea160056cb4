#!/usr/bin/env bash
# Runs as the first process of one lab hypervisor: inside the lab's network namespace and a
# private mount namespace (labctl starts it with nsenter + unshare). It mounts the hypervisor's
# private libvirt directories, starts virtlogd and salt-minion, then stays as the
# namespace holder that `nsenter -t <pid>` targets.
set -euo pipefail
H=$1        # this hypervisor's state directory
VENV=$2     # virtualenv with salt + libvirt-python
NAME=$3     # hostname of this hypervisor (its own UTS namespace)
hostname "$NAME"

# Private copies of everything libvirt keeps on disk or in /run.
mount --bind "$H/etc-libvirt" /etc/libvirt
mount --bind "$H/pki" /etc/pki
mount --bind "$H/run-libvirt" /run/libvirt
mount --bind "$H/var-lib-libvirt" /var/lib/libvirt
mount --bind "$H/log-libvirt" /var/log/libvirt
mount --bind "$H/cache-libvirt" /var/cache/libvirt
mount --bind "$H/salt-images" /srv/salt-images
# salt-minion's own state lives under $H/minion (root_dir), nothing else to hide.

ip link set lo up 2>/dev/null || true
virtlogd -d -p /run/libvirt/virtlogd.pid
# libvirt's lock manager (the formula's virt.lockd turns it on in qemu.conf)
virtlockd -d -p /run/libvirt/virtlockd.pid
# libvirtd starts once the bundle's formula has written its TLS keys and config (labctl).
# Guests must never try KVM here; libguestfs likewise (LAB-NOTES).
export LIBGUESTFS_BACKEND=direct LIBGUESTFS_BACKEND_SETTINGS=force_tcg
"$VENV/bin/salt-minion" -c "$H/minion/etc/salt" -d
echo ready > "$H/ready"
exec sleep infinity
