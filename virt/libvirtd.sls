# salt://virt/libvirtd.sls -- libvirtd.conf: listen for TLS (port 16514), no plain TCP, and accept
# as TLS clients only certificates of the libvirt client unit (hypervisors and the operator, see
# docs/security.rst); qemu.conf: QEMU's TLS (migration, disk copies) verifies its peers.
# Extra settings come from pillar virt:hypervisor:libvirtd_conf (e.g. listen_addr, host_uuid).
{%- from "virt/map.jinja" import hyper with context %}
{#- Keep in step with saltvirt.pki.ALLOWED_CLIENT_DN (a unit test compares them). #}
{%- set allowed_dn = ['*OU=salt-virt-libvirt-client*'] + hyper.tls_allowed_dn_extra %}
{%- set settings = {'listen_tls': 1, 'listen_tcp': 0, 'tls_no_verify_certificate': 0,
                    'tls_allowed_dn_list': allowed_dn} %}
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
{%- elif value is string %}
        {{ key }}: '"{{ value }}"'
{%- else %}
        {{ key }}: '{{ value | json }}'
{%- endif %}
{%- endfor %}

qemu-tls-config:
  file.keyvalue:
    - name: /etc/libvirt/qemu.conf
    - separator: ' = '
    - uncomment: '#'
    - append_if_not_found: True
    - key_values:
        default_tls_x509_verify: 1
        migrate_tls_x509_verify: 1
        # the VNC ports virt.firewall keeps closed to all but the console proxy
        remote_display_port_min: {{ hyper.vnc_port_min }}
        remote_display_port_max: {{ hyper.vnc_port_max }}
