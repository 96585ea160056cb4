"""In-flight ``virt.init`` calls, recorded on the master so that none ends half done.

The runner writes an intent before it publishes the hypervisor's job and removes it once the VM
is complete (key accepted, reservation turned into the VM). If the runner is interrupted (Ctrl-C,
killed, a timeout, the master restarting), the intent stays, and so does the reservation:
``salt-run virt.reconcile`` (or the next ``virt.init`` of that name) finishes the VM when the
hypervisor made it, or removes what is left when it did not. :func:`decide` is that choice, as a
pure function of what the hypervisor reports.

One JSON file per VM name (mode 0600) in the master's cache; writes are atomic.
"""

import json
import os
import re
import time

from saltvirt import fileio
from saltvirt.errors import InvalidArgument

_NAME = re.compile(r"^[A-Za-z0-9_.+-]{1,64}$")

#: What :func:`decide` may answer.
WAIT, COMPLETE, ROLLBACK = "wait", "complete", "rollback"


class Intents:
    """The directory of intents (created 0700 on first write)."""

    def __init__(self, directory, clock=time.time):
        self.directory = os.fspath(directory)
        self.clock = clock

    def _path(self, name):
        if not isinstance(name, str) or not _NAME.match(name) or name.startswith("."):
            raise InvalidArgument(f"not a VM name: {name!r}")
        return os.path.join(self.directory, f"{name}.json")

    def begin(self, name, host, **fields):
        """Record that ``name`` is being created on ``host``; return the record."""
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        record = {"name": name, "host": host, "started": self.clock(), **fields}
        fileio.write_atomic(self._path(name), json.dumps(record).encode(), 0o600)
        return record

    def update(self, name, **fields):
        record = self.get(name) or {"name": name}
        record.update(fields)
        fileio.write_atomic(self._path(name), json.dumps(record).encode(), 0o600)
        return record

    def get(self, name):
        try:
            with open(self._path(name)) as fh:
                return json.load(fh)
        except FileNotFoundError:
            return None
        except ValueError:
            return {"name": name, "corrupt": True}

    def all(self):
        try:
            names = sorted(f[:-5] for f in os.listdir(self.directory) if f.endswith(".json"))
        except FileNotFoundError:
            return []
        return [r for r in (self.get(n) for n in names) if r is not None]

    def end(self, name):
        try:
            os.unlink(self._path(name))
            return True
        except FileNotFoundError:
            return False


def decide(intent, job_running, vm):
    """What to do with an unfinished init: ``(WAIT | COMPLETE | ROLLBACK, reason)``.

    ``job_running``: the hypervisor still runs the init job (``None``: it did not say).
    ``vm``: the hypervisor's view of the name (``{"defined": bool, "minion_pub": str|None}``),
    ``None`` if the hypervisor did not answer.
    """
    host = intent.get("host")
    if vm is None or job_running is None:
        return WAIT, f"{host} did not answer: nothing is decided while it is unreachable"
    if job_running:
        return WAIT, f"the virt.init job is still running on {host}"
    if vm.get("defined"):
        if intent.get("seed") and not vm.get("minion_pub"):
            return ROLLBACK, f"{intent['name']} is defined on {host} but its seed has no public key"
        return COMPLETE, f"{intent['name']} was created on {host}"
    return ROLLBACK, f"{intent['name']} was not created on {host}"
