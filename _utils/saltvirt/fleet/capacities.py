"""The hypervisors' capacity as the master last saw it, so that ``virt.init`` need not ask them all.

A survey of every hypervisor (``virt.capacity``: the placement of ``virt.init``, ``host_info``,
``next_host``, ``drain``; ``virt.migrate_survey``) is kept here with the time it was made. For
``virt:capacity_ttl`` seconds after it (default 60; 0: never used) ``virt.init`` places a VM
from this copy instead of a new fan-out, which at 50 hypervisors is most of its time.

What keeps the copy true meanwhile:

* the runner's own changes: a VM it creates is added to its hypervisor, one it starts counts
  as running, one it migrates moves, one it purges is removed;
* the libvirt_events engine's events through the ``remember`` reactor (a VM defined, started,
  stopped or undefined on a hypervisor, by anyone);
* anything it cannot follow -- a failed ``virt.init``, an evacuation, a VM the copy does not
  know -- discards the whole copy: the next ``virt.init`` asks every hypervisor again.

Nothing here is trusted beyond placement: the hypervisor still refuses a name it already has
and disks that do not fit, and the master's reservations still cover concurrent ``virt.init``
calls.
"""

import time

from saltvirt import fileio
from saltvirt.domain.model import CLAIMING_STATES

DEFAULT_TTL = 60


class Capacities:
    """``{"at": time, "hosts": {host: capacity}, "errors": {host: why}}`` in one JSON file."""

    def __init__(self, path, ttl=DEFAULT_TTL, clock=time.time):
        self.path = path
        self._ttl = ttl  # seconds, or a callable read when needed (a bad setting fails virt.init only)
        self.clock = clock

    @property
    def ttl(self):
        return float(self._ttl() if callable(self._ttl) else self._ttl)

    def _read(self):
        return fileio.read_json_object(self.path, _valid)

    def _changing(self):
        return fileio.changing_json_object(self.path, _valid)

    # -------------------------------------------------------------- reading

    def current(self):
        """``(answers, errors)`` as the last survey of every hypervisor left them, kept up to date
        since; None when there is none within the TTL (or the TTL is 0)."""
        ttl = self.ttl
        if ttl <= 0:
            return None
        data = self._read()
        age = self.clock() - float(data.get("at") or 0)
        if not data.get("hosts") or not 0 <= age <= ttl:
            return None
        errors = data.get("errors") if isinstance(data.get("errors"), dict) else {}
        return data["hosts"], dict(errors)

    def hosts(self):
        """The hypervisors the last survey heard from or about, whatever its age (a list)."""
        data = self._read()
        errors = data.get("errors") if isinstance(data.get("errors"), dict) else {}
        return sorted(set(data.get("hosts") or {}) | set(errors))

    # -------------------------------------------------------------- what was seen

    def saw(self, answers, errors):
        """A survey of every hypervisor: it replaces the copy (hosts absent from it are gone)."""
        hosts = {h: a for h, a in answers.items() if isinstance(a, dict) and isinstance(a.get("node_info"), dict)}
        with self._changing() as data:
            data.clear()
            data.update(at=self.clock(), hosts=hosts, errors=dict(errors))

    def saw_host(self, host, answer):
        """One hypervisor's fresh answer; the others' stay as they were."""
        with self._changing() as data:
            if data.get("hosts") and isinstance(answer, dict) and isinstance(answer.get("node_info"), dict):
                data["hosts"][host] = answer
                (data.get("errors") or {}).pop(host, None)

    def discard(self):
        """Forget everything: the next placement asks every hypervisor."""
        with self._changing() as data:
            data.clear()

    # -------------------------------------------------------------- what changed

    def defined(self, host, usage, disk_mib=0):
        """VM ``usage`` (``{name, cpu, memory, state}``, as ``vmops.domain_usage``) is now on
        ``host``; ``disk_mib`` of new disks were made there."""
        with self._changing() as data:
            info = (data.get("hosts") or {}).get(host)
            if info is None:
                if data.get("hosts"):
                    data.clear()  # a hypervisor the copy does not know (or knows as down)
                return
            vms = [u for u in info.get("usage") or () if u.get("name") != usage["name"]]
            info["usage"] = vms + [dict(usage)]
            if disk_mib and isinstance(info.get("disk_free"), (int, float)):
                info["disk_free"] = info["disk_free"] - disk_mib
            _totals(info)

    def state(self, host, name, state):
        """VM ``name`` on ``host`` is now in ``state``; a VM the copy does not have there
        discards the copy (its claims are unknown)."""
        with self._changing() as data:
            vm = _vm(data, host, name)
            if vm is None:
                data.clear()
                return
            vm["state"] = state
            _totals(data["hosts"][host])

    def undefined(self, host, name):
        """VM ``name`` is no longer on ``host``; its usage, or None."""
        with self._changing() as data:
            vm = _vm(data, host, name)
            if vm is not None:
                info = data["hosts"][host]
                info["usage"] = [u for u in info["usage"] if u is not vm]
                _totals(info)
            return vm

    def moved(self, name, source, target):
        """VM ``name`` migrated from ``source`` to ``target`` (the same host: nothing moved)."""
        if target == source:
            return
        vm = self.undefined(source, name)
        if vm is None:
            self.discard()
        else:
            self.defined(target, vm)


def _valid(data):
    return isinstance(data.get("hosts"), dict)


def _vm(data, host, name):
    info = (data.get("hosts") or {}).get(host)
    for vm in (info or {}).get("usage") or ():
        if vm.get("name") == name:
            return vm
    return None


def _totals(info):
    """``freemem``/``freecpu`` again from the node and its domains (as the hypervisor counts them)."""
    node = info.get("node_info") or {}
    running = [u for u in info.get("usage") or () if u.get("state") in CLAIMING_STATES]
    if "phymemory" in node:
        info["freemem"] = node["phymemory"] - sum(int(u.get("memory") or 0) for u in running)
    if "cpus" in node:
        info["freecpu"] = node["cpus"] - sum(int(u.get("cpu") or 0) for u in running)
