"""The master's side of the cloud: the hypervisor minions as one fleet (:mod:`.hosts`), the
minion keys of the VMs (:mod:`.keys`), creating VMs whole or not at all (:mod:`.provision`),
migrations (:mod:`.migrate`) and consoles (:mod:`.consoles`).

The runner (``_runners/virt.py``) builds these objects from the master's opts
(:func:`saltvirt.fleet.hosts.from_opts`) and is glue over them.
"""
