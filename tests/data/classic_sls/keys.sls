# Classic state: virt.keys (module docstring example of Salt 3001-3007's salt/states/virt.py).
# Adapted: nothing.
libvirt_keys:
  virt.keys
