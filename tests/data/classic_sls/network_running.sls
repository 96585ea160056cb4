# Classic state: virt.network_running -- the docstring examples of Salt 3001-3007.
# Adapted: the state IDs / network names (each example says "network_name"). The NAT example's
# network is named "admin": the classic virt.running/virt.defined examples attach a NIC to a
# network of that name. Its bridge is "natadmin" instead of "natted" (network_defined.sls
# defines a network with the bridge "natted" on the same hypervisor, and libvirt refuses a
# bridge name twice). The fragments "domain", "nat" and "dns" are given on a NAT network of
# their own (bridge and range of the lab's choice). The Open vSwitch example and the
# vport/tag/passthrough/hostdev fragments are in not_on_lab/network_running.sls.

# "network_name: virt.network_running"
cls-netrun:
  virt.network_running

# "bridge: natted, forward: nat, ipv4_config with two DHCP ranges, autostart: True"
admin:
  virt.network_running:
    - bridge: natadmin
    - forward: nat
    - ipv4_config:
        cidr: 192.168.42.0/24
        dhcp_ranges:
          - start: 192.168.42.10
            end: 192.168.42.25
          - start: 192.168.42.100
            end: 192.168.42.150
    - autostart: True

# Fragments "domain", "nat" and "dns".
cls-netrun-dns:
  virt.network_running:
    - bridge: natdns2
    - forward: nat
    - ipv4_config:
        cidr: 192.168.45.0/24
    - nat:
        address:
          start: 1.2.3.4
          end: 1.2.3.10
        port:
          start: 500
          end: 1000
    - domain:
        name: lab.acme.org
        localOnly: True
    - dns:
        forwarders:
          - domain: example.com
            addr: 192.168.1.1
          - addr: 8.8.8.8
          - domain: www.example.com
        txt:
          host.widgets.com.: "printer=lpr5"
          example.com.: "This domain name is reserved for use in documentation"
        hosts:
          192.168.1.2:
            - mirror.acme.lab
            - test.acme.lab
        srvs:
          - name: ldap
            protocol: tcp
            domain: ldapserver.example.com
            target: .
            port: 389
            priority: 1
            weight: 10
