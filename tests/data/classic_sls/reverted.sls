# Classic state: virt.reverted -- the docstring examples of Salt 3001-3007.
# Adapted: the names "domain_name" -> cls-rev and "domain_name_1" -> cls-rev1 (VMs the test
# makes beforehand with snapshots: cls-rev has three, taken one after the other; cls-rev1 one),
# and the snapshot "snapshot_name" -> cls-rev1-snapshot_name (virt.snapshot names a snapshot
# <vm>-<suffix>).
# Like the classic state, virt.reverted acts on every run (it reverts again).
cls-rev:
  virt.reverted:
    - cleanup: True

cls-rev1:
  virt.reverted:
    - snapshot: cls-rev1-snapshot_name
    - cleanup: False
