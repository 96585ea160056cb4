# salt://virt/reactor/unseed.sls -- master reactor for salt/minion/*/start: a VM whose minion
# has authenticated no longer needs its cidata seed ISO (which holds its private key): detach
# and delete it. Ids that are no VM (hypervisors, other minions) are a no-op of the runner.
#
#   reactor:
#     - 'salt/minion/*/start':
#       - salt://virt/reactor/unseed.sls
unseed-{{ data['id'] }}:
  runner.virt.unseed:
    - args:
      - name: {{ data['id'] | json }}
