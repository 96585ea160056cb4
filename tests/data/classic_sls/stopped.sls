# Classic state: virt.stopped -- the docstring example of Salt 3001-3007. The docstrings of
# virt.powered_off and virt.unpowered show this same SLS (virt.stopped, a slip of the classic
# documentation); powered_off.sls and unpowered.sls apply the states they document.
# Adapted: the name "domain_name" -> cls-stop (a running VM the test makes beforehand).
cls-stop:
  virt.stopped
