# salt://virt/reactor/restart_crashed.sls -- master reactor: start again a VM whose guest
# crashed (libvirt stopped it with detail "crashed"; domains with on_crash=destroy, the
# default, end up stopped). A guest that crashes in a loop is restarted in a loop: watch it.
#
#   reactor:
#     - 'salt/engines/libvirt_events/*/domain/*/stopped':
#       - salt://virt/reactor/restart_crashed.sls
#
# data['id'] names the hypervisor; the runner refuses ids outside virt:hypervisors. The
# event itself is not signed: any minion can send one in a hypervisor's name, and so make this
# start a VM that is defined and shut off there (docs/security.rst).
{%- set payload = data.get('data') or {} %}
{%- if payload.get('detail') == 'crashed' and payload.get('domain', {}).get('name') %}
restart-{{ payload['domain']['name'] }}:
  runner.virt.start:
    - args:
      - name: {{ payload['domain']['name'] | json }}
      - host: {{ data['id'] | json }}
{%- endif %}
