# salt://virt/lockd.sls -- libvirt's lock manager (virtlockd): a disk that a QEMU on one
# hypervisor has open cannot be opened by a QEMU on another one, so a VM can never run twice
# (salt-run virt.evacuate relies on it; docs/operations.rst). Pillar virt:hypervisor:lockd:
#   enabled: True        -- leases are locks on the disk files themselves: a file on the shared
#                           storage is one file for every host (its filesystem must support
#                           fcntl locks, as NFS does), a VM's local disk is its host's own
#   lockspace: <dir>     -- or leases as files named by the SHA-256 of each disk's path in <dir>,
#                           for shared filesystems without fcntl locks: local disks at the same
#                           path on two hosts (same-named VMs) then share a lease too
{%- from "virt/map.jinja" import hyper with context %}
{%- set lockd = salt['pillar.get']('virt:hypervisor:lockd', {}) %}
{%- if not (lockd.get('enabled') or lockd.get('lockspace')) %}
lockd-not-configured:
  test.fail_without_changes:
    - name: 'pillar virt:hypervisor:lockd is not set: enabled: True (leases on the disk files), or lockspace: <shared directory>'
{%- else %}
{%- if lockd.get('lockspace') %}

lockd-lockspace:
  file.directory:
    - name: {{ lockd.lockspace }}
    - mode: '0700'
    # the shared storage itself must be mounted already: never create it here
    - makedirs: False
{%- else %}

lockd-direct-leases:
  # no lockspace directory: virtlockd locks each disk file itself
  file.comment:
    - name: /etc/libvirt/qemu-lockd.conf
    - regex: ^file_lockspace_dir
    - ignore_missing: True
{%- endif %}

lockd-qemu-config:
  file.keyvalue:
    - name: /etc/libvirt/qemu.conf
    - separator: ' = '
    - uncomment: '#'
    - append_if_not_found: True
    - key_values:
        lock_manager: '"lockd"'

lockd-leases-config:
  file.keyvalue:
    - name: /etc/libvirt/qemu-lockd.conf
    - separator: ' = '
    - uncomment: '#'
    - append_if_not_found: True
    - key_values:
        # every disk gets a lease, and QEMU may not start without one
        auto_disk_leases: 1
        require_lease_for_disks: 1
{%- if lockd.get('lockspace') %}
        file_lockspace_dir: '"{{ lockd.lockspace }}"'
    - require:
      - file: lockd-lockspace
{%- endif %}
{%- if hyper.manage_service %}

virtlockd:
  service.running:
    - enable: True
    - require:
      - file: lockd-leases-config

lockd-libvirtd-restart:
  service.running:
    - name: {{ hyper.service }}
    - require:
      - service: virtlockd
    - watch:
      - file: lockd-qemu-config
      - file: lockd-leases-config
{%- if not lockd.get('lockspace') %}
      - file: lockd-direct-leases
{%- endif %}
{%- endif %}
{%- endif %}
