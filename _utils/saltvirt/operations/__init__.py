"""Operating the cloud: cordons, draining a hypervisor, evacuating a dead one.

The runner (``salt-run virt.drain`` / ``virt.uncordon`` / ``virt.evacuate``) is glue over
these modules: :mod:`.cordons` (the master's record of cordoned hosts), :mod:`.drain` (what a
drain does with each VM, and its report) and :mod:`.evacuate` (which VMs of a dead host may be
restarted elsewhere, and where).
"""
