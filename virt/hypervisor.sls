# salt://virt/hypervisor.sls -- turn a machine into a Salt Virt hypervisor: the Python
# libraries in Salt's own Python, packages, libvirtd listening for TLS, the libvirt keys, the
# service, br0 and the firewall.
{%- from "virt/map.jinja" import hyper with context %}

include:
  - virt.python
  - virt.libvirtd
  - virt.keys
{%- if hyper.bridge.get('enabled', False) %}
  - virt.bridge
{%- endif %}
{%- if hyper.firewall %}
  - virt.firewall
{%- endif %}
{%- if hyper.postcopy %}
  - virt.postcopy
{%- endif %}
{%- if salt['pillar.get']('virt:hypervisor:lockd:enabled') or salt['pillar.get']('virt:hypervisor:lockd:lockspace') %}
  - virt.lockd
{%- endif %}

libvirt:
  pkg.installed:
    - pkgs: {{ hyper.pkgs | json }}
    - require_in:
      - file: libvirtd-config
      - file: qemu-tls-config
      - virt: libvirt_keys

{%- if hyper.manage_service %}
{%- if hyper.listen_mode == 'flag' %}

libvirtd-listen:
  file.managed:
    - name: {{ hyper.sysconfig }}
    - contents: '{{ hyper.sysconfig_contents }}'
    - require:
      - pkg: libvirt
{%- else %}

libvirtd-listen:
  service.running:
    - name: {{ hyper.tls_socket }}
    - enable: True
    - require:
      - pkg: libvirt
      - virt: libvirt_keys
{%- endif %}

libvirtd:
  service.running:
    - name: {{ hyper.service }}
    - enable: True
    - require:
      - pkg: libvirt
{%- if hyper.bridge.get('enabled', False) %}
      - network: {{ hyper.bridge.get('name', 'br0') }}
{%- endif %}
    - watch:
      - file: libvirtd-config
      - file: qemu-tls-config
      - virt: libvirt_keys
{%- if hyper.listen_mode == 'flag' %}
      - file: libvirtd-listen
{%- endif %}
{%- endif %}
