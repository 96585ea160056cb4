# Classic state: virt.network_running -- the docstring examples and fragments of Salt 3001-3007
# that need host hardware this lab does not have (names of the lab's choice; each fragment
# exactly as written, with the least a network needs around it).
# NOT APPLIED ON THE LAB (tests/unit/test_classic_sls.py checks them; docs/upgrading.rst):
# * cls-netrun-ovs, cls-netrun-vlan: an Open vSwitch bridge ("main"), which this lab has no
#   Open vSwitch for; libvirt starts such a network only when the bridge exists.
# * cls-netrun-pt: passthrough to the host NICs eth10-eth12, which do not exist here.
# * cls-netrun-hd, cls-netrun-pf: SR-IOV PCI devices (PCI passthrough) this lab does not have;
#   cls-netrun-hd also writes its PCI addresses under "interfaces" (see
#   network_defined_addresses.sls): salt-virt refuses them there.
cls-netrun-ovs:
  virt.network_running:
    - bridge: main
    - forward: bridge
    - vport: openvswitch
    - tag: 180
    - autostart: True

cls-netrun-vlan:
  virt.network_running:
    - bridge: main
    - forward: bridge
    - vport:
        type: openvswitch
        parameters:
          interfaceid: 09b11c53-8b5c-4eeb-8f00-d84eaa0aaa4f
    - tag:
        trunk: True
        tags:
          - id: 42
            nativeMode: untagged
          - id: 47

cls-netrun-pt:
  virt.network_running:
    - forward: passthrough
    - interfaces: "eth10 eth11 eth12"

cls-netrun-hd:
  virt.network_running:
    - forward: hostdev
    - interfaces: "0000:04:00.1 0000:e3:01.2"

cls-netrun-pf:
  virt.network_running:
    - forward: hostdev
    - physical_function: "eth0"
