# Classic state: virt.saved (deprecated since 2016.3) -- the docstring examples of Salt 3001-3007.
# Adapted: the names "domain_name" -> cls-saved and "domain*" -> cls-savedw* (VMs the test
# makes beforehand).
cls-saved:
  virt.saved:
    - suffix: periodic

cls-savedw*:
  virt.saved:
    - suffix: periodic
