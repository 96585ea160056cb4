# Classic state: virt.pool_running -- the docstring's first example (an existing pool is started).
# Adapted: the name ("pool_name"). The pool is a directory pool the test defines (not started)
# beforehand, as the example presumes one; the VM examples (defined.sls, running.sls) put their
# disks in it. The netfs/CIFS example is in not_on_lab/pool_running.sls.
cls-default:
  virt.pool_running
