# salt://virt/bridge.sls -- the seed's hypervisor network: br0 bridged to a NIC.
# Pillar virt:hypervisor:bridge: {enabled: True, name: br0, interface: eth0, proto: dhcp}
{%- from "virt/map.jinja" import hyper with context %}
{%- set br = hyper.bridge %}

{{ br.get('interface', 'eth0') }}:
  network.managed:
    - enabled: True
    - type: eth
    - bridge: {{ br.get('name', 'br0') }}

{{ br.get('name', 'br0') }}:
  network.managed:
    - enabled: True
    - type: bridge
    - proto: {{ br.get('proto', 'dhcp') }}
    - require:
      - network: {{ br.get('interface', 'eth0') }}
