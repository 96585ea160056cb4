# salt://virt/postcopy.sls -- let QEMU (not root) use userfaultfd, which post-copy migration
# needs on the target (QEMU 7.2 and older have no other way than this sysctl). It widens what
# every unprivileged process may do, so it is off unless pillar virt:hypervisor:postcopy is True.
vm.unprivileged_userfaultfd:
  sysctl.present:
    - value: 1
    - config: /etc/sysctl.d/90-salt-virt-postcopy.conf
