"""Cordoned hypervisors, recorded on the master: no new placement, not a migration target.

One JSON file per host (mode 0600, written atomically) in the master's cache, so that a cordon
outlives the ``salt-run`` that set it and a master restart, and concurrent runners see it::

    {"host": "hypervisor1", "since": 1764550000.0, "reason": "drain",
     "drain": {"vms": ["db1", "web1"], "moved": {"web1": "hypervisor2"},
               "stayed": {"db1": "no hypervisor can take ..."}}}

The drain's progress lives in the same record: a drain that is interrupted (Ctrl-C, the master
restarting) and run again reports what the earlier runs moved (``vms``: every VM the host had
when a drain began; one no longer there was moved, even if the runner died before noting it).
"""

import contextlib
import json
import os
import re
import time

from saltvirt import fileio
from saltvirt.errors import InvalidArgument

_HOST = re.compile(r"^[A-Za-z0-9_.@+-]{1,253}$")


def check_host_id(host):
    """``host`` if it is a hypervisor minion id safe as a file name on the master, else InvalidArgument."""
    if not isinstance(host, str) or not _HOST.match(host) or host.startswith("."):
        raise InvalidArgument(f"not a hypervisor minion id: {host!r}")
    return host


class Cordons:
    """The directory of cordon records (created 0700 on first write)."""

    def __init__(self, directory, clock=time.time):
        self.directory = os.fspath(directory)
        self.clock = clock

    def _path(self, host):
        return os.path.join(self.directory, f"{check_host_id(host)}.json")

    def _write(self, record):
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        fileio.write_atomic(self._path(record["host"]), json.dumps(record, sort_keys=True).encode(), 0o600)
        return record

    def get(self, host):
        """The cordon record of ``host``, or None when it is not cordoned."""
        try:
            with open(self._path(host), encoding="utf-8") as fh:
                record = json.load(fh)
        except FileNotFoundError:
            return None
        except ValueError:
            # A damaged record still cordons: placing VMs on a host being drained is worse.
            return {"host": host, "reason": "unreadable cordon record", "corrupt": True}
        return record if isinstance(record, dict) else {"host": host, "reason": "unreadable cordon record"}

    def cordon(self, host, reason="cordoned by the operator"):
        """Cordon ``host`` (a second cordon keeps the first one's time and drain progress)."""
        record = self.get(host) or {"host": host, "since": self.clock()}
        record["reason"] = str(reason)
        return self._write(record)

    def uncordon(self, host):
        """Remove ``host``'s cordon; return the record it had, or None."""
        record = self.get(host)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path(host))
        return record

    def all(self):
        """``{host: record}`` of every cordoned host."""
        try:
            names = sorted(os.listdir(self.directory))
        except FileNotFoundError:
            return {}
        out = {}
        for name in names:
            if name.endswith(".json") and not name.startswith("."):
                host = name[:-5]
                with contextlib.suppress(InvalidArgument):
                    record = self.get(host)
                    if record is not None:
                        out[host] = record
        return out

    def begin_drain(self, host, vms):
        """Cordon ``host`` for a drain and remember its VMs (those of earlier runs kept)."""
        record = self.cordon(host, "drain")
        drain = record.setdefault("drain", {})
        drain["vms"] = sorted(set(drain.get("vms") or ()) | set(vms))
        return self._write(record)

    def note(self, host, section, vm, value):
        """Record ``vm``'s outcome under ``drain.<section>`` (``moved`` / ``stayed``)."""
        record = self.get(host) or {"host": host, "since": self.clock(), "reason": "drain"}
        drain = record.setdefault("drain", {})
        for other in ("moved", "stayed"):
            drain.setdefault(other, {}).pop(vm, None)
        drain[section][vm] = value
        return self._write(record)


def describe(record):
    """One line for ``virt.host_info`` / ``virt.query``: why and since when."""
    since = record.get("since")
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(since)) if isinstance(since, (int, float)) else "?"
    return f"{record.get('reason', 'cordoned')} (since {when})"
