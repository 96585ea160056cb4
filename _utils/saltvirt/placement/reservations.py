"""Capacity promised to in-flight inits, shared by concurrent runner processes on the master.

Gathering host state from the minions takes seconds, and defining a VM takes longer; two
``salt-run virt.init`` calls running at once would both see the same free host. Each caller
therefore places under an exclusive lock (``fcntl.flock`` on ``reservations.lock``) with the
reservations of everybody else counted like VMs, and records its own before unlocking::

    book = Reservations(cachedir)
    with book.placed(hosts, request, policy) as placement:   # lock, read, place, write, unlock
        define_vm_on(placement.host)                          # raises -> reservation released

The reservation outlives a successful init by ``linger`` seconds (default 2 min) so that callers
holding a host snapshot gathered before the VM existed still count it; once the VM shows up in a
host's ``vms`` the same-named reservation is not counted twice (see :mod:`saltvirt.placement`).
Entries expire after ``ttl`` (default 15 min) so a killed runner cannot block a host for good.
An entry made with ``owned=True`` (a migration's: it means nothing once its runner is gone) also
ends when the process that made it is no longer running on this master.

The data file ``reservations.json`` is replaced atomically (write + rename), so lock-free readers
always see a whole file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
from collections.abc import Callable, Iterator

from saltvirt import fileio
from saltvirt.errors import InvalidArgument, VirtError
from saltvirt.placement import Placement, Policy, coerce, place

DEFAULT_TTL = 15 * 60
DEFAULT_LINGER = 120
DATA_FILE = "reservations.json"
LOCK_FILE = "reservations.lock"
FORMAT_VERSION = 1


class Reservations:
    """A directory holding the master's reservations file and its lock."""

    def __init__(self, directory: str, ttl: float = DEFAULT_TTL, lock_timeout: float = 60.0,
                 clock: Callable[[], float] = time.time):
        if not directory:
            raise InvalidArgument("reservations directory must be given")
        if ttl <= 0:
            raise InvalidArgument(f"reservation ttl must be > 0 seconds, got {ttl!r}")
        self.directory = os.fspath(directory)
        self.path = os.path.join(self.directory, DATA_FILE)
        self.lock_path = os.path.join(self.directory, LOCK_FILE)
        self.ttl = ttl
        self.lock_timeout = lock_timeout
        self.clock = clock

    # ---------------------------------------------------------------------------- file + lock

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        held = contextlib.ExitStack()
        try:
            held.enter_context(fileio.locked(self.lock_path, timeout=self.lock_timeout))
        except BlockingIOError:
            raise VirtError(
                f"could not lock {self.lock_path} within {self.lock_timeout:g}s "
                "(another salt-virt runner is holding it)"
            ) from None
        with held:
            yield

    def _read(self) -> list[dict]:
        try:
            with open(self.path, encoding="utf-8") as fh:
                data = json.load(fh)
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            raise VirtError(
                f"cannot read reservations file {self.path}: {exc} "
                "(remove it if no salt-virt init is running)"
            ) from exc
        entries = data.get("reservations") if isinstance(data, dict) else None
        if not isinstance(entries, list):
            raise VirtError(
                f"reservations file {self.path} is not in the expected format "
                "(remove it if no salt-virt init is running)"
            )
        return [e for e in entries if isinstance(e, dict)]

    def _write(self, entries: list[dict]) -> None:
        fileio.write_json(self.path, {"version": FORMAT_VERSION, "reservations": entries})

    @contextlib.contextmanager
    def locked(self) -> Iterator[list[dict]]:
        """Hold the lock; yield the live (unexpired) entries as a list to read or modify in place.

        The list is written back on exit when it differs from what was read (expired entries are
        dropped then too). Do not nest: the lock is per open file, not re-entrant.
        """
        with self._lock():
            stored = self._read()
            now = self.clock()
            live = [e for e in stored if _expires(e) > now and not _orphaned(e)]
            before = json.dumps(live, sort_keys=True)
            yield live
            if len(live) != len(stored) or json.dumps(live, sort_keys=True) != before:
                self._write(live)

    # ---------------------------------------------------------------------------- queries

    def entries(self) -> list[dict]:
        """The live entries (read under the lock, so none is half-written)."""
        with self.locked() as live:
            return [dict(e) for e in live]

    def by_host(self) -> dict[str, list[dict]]:
        """``{host_id: [entry, ...]}``, the shape :class:`~saltvirt.placement.Policy` takes."""
        return _by_host(self.entries())

    # ---------------------------------------------------------------------------- changes

    def _entry(self, host, name, cpu, memory, disk, ttl) -> dict:
        if not isinstance(host, str) or not host:
            raise InvalidArgument(f"reservation host must be a non-empty string, got {host!r}")
        if not isinstance(name, str) or not name:
            raise InvalidArgument(f"reservation name must be a non-empty string, got {name!r}")
        for key, value in (("cpu", cpu), ("memory", memory), ("disk", disk)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise InvalidArgument(
                    f"{name}: reservation {key} must be an int >= 0, got {value!r}"
                )
        now = self.clock()
        return {
            "host": host,
            "name": name,
            "cpu": cpu,
            "memory": memory,
            "disk": disk,
            "created": now,
            "expires": now + (self.ttl if ttl is None else ttl),
            "pid": os.getpid(),
        }

    def reserve(self, host: str, name: str, cpu: int, memory: int, disk: int = 0,
                ttl: float | None = None) -> dict:
        """Record that ``name`` is being created on ``host``; return the entry.

        Raises :class:`InvalidArgument` if ``name`` already has a live reservation.
        """
        entry = self._entry(host, name, cpu, memory, disk, ttl)
        with self.locked() as live:
            _refuse_duplicate(live, name, entry["created"])
            live.append(entry)
        return dict(entry)

    def release(self, name: str) -> bool:
        """Drop ``name``'s reservation (init failed or gave up). True if there was one."""
        with self.locked() as live:
            kept = [e for e in live if e.get("name") != name]
            found = len(kept) != len(live)
            live[:] = kept
        return found

    def finish(self, name: str, linger: float = DEFAULT_LINGER) -> bool:
        """The VM is defined: keep the entry only ``linger`` more seconds (for stale snapshots)."""
        with self.locked() as live:
            found = False
            until = self.clock() + linger
            for entry in live:
                if entry.get("name") == name:
                    entry["expires"] = min(_expires(entry), until)
                    found = True
            if linger <= 0:
                live[:] = [e for e in live if e.get("name") != name]
        return found

    @contextlib.contextmanager
    def hold(self, host: str, name: str, cpu: int, memory: int, disk: int = 0,
             linger: float = DEFAULT_LINGER) -> Iterator[dict]:
        """Reserve for the duration of a block: released on error, :meth:`finish`-ed on success."""
        entry = self.reserve(host, name, cpu, memory, disk)
        try:
            yield entry
        except BaseException:
            self.release(name)
            raise
        self.finish(name, linger)

    def place_and_reserve(self, hosts, request, policy: Policy | None = None, owned: bool = False) -> Placement:
        """Lock, read reservations, :func:`~saltvirt.placement.place`, record the choice, unlock.

        ``owned``: the reservation ends with this process too (not only after ``ttl``).

        Raises :class:`~saltvirt.placement.NoHostFits` when nothing fits (nothing is recorded),
        :class:`InvalidArgument` if the VM name already has a live reservation.
        """
        request, policy = coerce(request, policy)
        with self.locked() as live:
            now = self.clock()
            _refuse_duplicate(live, request.name, now)
            merged = {h: list(v) for h, v in policy.reservations.items()}
            for host, entries in _by_host(live).items():
                merged.setdefault(host, []).extend(entries)
            placement = place(hosts, request, dataclasses.replace(policy, reservations=merged))
            placement.require()
            entry = self._entry(placement.host, request.name, request.cpu, request.memory_mib,
                                request.disk_mib, None)
            if owned:
                entry["owned"] = True
            live.append(entry)
        return placement

    @contextlib.contextmanager
    def placed(self, hosts, request, policy: Policy | None = None,
               linger: float = DEFAULT_LINGER) -> Iterator[Placement]:
        """:meth:`place_and_reserve`, then hold the reservation for the block (see :meth:`hold`)."""
        placement = self.place_and_reserve(hosts, request, policy)
        try:
            yield placement
        except BaseException:
            self.release(placement.request.name)
            raise
        self.finish(placement.request.name, linger)


def place_and_reserve(path: str | Reservations, hosts, request,
                      policy: Policy | None = None) -> Placement:
    """Atomically place ``request`` and reserve the chosen host in the reservations under ``path``.

    ``path`` is the reservations directory (or a :class:`Reservations`). Two concurrent callers
    never both get a host that only has room for one: the loser gets
    :class:`~saltvirt.placement.NoHostFits` (or the next best host).
    """
    book = path if isinstance(path, Reservations) else Reservations(path)
    return book.place_and_reserve(hosts, request, policy)


# -------------------------------------------------------------------------------- helpers


def _expires(entry: dict) -> float:
    value = entry.get("expires")
    return float(value) if isinstance(value, (int, float)) else 0.0


def _orphaned(entry: dict) -> bool:
    """An ``owned`` entry whose process has ended (killed runner, master restarted)."""
    if not entry.get("owned"):
        return False
    pid = entry.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _by_host(entries) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for entry in entries:
        host = entry.get("host")
        if isinstance(host, str):
            out.setdefault(host, []).append(dict(entry))
    return out


def _refuse_duplicate(live: list[dict], name: str, now: float) -> None:
    for entry in live:
        if entry.get("name") == name:
            age = max(0, int(now - float(entry.get("created") or now)))
            left = max(0, int(_expires(entry) - now))
            raise InvalidArgument(
                f"{name} is already being created on {entry.get('host')} "
                f"(reserved {age}s ago by pid {entry.get('pid')}, expires in {left}s)"
            )
