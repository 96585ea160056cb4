# Classic state: virt.network_defined -- the docstring examples of Salt 3001-3007.
# Adapted: the state IDs / network names (the examples all say "network_name": here each gets
# a lab name). The argument fragments of the docstring (vport, tag, domain, nat, interfaces,
# physical_function, dns) are given on networks of their own, with the least the fragment needs
# around it (a bridge for vport/tag, a forward mode and an IPv4 range for nat/dns/domain).
# These networks are only defined (not started): libvirt does not need the Open vSwitch bridge
# or the passthrough NICs until a network starts.

# "network_name: virt.network_defined"
cls-netdef:
  virt.network_defined

# "bridge: main, forward: bridge, vport: openvswitch, tag: 180, autostart: True"
cls-netdef-ovs:
  virt.network_defined:
    - bridge: main
    - forward: bridge
    - vport: openvswitch
    - tag: 180
    - autostart: True

# "bridge: natted, forward: nat, ipv4_config with two DHCP ranges, autostart: True"
cls-netdef-nat:
  virt.network_defined:
    - bridge: natted
    - forward: nat
    - ipv4_config:
        cidr: 192.168.42.0/24
        dhcp_ranges:
          - start: 192.168.42.10
            end: 192.168.42.25
          - start: 192.168.42.100
            end: 192.168.42.150
    - autostart: True

# Fragments "vport" (a dictionary) and "tag" (a trunk), on an Open vSwitch bridge network
# (bridge "ovsmain": "main" is taken by cls-netdef-ovs on this hypervisor).
cls-netdef-vlan:
  virt.network_defined:
    - bridge: ovsmain
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

# Fragments "domain", "nat" and "dns", on a NAT network (bridge and range of the lab's choice).
cls-netdef-dns:
  virt.network_defined:
    - bridge: natdns
    - forward: nat
    - ipv4_config:
        cidr: 192.168.44.0/24
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
          example.com: "v=spf1 a -all"
          _http.tcp.example.com: "name=value,paper=A4"
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

# Fragment "interfaces" (passthrough).
cls-netdef-pt:
  virt.network_defined:
    - forward: passthrough
    - interfaces: "eth10 eth11 eth12"

# Fragment "physical_function" (hostdev).
cls-netdef-pf:
  virt.network_defined:
    - forward: hostdev
    - physical_function: "eth0"

# The fragment of "addresses" (forward: hostdev, PCI addresses) is in
# not_on_lab/network_defined_addresses.sls: its PCI addresses are written under "interfaces".
