# salt://virt -- the whole hypervisor formula.
include:
  - virt.hypervisor
