# Classic state: virt.pool_deleted -- the docstring example of Salt 3001-3007.
# Adapted: the name ("pool_name"), and the module name: the docstring says
# "uyuni_virt.pool_deleted" (the name of the state module in Uyuni, where it came from); in Salt
# it is virt.pool_deleted. The pool is a running directory pool holding a volume that the test
# makes beforehand, as the example presumes one.
cls-gone:
  virt.pool_deleted:
    - purge: True
