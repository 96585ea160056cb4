"""What placement reasons about: the request, the operator's policy and each host's state.

Plain data with validation (no I/O); :mod:`saltvirt.placement` filters and ranks with them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from saltvirt.errors import InvalidArgument

RANKS = ("free_memory", "spread", "pack")

#: VM states that hold no CPU or memory on the host (only counted when ``count_shutoff``).
STOPPED_STATES = frozenset({"shutoff", "shut off", "stopped"})

#: Limit names, in the order the filters run; used in :attr:`Placement.limits` and messages.
LIMITS = ("down", "excluded", "cordoned", "record", "memory", "vcpu", "disk", "bridge")

_LIMIT_LABELS = {
    "down": "down",
    "excluded": "excluded by request",
    "cordoned": "cordoned",
    "record": "unusable host record",
    "memory": "not enough memory",
    "vcpu": "vCPU over-commit",
    "disk": "not enough disk",
    "bridge": "missing bridge",
}


# --------------------------------------------------------------------------------------------
# small validation helpers


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _number(record: Mapping, key: str, where: str, *, default=None, integer=True):
    """Read a non-negative number from ``record[key]``; ``default`` (if not None) when missing."""
    value = record.get(key)
    if value is None:
        if default is not None:
            return default
        raise InvalidArgument(f"{where}: {key} missing")
    if not _is_number(value) or value < 0:
        raise InvalidArgument(f"{where}: {key} must be a non-negative number, got {value!r}")
    return int(value) if integer else value


def _names(value, what: str) -> tuple[str, ...]:
    """A tuple of names from a str (one name), or an iterable of str."""
    if value is None:
        return ()
    if isinstance(value, str):
        value = (value,)
    try:
        names = tuple(value)
    except TypeError:
        raise InvalidArgument(f"{what} must be a list of names, got {value!r}") from None
    for name in names:
        if not isinstance(name, str) or not name:
            raise InvalidArgument(f"{what} must be a list of non-empty names, got {name!r}")
    return names


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _fmt_ratio(ratio: float) -> str:
    return f"{ratio:g}"


# --------------------------------------------------------------------------------------------
# inputs


@dataclass(frozen=True)
class Request:
    """What the new (or migrating) VM needs. ``exclude`` lists hosts not to consider."""

    name: str
    cpu: int
    memory_mib: int
    disk_mib: int = 0
    bridges: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise InvalidArgument(f"VM name must be a non-empty string, got {self.name!r}")
        if not _is_int(self.cpu) or self.cpu < 1:
            raise InvalidArgument(f"{self.name}: cpu must be a whole number of vCPUs >= 1, got {self.cpu!r}")
        if not _is_int(self.memory_mib) or self.memory_mib <= 0:
            raise InvalidArgument(f"{self.name}: memory must be a whole number of MiB > 0, got {self.memory_mib!r}")
        if not _is_int(self.disk_mib) or self.disk_mib < 0:
            raise InvalidArgument(f"{self.name}: disk must be a whole number of MiB >= 0, got {self.disk_mib!r}")
        object.__setattr__(self, "bridges", _names(self.bridges, f"{self.name}: bridges"))
        object.__setattr__(self, "exclude", _names(self.exclude, f"{self.name}: exclude"))

    @classmethod
    def from_dict(cls, data: Mapping) -> Request:
        """Build from ``{"name", "cpu", "memory_mib"|"memory", "disk_mib"|"disk", ...}``."""
        if not isinstance(data, Mapping):
            raise InvalidArgument(f"placement request must be a mapping, got {data!r}")
        return cls(
            name=data.get("name"),
            cpu=data.get("cpu"),
            memory_mib=data.get("memory_mib", data.get("memory")),
            disk_mib=data.get("disk_mib", data.get("disk", 0)),
            bridges=data.get("bridges", ()),
            exclude=data.get("exclude", ()),
        )

    def describe(self) -> str:
        parts = [_plural(self.cpu, "vCPU"), f"{self.memory_mib} MiB memory"]
        if self.disk_mib:
            parts.append(f"{self.disk_mib} MiB disk")
        if self.bridges:
            parts.append("bridge " + ", ".join(self.bridges))
        return f"{self.name} ({', '.join(parts)})"


@dataclass(frozen=True)
class Policy:
    """How to filter and rank. ``reservations``: ``{host_id: [{"name","cpu","memory","disk"}]}``."""

    rank: str = "free_memory"
    cpu_ratio: float = 4.0
    memory_ratio: float = 1.0
    reserve_memory_mib: int = 256
    count_shutoff: bool = True
    reservations: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.rank not in RANKS:
            raise InvalidArgument(f"placement rank must be one of {', '.join(RANKS)}, got {self.rank!r}")
        for key in ("cpu_ratio", "memory_ratio"):
            value = getattr(self, key)
            if not _is_number(value) or value <= 0:
                raise InvalidArgument(f"placement {key} must be a number > 0, got {value!r}")
        if not _is_int(self.reserve_memory_mib) or self.reserve_memory_mib < 0:
            raise InvalidArgument(
                f"placement reserve_memory_mib must be a whole number of MiB >= 0, got {self.reserve_memory_mib!r}"
            )
        if not isinstance(self.reservations, Mapping):
            raise InvalidArgument(f"placement reservations must be a mapping host -> list, got {self.reservations!r}")

    @classmethod
    def from_dict(cls, data: Mapping | None) -> Policy:
        """Build from pillar/config; unknown keys are an error (typos should not pass silently)."""
        data = dict(data or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidArgument(
                f"unknown placement policy key(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})"
            )
        return cls(**data)

    def to_dict(self, with_reservations: bool = False) -> dict:
        out = {
            "rank": self.rank,
            "cpu_ratio": self.cpu_ratio,
            "memory_ratio": self.memory_ratio,
            "reserve_memory_mib": self.reserve_memory_mib,
            "count_shutoff": self.count_shutoff,
        }
        if with_reservations:
            out["reservations"] = {h: list(v) for h, v in self.reservations.items()}
        return out


class VmUsage(NamedTuple):
    """One VM defined on a host, as far as placement cares (a tuple: cheap to build by the 10k)."""

    name: str
    cpu: int
    memory: int
    state: str = "running"

    @property
    def stopped(self) -> bool:
        return self.state in STOPPED_STATES

    @classmethod
    def from_dict(cls, data: Mapping, where: str) -> VmUsage:
        if type(data) is not dict and not isinstance(data, Mapping):
            raise InvalidArgument(f"{where}: VM record must be a mapping, got {data!r}")
        name = data.get("name")
        cpu = data.get("cpu")
        memory = data.get("memory")
        # fast path for the common, well-formed record; the slow path validates and explains
        if not (type(cpu) is int and type(memory) is int and cpu >= 0 and memory >= 0):
            vm_where = f"{where}: VM {name!r}"
            cpu = _number(data, "cpu", vm_where)
            memory = _number(data, "memory", vm_where)
        state = data.get("state")
        return cls(
            name if type(name) is str else ("" if name is None else str(name)),
            cpu,
            memory,
            state.lower() if type(state) is str and state else "running",
        )


@dataclass(frozen=True)
class HostState:
    """A hypervisor's capacity and load. Per-host sums are computed once, at construction."""

    id: str
    cpus: int = 0
    memory_total: int = 0
    memory_free: int | None = None
    disk_free: int | None = None
    vms: tuple[VmUsage, ...] = ()
    bridges: frozenset = frozenset()
    networks: tuple[str, ...] = ()
    up: bool = True
    cordoned: str | None = None  # why the host takes no new VM (None: it does)
    # derived, filled by __post_init__: (all defined VMs, VMs not shut off)
    vm_count: tuple[int, int] = field(init=False, repr=False, compare=False, default=(0, 0))
    vcpu_sum: tuple[int, int] = field(init=False, repr=False, compare=False, default=(0, 0))
    memory_sum: tuple[int, int] = field(init=False, repr=False, compare=False, default=(0, 0))
    vm_names: frozenset = field(init=False, repr=False, compare=False, default=frozenset())

    def __post_init__(self):
        vms = tuple(self.vms)
        object.__setattr__(self, "vms", vms)
        object.__setattr__(self, "bridges", frozenset(self.bridges))
        n_all = n_act = cpu_all = cpu_act = mem_all = mem_act = 0
        for vm in vms:
            n_all += 1
            cpu_all += vm.cpu
            mem_all += vm.memory
            if not vm.stopped:
                n_act += 1
                cpu_act += vm.cpu
                mem_act += vm.memory
        object.__setattr__(self, "vm_count", (n_all, n_act))
        object.__setattr__(self, "vcpu_sum", (cpu_all, cpu_act))
        object.__setattr__(self, "memory_sum", (mem_all, mem_act))
        object.__setattr__(self, "vm_names", frozenset(vm.name for vm in vms))

    @classmethod
    def from_dict(cls, data: Mapping, host_id: str | None = None) -> HostState:
        """Build from a runner-gathered record. ``host_id`` is used when the record has no ``id``.

        A record with ``"up": False`` needs nothing but its id.
        """
        if not isinstance(data, Mapping):
            raise InvalidArgument(f"{host_id or '?'}: host record must be a mapping, got {data!r}")
        hid = data.get("id", host_id)
        if not isinstance(hid, str) or not hid:
            raise InvalidArgument(f"host record without a usable id: {data!r}")
        up = bool(data.get("up", True))
        if not up:
            return cls(id=hid, up=False)
        vms = data.get("vms") or ()
        if isinstance(vms, Mapping):  # tolerate {name: {...}}
            vms = [dict(v, name=v.get("name", k)) if isinstance(v, Mapping) else v for k, v in vms.items()]
        cpus = _number(data, "cpus", hid)
        if cpus < 1:
            raise InvalidArgument(f"{hid}: cpus must be >= 1, got {cpus!r}")
        return cls(
            id=hid,
            cpus=cpus,
            memory_total=_number(data, "memory_total", hid),
            memory_free=None if data.get("memory_free") is None else _number(data, "memory_free", hid),
            disk_free=None if data.get("disk_free") is None else _number(data, "disk_free", hid),
            vms=tuple(VmUsage.from_dict(vm, hid) for vm in vms),
            bridges=frozenset(_names(data.get("bridges"), f"{hid}: bridges")),
            networks=_names(data.get("networks"), f"{hid}: networks"),
            up=True,
            cordoned=str(data["cordoned"]) if data.get("cordoned") else None,
        )
