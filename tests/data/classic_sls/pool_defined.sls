# Classic state: virt.pool_defined -- the docstring example of Salt 3001-3007.
# Adapted: the name ("pool_name") and the target (/mnt/cifs -> a directory under the lab's
# allowed pool targets, virt:pools:allowed_targets). The pool is only defined and built (its
# target directory made with these permissions): the CIFS share is mounted when the pool starts,
# which needs the servers one/two.example.com (pool_running's copy is in not_on_lab/).
cls-cifs:
  virt.pool_defined:
    - ptype: netfs
    - target: /var/lib/libvirt/images/cls-cifs
    - permissions:
        - mode: 0770
        - owner: 1000
        - group: 100
    - source:
        dir: samba_share
        hosts:
          - one.example.com
          - two.example.com
        format: cifs
    - autostart: True
