# salt://virt/libvirtd.sls -- libvirtd.conf: listen for TLS (port 16514), no plain TCP.
# Extra settings come from pillar virt:hypervisor:libvirtd_conf (e.g. listen_addr, host_uuid).
{%- from "virt/map.jinja" import hyper with context %}
{%- set settings = {'listen_tls': 1, 'listen_tcp': 0} %}
{%- do settings.update(hyper.libvirtd_conf) %}

libvirtd-config:
  file.keyvalue:
    - name: /etc/libvirt/libvirtd.conf
    - separator: ' = '
    - uncomment: '#'
    - append_if_not_found: True
    - key_values:
{%- for key, value in settings | dictsort %}
{%- if value is number %}
        {{ key }}: {{ value }}
{%- else %}
        {{ key }}: '"{{ value }}"'
{%- endif %}
{%- endfor %}
