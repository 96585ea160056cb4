# salt://virt/reactor/restart_crashed.sls -- master reactor: start again a VM whose guest
# crashed (libvirt stopped it with detail "crashed"; domains with on_crash=destroy, the
# default, end up stopped). A guest that crashes in a loop is restarted in a loop: watch it.
#
#   reactor:
#     - 'salt/engines/libvirt_events/*/domain/*/stopped':
#       - salt://virt/reactor/restart_crashed.sls
#
# data['id'] names the hypervisor, but any minion can send an event in a hypervisor's name:
# the runner (virt.restart_crashed) starts the VM only when the definition the engine attached
# carries that hypervisor's signature and says stopped/crashed (docs/security.rst).
{%- set payload = data.get('data') or {} %}
{%- if payload.get('detail') == 'crashed' and payload.get('domain', {}).get('name') %}
restart-{{ payload['domain']['name'] }}:
  runner.virt.restart_crashed:
    - args:
      - host: {{ data['id'] | json }}
      - name: {{ payload['domain']['name'] | json }}
      - definition: {{ payload.get('definition') | json }}
{%- endif %}
