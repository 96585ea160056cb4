# salt://virt/reactor/restart_crashed.sls -- master reactor: start again a VM whose guest
# crashed (libvirt stopped it with detail "crashed"; domains with on_crash=destroy, the
# default, end up stopped). A guest that crashes in a loop is restarted in a loop: watch it.
#
#   reactor:
#     - 'salt/engines/libvirt_events/*/domain/*/stopped':
#       - salt://virt/reactor/restart_crashed.sls
#
# The hypervisor is the event's sender (data['id']); the runner refuses ids outside
# virt:hypervisors.
{%- set payload = data.get('data') or {} %}
{%- if payload.get('detail') == 'crashed' and payload.get('domain', {}).get('name') %}
restart-{{ payload['domain']['name'] }}:
  runner.virt.start:
    - args:
      - name: {{ payload['domain']['name'] | json }}
      - host: {{ data['id'] | json }}
{%- endif %}
