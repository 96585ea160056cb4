# Classic state: virt.network_defined -- the docstring fragment of "addresses" (forward: hostdev),
# on a network of its own (name of the lab's choice).
# NOT APPLIED ON THE LAB: the classic documentation writes the PCI addresses under
# "interfaces" (the parameter it documents is "addresses"); salt-virt refuses a PCI address as
# an interface name and says to give it as "addresses" (tests/unit/test_classic_sls.py checks
# both). With "addresses" the network would need those PCI devices (SR-IOV virtual functions),
# which this lab does not have.
cls-netdef-hd:
  virt.network_defined:
    - forward: hostdev
    - interfaces: "0000:04:00.1 0000:e3:01.2"
