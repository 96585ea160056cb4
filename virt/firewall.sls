# salt://virt/firewall.sls -- open libvirt's TLS port (16514) for migration between hypervisors,
# and keep the VNC console ports (qemu.conf remote_display_port_min..max) closed to everyone but
# this host itself and the console proxy (pillar virt:hypervisor:console_proxy, the master's
# address(es)): tenants on the same network never reach a console's RFB handshake.
{%- from "virt/map.jinja" import hyper with context %}
{%- set vnc_ports = hyper.vnc_port_min ~ ':' ~ hyper.vnc_port_max %}
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

{%- for source in ['127.0.0.0/8'] + hyper.console_proxy %}

vnc-from-{{ source | replace('/', '_') }}:
  iptables.append:
    - table: filter
    - chain: INPUT
    - proto: tcp
    - dport: '{{ vnc_ports }}'
    - source: {{ source }}
    - jump: ACCEPT
    - save: True
    - require_in:
      - iptables: vnc-from-others
{%- endfor %}

vnc-from-others:
  iptables.append:
    - table: filter
    - chain: INPUT
    - proto: tcp
    - dport: '{{ vnc_ports }}'
    - jump: DROP
    - save: True
