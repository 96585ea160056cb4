#!/usr/bin/env bash
# The seed's walkthrough ("Salt as a Cloud Controller"), run for real on the lab.
# `make demo` brings the lab up first. Each command is printed, then run.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/lab/bin:$PATH"

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@" 2> >(grep -v -e 'unclosed Runner' -e 'unclosed MasterMinion' >&2); }
say() { printf '\n# %s\n' "$*"; }

cleanup() {
  for vm in centos1 centos2 centos; do
    salt-run virt.purge "$vm" >/dev/null 2>&1 || true
  done
  salt 'hypervisor*' virt.purge qcowvm >/dev/null 2>&1 || true
}
trap cleanup EXIT
cleanup
say "Load the bundle's current code on the hypervisors"
step salt 'hypervisor*' saltutil.sync_all --out=txt

say "Hypervisor facts: CPUs, memory, free resources"
step salt-run virt.host_info
say "All VMs on all hypervisors, by state"
step salt-run virt.list
say "A new VM: the runner picks a hypervisor, copies salt://centos.img there, seeds a minion"
say "(key pre-accepted on the master) and boots it"
step salt-run virt.init centos1 2 512 salt://centos.img
say "Direct module call with an absolute image path, as a qcow2 overlay, not started"
step salt 'hypervisor*' virt.init qcowvm 1 256 image=/var/lib/libvirt/images/centos.qcow2 enable_qcow=True start=False
step salt 'hypervisor1' cmd.run "qemu-img info --backing-chain -U /srv/salt-images/qcowvm/system.qcow2 | grep -E '^(image|backing file|file format)'"
say "A VM with a VNC console (listening on its hypervisor's address, not 0.0.0.0)"
step salt-run virt.init centos 1 256 salt://centos.qcow2 enable_qcow=True enable_vnc=True
say "Everything, in the seed's query format"
step salt-run virt.query
say "The guests are alive: their consoles print the seeded minion id and a heartbeat"
sleep 10
for vm in centos1 centos; do
  host=$(salt-run virt.vm_info "$vm" --out=json 2> /dev/null | python3 -c 'import json,sys; print(next(iter(json.load(sys.stdin))))')
  step hv-exec "$host" grep -m3 -E 'SALTVIRT-(MINION-ID|HEARTBEAT)' "/var/log/libvirt/qemu/$vm-serial.log"
done
src=$(salt-run virt.vm_info centos --out=json 2>/dev/null | python3 -c 'import json,sys; print(next(iter(json.load(sys.stdin))))')
dst=$([ "$src" = hypervisor1 ] && echo hypervisor2 || echo hypervisor1)
last_beat() { hv-exec "$1" sh -c "grep SALTVIRT-HEARTBEAT /var/log/libvirt/qemu/centos-serial.log | tail -1"; }
say "Live migration of the running VM to the other hypervisor (its disk is copied: no shared storage)"
step last_beat "$src"
step salt-run virt.migrate centos "$dst"
step salt-run virt.list
say "The guest kept counting across the migration (no new boot on $dst)"
sleep 3
step last_beat "$dst"
step hv-exec "$dst" sh -c "echo boots logged on $dst: \$(grep -c SALTVIRT-BOOT /var/log/libvirt/qemu/centos-serial.log)"
say "Done: the demo VMs are purged on exit"
