# Classic state: virt.running -- the argument fragment "hypervisor_features" of the Salt
# 3001-3007 docstring, on a VM of its own (name, cpu and mem of the lab's choice).
# NOT APPLIED ON THE LAB: kvm-hint-dedicated is a KVM feature for a host-passthrough CPU; this
# lab's guests run under TCG (KVM does not run guests here, docs/lab.rst).
cls-kvm-hint:
  virt.running:
    - cpu: 1
    - mem: 128
    - hypervisor_features:
        kvm-hint-dedicated: True
