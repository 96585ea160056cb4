# Classic state: virt.defined -- the docstring examples of Salt 3001-3007.
# Adapted:
# * the name "domain_name" -> cls-defined;
# * image /path/to/image.qcow2 -> the lab's image; pool "default" -> cls-default, the directory
#   pool of pool_running.sls (started there);
# * the MAC 01:23:45:67:89:AB -> 02:23:45:67:89:AB: 01 is a multicast address, which libvirt
#   refuses for a NIC ("expected unicast mac address");
# * the disk and NIC profiles "prod" come from the pillar the test passes (virt:disk:prod,
#   virt:nic:prod), as the example presumes the operator configured them;
# * the argument fragments "clock" are given on VMs of their own (cpu and mem of the lab's choice).
# The fragments "cpu" (a dictionary), "mem" (a dictionary) and "hypervisor_features" are in
# not_on_lab/defined.sls.
cls-defined:
  virt.defined:
    - cpu: 2
    - mem: 2048
    - boot_dev: network hd
    - disk_profile: prod
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
        mac: 02:23:45:67:89:AB
      - name: eth1
        type: network
        source: admin
    - graphics:
        type: spice
        listen:
            type: address
            address: 192.168.0.125

# Fragment "clock" (adjustment).
cls-defined-clock:
  virt.defined:
    - cpu: 1
    - mem: 128
    - clock:
        adjustment: 3600
        utc: False

# Fragment "clock" (timezone).
cls-defined-tz:
  virt.defined:
    - cpu: 1
    - mem: 128
    - clock:
        timezone: CEST
