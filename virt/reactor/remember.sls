# salt://virt/reactor/remember.sls -- master reactor for the libvirt_events engine's domain
# events: refresh the master's copy of that VM's definition and location (salt-run
# virt.remember), which virt.evacuate restarts a dead hypervisor's VMs from.
#
#   reactor:
#     - 'salt/engines/libvirt_events/*/domain/*/defined':
#       - salt://virt/reactor/remember.sls
#     - 'salt/engines/libvirt_events/*/domain/*/undefined':
#       - salt://virt/reactor/remember.sls
#     - 'salt/engines/libvirt_events/*/domain/*/started':
#       - salt://virt/reactor/remember.sls
#     - 'salt/engines/libvirt_events/*/domain/*/stopped':
#       - salt://virt/reactor/remember.sls
#
# data['id'] names the hypervisor, but any minion can send an event with the id it likes (a
# batch of events, as salt-syndic sends them, reaches the bus as sent): the runner refuses ids
# outside virt:hypervisors and keeps the definition the engine attached only with that
# hypervisor's signature (docs/security.rst). It is then stored without a round trip to the
# hypervisor (an engine configured with definitions: False makes the runner ask).
{%- set event = data.get('data') or {} %}
{%- set vm = event.get('domain', {}).get('name') %}
{%- if vm %}
remember-{{ vm }}:
  runner.virt.remember:
    - args:
      - host: {{ data['id'] | json }}
      - name: {{ vm | json }}
{%- if event.get('definition') is mapping %}
      - definition: {{ event['definition'] | json }}
{%- endif %}
{%- endif %}
