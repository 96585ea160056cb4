# Classic state: virt.snapshot -- the docstring examples of Salt 3001-3007.
# Adapted: the names "domain_name" -> cls-snap and "domain*" -> cls-snapw* (VMs the test makes
# beforehand; the glob does not match cls-snap, so each example has VMs of its own).
cls-snap:
  virt.snapshot:
    - suffix: periodic

cls-snapw*:
  virt.snapshot:
    - suffix: periodic
