# salt://virt/lockd.sls -- libvirt's lock manager (virtlockd): a disk that a QEMU on one
# hypervisor has open cannot be opened by a QEMU on another one, so a VM can never run twice
# (salt-run virt.evacuate relies on it; docs/operations.rst). Leases live in a lockspace
# directory on the storage the hypervisors share: pillar virt:hypervisor:lockd:lockspace, the
# same path on every hypervisor. Off unless that pillar key is set.
{%- from "virt/map.jinja" import hyper with context %}
{%- set lockd = salt['pillar.get']('virt:hypervisor:lockd', {}) %}
{%- if not lockd.get('lockspace') %}
lockd-not-configured:
  test.fail_without_changes:
    - name: 'pillar virt:hypervisor:lockd:lockspace is not set: the shared directory for the disk leases'
{%- else %}

lockd-lockspace:
  file.directory:
    - name: {{ lockd.lockspace }}
    - mode: '0700'
    # the shared storage itself must be mounted already: never create it here
    - makedirs: False

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
        file_lockspace_dir: '"{{ lockd.lockspace }}"'
    - require:
      - file: lockd-lockspace
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
{%- endif %}
{%- endif %}
