"""The VMs' minion keys on the master: accepted here, made on the hypervisors.

The runner accepts the public key a seeded VM's hypervisor returns (the private key never
leaves the hypervisor and the VM) and records which accepted keys are VMs' (the registry),
so that ``virt.reconcile`` and ``virt.purge`` only ever delete those.
"""

import contextlib
import os

from saltvirt import fileio
from saltvirt.errors import InvalidArgument, VirtError

KEY_DIRS = ("minions", "minions_pre", "minions_rejected", "minions_denied")


def _read(path):
    try:
        with open(path) as fh:
            return fh.read().strip()
    except OSError:
        return None


class MinionKeys:
    """The master's key directories (``pki_dir``) and the registry of VM keys (``registry``)."""

    def __init__(self, pki_dir, registry):
        self.pki_dir, self.registry = pki_dir, registry

    def path(self, sub, name):
        return os.path.join(self.pki_dir, sub, name)

    def known(self):
        """Every minion id the master holds a key for, accepted or not."""
        found = set()
        for sub in KEY_DIRS:
            with contextlib.suppress(OSError):
                found.update(os.listdir(os.path.join(self.pki_dir, sub)))
        return found

    def accepted(self):
        with contextlib.suppress(OSError):
            return set(os.listdir(os.path.join(self.pki_dir, "minions")))
        return set()

    def accept(self, name, pub, host):
        """Accept ``name``'s public key and register it as the key of a VM on ``host``.

        A pending key with the same content (the new minion asked before this ran) is moved to
        accepted; any other key under that id -- something else claims the name -- is refused.
        """
        pub = pub.strip()
        for sub in KEY_DIRS:
            found = _read(self.path(sub, name))
            if found is None or (found == pub and sub in ("minions", "minions_pre")):
                continue
            raise InvalidArgument(
                f"not accepting the key of VM {name}: the master holds another key for that id in {sub}; "
                f"the VM was removed again. Check `salt-key -f {name}` before reusing the name"
            )
        accepted = self.path("minions", name)
        try:
            fileio.write_atomic(accepted, (pub + "\n").encode(), 0o644)
        except OSError as exc:
            raise VirtError(
                f"cannot accept the key of {name}: {os.path.dirname(accepted)} is not writable ({exc.strerror})"
            ) from exc
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path("minions_pre", name))
        os.makedirs(self.registry, mode=0o700, exist_ok=True)
        fileio.write_atomic(os.path.join(self.registry, name), host.encode(), 0o600)
        return accepted

    def delete(self, name):
        """Delete ``name``'s accepted key; True if there was one."""
        try:
            os.unlink(self.path("minions", name))
            return True
        except FileNotFoundError:
            return False

    def unregister(self, name):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self.registry, name))

    def registered(self):
        """The VMs whose keys this runner accepted."""
        return sorted(os.listdir(self.registry)) if os.path.isdir(self.registry) else []
