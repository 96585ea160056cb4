# Example pillar top file for a Salt Virt deployment (copy into your pillar_roots).
base:
  'hypervisor*':
    - virt
