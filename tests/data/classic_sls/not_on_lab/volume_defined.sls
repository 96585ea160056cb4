# Classic state: virt.volume_defined -- the docstring example of Salt 3001-3007.
# Adapted: nothing.
# NOT APPLIED ON THE LAB: it is a VMware ESXi example (the datastore "[local-storage]" and a
# .vmdk under a VM folder, through an esx:// connection); salt-virt drives QEMU/KVM only, and
# refuses volume names with "/" (docs/upgrading.rst, virt.volume_define).
esx_volume:
  virt.volume_defined:
    - pool: "[local-storage]"
    - name: myvm/myvm.vmdk
    - size: 8192
