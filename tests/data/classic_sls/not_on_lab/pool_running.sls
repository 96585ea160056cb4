# Classic state: virt.pool_running -- the docstring's netfs example of Salt 3001-3007.
# Adapted: the name ("pool_name") and the target (/mnt/cifs -> under the lab's allowed targets).
# NOT APPLIED ON THE LAB: starting the pool mounts the CIFS share samba_share of
# one.example.com, a server this lab does not have. Its pool_defined twin (define and build
# only) is applied: ../pool_defined.sls.
cls-cifs-run:
  virt.pool_running:
    - ptype: netfs
    - target: /var/lib/libvirt/images/cls-cifs-run
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
