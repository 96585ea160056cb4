"""The master's copy of every VM's definition and location (``salt-run virt.remember``).

When a hypervisor dies, its libvirt is gone with it: ``salt-run virt.evacuate`` restarts its VMs
elsewhere from the definitions kept here. They are refreshed by ``virt.remember`` (schedule it,
or let the reactor in ``virt/reactor/remember.sls`` call it on the libvirt_events engine's
events) and double as a VM -> hypervisor location cache.

One JSON file per hypervisor and VM (``<host>/<vm>.json``, mode 0600, written atomically) in
the master's cache::

    {"name": "web1", "host": "hypervisor1", "state": "running", "autostart": false,
     "saved": 1764550000.0, "xml": "<domain ...>"}

The XML is libvirt's persistent definition without ``VIR_DOMAIN_XML_SECURE``: console
passwords are never in it.
"""

import contextlib
import json
import os
import re
import time

from saltvirt import fileio
from saltvirt.errors import InvalidArgument
from saltvirt.operations.cordons import check_host_id

_NAME = re.compile(r"^[A-Za-z0-9_.+-]{1,64}$")




class Definitions:
    """One directory per hypervisor, one file per VM defined there (the same name may be
    defined on several hosts for a while: a half-done migration, a stale copy on a host that
    came back after an evacuation; each host's copy is kept and refreshed on its own)."""

    def __init__(self, directory, clock=time.time):
        self.directory = os.fspath(directory)
        self.clock = clock

    def _dir(self, host):
        return os.path.join(self.directory, check_host_id(host))

    def _path(self, host, name):
        if not isinstance(name, str) or not _NAME.match(name) or name.startswith("."):
            raise InvalidArgument(f"not a VM name: {name!r}")
        return os.path.join(self._dir(host), f"{name}.json")

    def save(self, host, name, xml, state=None, autostart=False, seen=None):
        path = self._path(host, name)
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        record = {"name": name, "host": host, "state": state, "autostart": bool(autostart),
                  "saved": self.clock(), "xml": xml}
        if seen is not None:
            record["seen"] = float(seen)
        fileio.write_atomic(path, json.dumps(record).encode(), 0o600)
        return record

    def get(self, host, name):
        try:
            with open(self._path(host, name), encoding="utf-8") as fh:
                record = json.load(fh)
        except (FileNotFoundError, ValueError):
            return None
        return record if isinstance(record, dict) and record.get("xml") else None

    def forget(self, host, name):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path(host, name))

    def on_host(self, host):
        """``{name: record}`` of the VMs the master last knew on ``host``."""
        try:
            names = sorted(n[:-5] for n in os.listdir(self._dir(host)) if n.endswith(".json"))
        except FileNotFoundError:
            return {}
        out = {}
        for name in names:
            with contextlib.suppress(InvalidArgument):
                record = self.get(host, name)
                if record:
                    out[name] = record
        return out

    def locations(self):
        """``{vm: [host, ...]}``: where the master last saw each VM (running copies first)."""
        try:
            hosts = sorted(e.name for e in os.scandir(self.directory) if e.is_dir())
        except FileNotFoundError:
            return {}
        out = {}
        for host in hosts:
            with contextlib.suppress(InvalidArgument):
                for name, record in self.on_host(host).items():
                    out.setdefault(name, []).append((record.get("state") != "running", host))
        return {name: [h for _r, h in sorted(found)] for name, found in out.items()}

    def apply_event(self, host, name, definition):
        """Store what the libvirt_events engine saw of VM ``name`` on ``host`` (``{xml, state,
        autostart, seen}``, or only ``seen`` once the VM has no definition there). An event older
        than the copy kept (events may be handled out of order) changes nothing. ``"saved"``,
        ``"forgotten"`` or ``"unchanged"``."""
        if not isinstance(definition, dict) or not isinstance(definition.get("seen"), (int, float)):
            raise InvalidArgument(f"definition of {name}: not an engine event's record (no seen time)")
        try:
            with open(self._path(host, name), encoding="utf-8") as fh:
                kept = json.load(fh)
        except (FileNotFoundError, ValueError):
            kept = {}
        if isinstance(kept, dict) and float(kept.get("seen") or 0) > definition["seen"]:
            return "unchanged"
        if not definition.get("xml"):
            self.forget(host, name)
            return "forgotten"
        if not isinstance(definition["xml"], str):
            raise InvalidArgument(f"definition of {name}: xml must be a string")
        self.save(host, name, definition["xml"], definition.get("state"), definition.get("autostart"),
                  seen=definition["seen"])
        return "saved"

    def refresh(self, host, answer, only=None):
        """Store ``host``'s answer to ``virt.definitions`` (``{name: {xml, state, autostart}}``).

        ``host``'s copies of VMs it no longer has are dropped (undefined, or moved: the new
        host's refresh records them there). ``only``: refresh just that VM name. Returns
        ``(saved, forgotten)`` name lists.
        """
        saved, forgotten = [], []
        for name, info in sorted(answer.items()):
            if only is not None and name != only:
                continue
            self.save(host, name, info["xml"], info.get("state"), info.get("autostart"))
            saved.append(name)
        for name in self.on_host(host):
            if name not in answer and (only is None or name == only):
                self.forget(host, name)
                forgotten.append(name)
        return saved, forgotten
