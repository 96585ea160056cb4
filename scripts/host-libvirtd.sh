#!/usr/bin/env bash
# Start this machine's own libvirtd + virtlogd (there is no init system here) for the
# functional tests. Idempotent: does nothing when libvirtd already answers.
set -euo pipefail
if virsh -q -c qemu:///system version >/dev/null 2>&1; then
  exit 0
fi
# Several libvirtds (this one and the lab's) share one cgroup tree: keep them out of it.
grep -q '^cgroup_controllers' /etc/libvirt/qemu.conf || echo 'cgroup_controllers = [ ]' >> /etc/libvirt/qemu.conf
# The packaged default network would put a 192.168.122.0/24 bridge on the host: not here.
rm -f /etc/libvirt/qemu/networks/autostart/default.xml
mkdir -p /run/libvirt
pgrep -f '^virtlogd -d$' >/dev/null || virtlogd -d
# Under a reaper: this machine's PID 1 reaps an exited QEMU only every ~2 s (scripts/subreaper.py).
python3 "$(dirname "$0")/subreaper.py" libvirtd -d
for _ in $(seq 100); do
  virsh -q -c qemu:///system version >/dev/null 2>&1 && { echo "host libvirtd: running"; exit 0; }
  sleep 0.1
done
echo "host libvirtd did not start" >&2
exit 1
