"""Which syndic's master holds the minion keys of a hypervisor's VMs.

On a master of masters (``order_masters``) the hypervisors are minions of syndics' masters, and
so are the VMs they create: a VM's seeded minion config names its hypervisor's master, and that
master -- not the master of masters -- must hold the VM's key. The master of masters reaches a
syndic's master through a minion running on the syndic's host (``saltutil.runner`` there runs
the syndic master's own ``virt`` runner). The master of masters' config says which::

    virt:
      syndics:
        syndic1: 'hv-east-*'             # minion on syndic1's host: the hypervisors under it
        syndic2: [hv-west-1, hv-west-2]  # a glob, a list, or {tgt: ..., tgt_type: pcre}

A hypervisor that no entry matches keeps its VMs' keys on the master the runner runs on.
"""

from saltvirt.errors import InvalidArgument
from saltvirt.trust import Hypervisors


class Syndics:
    """``virt:syndics``: for each syndic, the minion on its host and the hypervisors under it."""

    def __init__(self, entries=()):
        self._entries = list(entries)  # [(key minion id, Hypervisors)]

    @classmethod
    def from_config(cls, value):
        """Build from the master's ``virt:syndics`` (absent or empty: no syndic)."""
        if value in (None, "", {}):
            return cls()
        if not isinstance(value, dict):
            raise InvalidArgument(
                f"virt:syndics must map the minion id on each syndic's host to the hypervisors "
                f"under that syndic (e.g. {{syndic1: 'hypervisor*'}}), got {value!r}"
            )
        entries = []
        for minion, target in value.items():
            if not isinstance(minion, str) or not minion or any(c in minion for c in "*?[,"):
                raise InvalidArgument(
                    f"virt:syndics: {minion!r} must be exactly one minion id (the minion on a "
                    "syndic's host), not a glob or list"
                )
            if target in (None, "", []):
                raise InvalidArgument(
                    f"virt:syndics:{minion}: name the hypervisors under this syndic (a glob, a list of "
                    "minion ids or {tgt: ..., tgt_type: pcre})"
                )
            try:
                entries.append((minion, Hypervisors.from_config(target)))
            except InvalidArgument as exc:
                raise InvalidArgument(f"virt:syndics:{minion}: {exc}") from exc
        return cls(entries)

    def __bool__(self):
        return bool(self._entries)

    def key_minion(self, host):
        """The minion that manages keys on ``host``'s master; None when that is this master."""
        found = [minion for minion, hypervisors in self._entries if hypervisors.matches(host)]
        if len(found) > 1:
            raise InvalidArgument(
                f"hypervisor {host} matches several entries of virt:syndics ({', '.join(found)}): "
                "a hypervisor hangs off one syndic; make the targets disjoint"
            )
        return found[0] if found else None
