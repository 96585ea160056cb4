"""Who is a hypervisor, and which names a tenant's VM may not take.

Every VM that ``virt.init`` seeds becomes a minion of the same master. A VM chooses nothing that
makes it trusted: hypervisors are the minion ids the operator lists in the master's
``virt:hypervisors`` (a glob, a list or a regular expression of minion ids). Grain or pillar
targets are refused there, because a minion sets its own grains, and pillar top files match
minion ids anyway. The runner refuses a VM name that this set would match or that any key on the
master already carries, and the ``libvirt`` pillar issues certificates to this set only.
"""

import fnmatch
import re

from saltvirt.errors import InvalidArgument

#: Salt target types that name minion ids only.
ID_TARGET_TYPES = ("glob", "list", "pcre")

_GLOB_CHARS = "*?["


class Hypervisors:
    """The operator's set of hypervisor minion ids, as a Salt target.

    ``tgt`` is a glob (``hypervisor*``), a list of ids, or a regular expression
    (``tgt_type='pcre'``, matched like Salt's pcre targeting: from the start of the id).
    """

    def __init__(self, tgt, tgt_type="glob"):
        if tgt_type not in ID_TARGET_TYPES:
            raise InvalidArgument(
                f"virt:hypervisors uses tgt_type {tgt_type!r}, which a VM could satisfy by setting "
                f"its own grains; name hypervisors by minion id: a glob, a list or tgt_type "
                f"{'/'.join(ID_TARGET_TYPES)}"
            )
        if tgt_type == "list":
            if isinstance(tgt, str):
                tgt = [t.strip() for t in tgt.split(",") if t.strip()]
            if not tgt or not all(isinstance(t, str) and t for t in tgt):
                raise InvalidArgument(f"virt:hypervisors: a list of minion ids is needed, got {tgt!r}")
            tgt = list(tgt)
        elif not isinstance(tgt, str) or not tgt.strip():
            raise InvalidArgument(f"virt:hypervisors: a {tgt_type} of minion ids is needed, got {tgt!r}")
        if tgt_type == "pcre":
            try:
                self._regex = re.compile(tgt)
            except re.error as exc:
                raise InvalidArgument(f"virt:hypervisors: {tgt!r} is not a regular expression: {exc}") from exc
        self.tgt, self.tgt_type = tgt, tgt_type

    @classmethod
    def from_config(cls, value):
        """Build from the master's ``virt:hypervisors`` value (str, list or {tgt, tgt_type})."""
        if value is None or value == "":
            raise InvalidArgument(
                "virt:hypervisors is not set in the master config: list the hypervisor minion ids "
                "(e.g. virt: {hypervisors: 'hypervisor*'} or a list), so that no VM can become one"
            )
        if isinstance(value, dict):
            return cls(value.get("tgt"), value.get("tgt_type", "glob"))
        if isinstance(value, (list, tuple)):
            return cls(list(value), "list")
        return cls(value, "glob")

    def target(self):
        """``(tgt, tgt_type)`` for LocalClient."""
        return self.tgt, self.tgt_type

    def matches(self, minion_id):
        """Whether ``minion_id`` is (or would be) one of the hypervisors."""
        if not isinstance(minion_id, str):
            return False
        if self.tgt_type == "list":
            return minion_id in self.tgt
        if self.tgt_type == "pcre":
            return self._regex.match(minion_id) is not None
        return fnmatch.fnmatchcase(minion_id, self.tgt)

    def describe(self):
        tgt = ",".join(self.tgt) if self.tgt_type == "list" else self.tgt
        return f"{self.tgt_type} {tgt!r}"


def check_vm_name(name, hypervisors, known_minions=()):
    """Refuse a new VM's ``name`` that would make it a hypervisor or another minion.

    ``known_minions``: ids the master already has a key for (accepted, pending, rejected or
    denied). Raises :class:`InvalidArgument` with the fix in the message.
    """
    if hypervisors.matches(name):
        raise InvalidArgument(
            f"refusing VM name {name!r}: it matches the hypervisor target virt:hypervisors "
            f"({hypervisors.describe()}), so its minion would be trusted as a hypervisor; "
            "choose a name outside that target"
        )
    if name in set(known_minions):
        raise InvalidArgument(
            f"refusing VM name {name!r}: the master already has a minion key with that id; "
            f"choose another name, or remove the old key with `salt-key -d {name}`"
        )
    return name


def check_host(host, hypervisors):
    """``host`` if it names exactly one hypervisor minion id (no glob), else InvalidArgument."""
    if not isinstance(host, str) or not host or any(c in host for c in _GLOB_CHARS) or "," in host:
        raise InvalidArgument(
            f"host={host!r} must be exactly one hypervisor's minion id (no glob or list): "
            "name the host, e.g. host=hypervisor1"
        )
    if not hypervisors.matches(host):
        raise InvalidArgument(
            f"host={host!r} is not a hypervisor (virt:hypervisors is {hypervisors.describe()})"
        )
    return host
