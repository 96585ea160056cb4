# salt://virt/firewall.sls -- open libvirt's TLS port (16514) for migration between hypervisors.
libvirt-tls-port:
  iptables.append:
    - table: filter
    - chain: INPUT
    - match: state
    - connstate: NEW
    - proto: tcp
    - dport: 16514
    - jump: ACCEPT
    - save: True
