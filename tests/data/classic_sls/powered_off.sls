# Classic state: virt.powered_off. Its docstring example reads "domain_name: virt.stopped" (the
# same SLS as virt.stopped's, see stopped.sls); here the state it documents, on the same shape.
# Adapted: the name "domain_name" -> cls-off (a running VM the test makes beforehand), and
# virt.stopped -> virt.powered_off.
cls-off:
  virt.powered_off
