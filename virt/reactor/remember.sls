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
# The hypervisor is the event's sender (data['id'], which the master authenticated), never a
# field of the payload; the runner refuses any id outside virt:hypervisors (a VM is a minion
# too and could send such an event).
# The engine attaches the VM's definition to these events: it is stored as sent, without a
# round trip to the hypervisor (an engine configured with definitions: False makes the runner ask).
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
