# Classic state: virt.running -- the docstring examples of Salt 3001-3007.
# Adapted:
# * the names "domain_name" -> cls-running (full example), cls-started (the bare example: an
#   existing VM is started; the test defines it beforehand, as the example presumes one),
#   cls-memtune (the "mem" fragment that removes the limits of an existing VM; the test defines
#   it beforehand with a hard and a soft limit);
# * image /path/to/image.qcow2 -> the lab's image; pool "default" -> cls-default;
# * the MAC 01:23:45:67:89:AB -> 02:23:45:67:89:AC (01 is multicast, refused by libvirt; and
#   cls-defined holds the other unicast one);
# * the SPICE listen address 192.168.0.125 -> 127.0.0.1: QEMU binds it when the VM starts, and
#   the lab's hypervisor has no 192.168.0.125;
# * the disk and NIC profiles "prod" come from the pillar the test passes;
# * the "clock" fragments are given on VMs of their own (cpu and mem of the lab's choice).
# The fragment "hypervisor_features" is in not_on_lab/running.sls.
cls-running:
  virt.running:
    - cpu: 2
    - mem: 2048
    - disk_profile: prod
    - boot_dev: network hd
    - disks:
      - name: system
        size: 8192
        overlay_image: True
        pool: cls-default
        image: /var/lib/libvirt/images/centos.qcow2
      - name: data
        size: 16834
    - nic_profile: prod
    - interfaces:
      - name: eth0
        mac: 02:23:45:67:89:AC
      - name: eth1
        type: network
        source: admin
    - graphics:
        type: spice
        listen:
            type: address
            address: 127.0.0.1

# "domain_name: virt.running"
cls-started:
  virt.running

# Fragment "mem": the limits removed.
cls-memtune:
  virt.running:
    - mem:
        hard_limit: null
        soft_limit: null

# Fragment "clock" (adjustment).
cls-running-clock:
  virt.running:
    - cpu: 1
    - mem: 128
    - clock:
        adjustment: 3600
        utc: False

# Fragment "clock" (timezone).
cls-running-tz:
  virt.running:
    - cpu: 1
    - mem: 128
    - clock:
        timezone: CEST
