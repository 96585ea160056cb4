"""Where each VM is: a cache on the master so that a per-VM command is one Salt round trip.

Every fan-out that sees VMs (``virt.list``, ``virt.query``, the search of a VM) rewrites what it
saw; ``virt.init``, ``virt.migrate`` and ``virt.purge`` record their outcome. A command on a VM
goes straight to the cached hypervisor; when that hypervisor says the VM is not there (it moved
or was removed behind the master's back) the runner searches all hypervisors as before. A name
seen on two hypervisors is never cached: the search then refuses to choose, as it always did.
"""

import time

from saltvirt import fileio

AMBIGUOUS = ""  # a name defined on several hypervisors: never used as a location


class Locations:
    """``{vm: {host, seen}}`` in one JSON file, changed under a lock."""

    def __init__(self, path):
        self.path = path

    def _read(self):
        return fileio.read_json_object(self.path)

    def _changing(self):
        return fileio.changing_json_object(self.path)

    def get(self, name):
        """The hypervisor VM ``name`` was last seen on, or None (unknown or ambiguous)."""
        entry = self._read().get(name)
        return entry.get("host") or None if isinstance(entry, dict) else None

    def set(self, name, host):
        with self._changing() as data:
            data[name] = {"host": host, "seen": time.time()}

    def forget(self, name):
        with self._changing() as data:
            data.pop(name, None)

    def saw(self, vms_by_host, complete):
        """Record a fan-out's answers (``{host: [vm, ...]}``). ``complete``: every hypervisor
        answered, so a VM absent from all answers is gone; otherwise only what was seen counts
        (the VMs of a hypervisor that did not answer stay where they were)."""
        seen = {}
        for host, vms in vms_by_host.items():
            for vm in vms:
                seen[vm] = AMBIGUOUS if vm in seen and seen[vm] != host else host
        now = time.time()
        with self._changing() as data:
            if complete:
                data.clear()
            else:
                for vm in [v for v, e in data.items() if isinstance(e, dict) and e.get("host") in vms_by_host]:
                    if vm not in seen:
                        del data[vm]  # its hypervisor answered without it
            for vm, host in seen.items():
                data[vm] = {"host": host, "seen": now}
