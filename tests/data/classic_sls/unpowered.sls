# Classic state: virt.unpowered (deprecated since 2016.3). Its docstring example reads
# "domain_name: virt.stopped" (see stopped.sls); here the state it documents, on the same shape.
# Adapted: the name "domain_name" -> cls-unpw (a running VM the test makes beforehand), and
# virt.stopped -> virt.unpowered.
cls-unpw:
  virt.unpowered
