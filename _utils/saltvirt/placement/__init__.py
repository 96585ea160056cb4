"""Choose a hypervisor for a VM: filter hosts by hard limits, rank the rest, explain exclusions.

This module is pure: :func:`place` takes what the runner gathered from the hypervisor minions, the
request and a policy, and returns a :class:`Placement`. It does no I/O. Capacity promised to
in-flight inits on the master is passed in ``Policy.reservations`` (see
:mod:`saltvirt.placement.reservations`, which keeps them in a locked file and calls :func:`place` under the
lock).

Host records (one per hypervisor, MiB throughout)::

    {"id": "hypervisor1", "cpus": 8, "memory_total": 32768, "memory_free": 20000,  # optional
     "disk_free": 400000, "up": True, "bridges": ["br0"], "networks": ["default"],
     "vms": [{"name": "web1", "cpu": 2, "memory": 2048, "state": "running"}]}

Filters, in order (a host failing several resource limits gets all of them in its reason):

* ``down``     -- the host is marked down or did not answer (its record is not a dict);
* ``excluded`` -- the request names it in ``exclude`` (e.g. the migration source);
* ``cordoned`` -- the operator cordoned it (``salt-run virt.drain``; its record says why);
* ``record``   -- its record is unusable (missing or non-numeric fields);
* ``memory``   -- committed = memory of counted VMs + reservations + ``reserve_memory_mib``;
  free = ``memory_total * memory_ratio`` - committed; if the host reports ``memory_free``, the
  smaller of that view (minus reservations and the reserve) and the bookkeeping view is used;
* ``vcpu``     -- vCPUs of counted VMs + reservations + request <= ``cpus * cpu_ratio``;
* ``disk``     -- ``disk_free`` in the images dir minus reserved disk >= requested disk;
* ``bridge``   -- every requested bridge exists on the host.

"Counted VMs" are all defined VMs when ``Policy.count_shutoff`` (default), else only those not
shut off. A reservation whose VM name is already defined on its host is not counted twice.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from saltvirt.errors import InvalidArgument
from saltvirt.placement.model import (  # noqa: F401 -- the package's public names
    _LIMIT_LABELS,
    LIMITS,
    RANKS,
    STOPPED_STATES,
    HostState,
    Policy,
    Request,
    VmUsage,
    _fmt_ratio,
    _number,
    _plural,
)

# --------------------------------------------------------------------------------------------
# outputs


@dataclass(frozen=True)
class HostFit:
    """What a host would have left after taking the VM."""

    free_memory_mib: int  # free memory after placement
    vcpus_left: float  # vCPU budget (cpus * cpu_ratio) left after placement
    disk_free_mib: int | None  # images-dir free space after placement (None: not reported)
    vms: int  # counted VMs + reservations, before placement

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class Placement:
    """The outcome of :func:`place`.

    ``host``: the chosen host id, or None. ``ranked``: ``[(host_id, score)]`` best first (score is
    the free MiB after placement for ``free_memory``/``pack``, the number of VMs for ``spread``).
    ``excluded``: ``{host_id: reason}``; ``limits``: ``{host_id: (limit, ...)}`` for the same hosts.
    """

    request: Request
    policy: Policy
    host: str | None
    ranked: list[tuple[str, int | float]]
    excluded: dict[str, str]
    limits: dict[str, tuple[str, ...]]
    fits: dict[str, HostFit]

    def __bool__(self) -> bool:
        return self.host is not None

    def require(self) -> str:
        """The chosen host id; raise :class:`NoHostFits` if there is none."""
        if self.host is None:
            raise NoHostFits(self)
        return self.host

    def explain(self, top: int | None = 10) -> dict:
        """A JSON-friendly account for the runner to return: choice, top candidates, exclusions."""
        ranked = self.ranked if top is None else self.ranked[:top]
        return {
            "vm": self.request.name,
            "host": self.host,
            "request": {
                "cpu": self.request.cpu,
                "memory_mib": self.request.memory_mib,
                "disk_mib": self.request.disk_mib,
                "bridges": list(self.request.bridges),
                "exclude": list(self.request.exclude),
            },
            "policy": self.policy.to_dict(),
            "ranked": [dict(host=hid, score=score, **self.fits[hid].to_dict()) for hid, score in ranked],
            "candidates": len(self.ranked),
            "excluded": dict(self.excluded),
            "message": None if self.host else fits_nowhere_message(self),
        }


class NoHostFits(InvalidArgument):
    """No hypervisor can take the VM. Carries the placement and every host's reason."""

    def __init__(self, placement: Placement):
        self.placement = placement
        self.excluded = dict(placement.excluded)
        self.limits = dict(placement.limits)
        super().__init__(fits_nowhere_message(placement))


def _host_list(hosts: list[str], most: int = 8) -> str:
    if len(hosts) <= most:
        return ", ".join(hosts)
    return f"{', '.join(hosts[:most])} and {len(hosts) - most} more"


def fits_nowhere_message(placement: Placement, request: Request | None = None, details: int = 20) -> str:
    """Why no host fits: a summary line (which limit failed on which hosts), then the reasons."""
    request = request or placement.request
    if not placement.excluded:
        return f"no hypervisor to place {request.describe()}: no hosts known"
    by_limit: dict[str, list[str]] = {}
    for hid in sorted(placement.limits):
        for limit in placement.limits[hid]:
            by_limit.setdefault(limit, []).append(hid)
    summary = "; ".join(
        f"{_LIMIT_LABELS[limit]} on {_host_list(by_limit[limit])}" for limit in LIMITS if limit in by_limit
    )
    lines = [f"no hypervisor can take {request.describe()}: {summary}"]
    reasons = [placement.excluded[hid] for hid in sorted(placement.excluded)]
    lines.extend(reasons[:details])
    if len(reasons) > details:
        lines.append(f"... and {len(reasons) - details} more hosts excluded")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# the placement itself


def _coerce_hosts(hosts) -> tuple[list[HostState], dict[str, tuple[str, str]]]:
    """HostStates from a list of records/HostStates or a ``{minion_id: record}`` mapping.

    Unusable records become exclusions (``record``; a non-mapping return, as Salt gives for a
    minion that did not answer, counts as ``down``) rather than failing the whole placement.
    """
    if isinstance(hosts, Mapping):
        items = [(hid, rec) for hid, rec in hosts.items()]
    else:
        items = [(None, rec) for rec in hosts]
    states: list[HostState] = []
    bad: dict[str, tuple[str, str]] = {}
    seen: set[str] = set()
    for hid, rec in items:
        if isinstance(rec, HostState):
            state = rec
        elif hid is not None and not isinstance(rec, Mapping):
            bad[hid] = ("down", f"{hid}: down (did not answer: {str(rec)[:120]!r})")
            seen.add(hid)
            continue
        else:
            try:
                state = HostState.from_dict(rec, hid)
            except InvalidArgument as exc:
                rid = hid or (rec.get("id") if isinstance(rec, Mapping) else None)
                if not isinstance(rid, str) or not rid:
                    raise
                bad[rid] = ("record", f"{rid}: unusable host record: {exc}")
                seen.add(rid)
                continue
        if state.id in seen:
            raise InvalidArgument(f"host {state.id} listed more than once")
        seen.add(state.id)
        states.append(state)
    return states, bad


def _reserved_on(host: HostState, entries: Iterable, request_name: str):
    """(count, cpu, memory, disk) of reservations on ``host`` not already defined there."""
    count = cpu = memory = disk = 0
    for entry in entries or ():
        if not isinstance(entry, Mapping):
            raise InvalidArgument(f"{host.id}: reservation must be a mapping, got {entry!r}")
        name = entry.get("name")
        if name is not None and (name in host.vm_names or name == request_name):
            continue  # already counted as a VM / is the VM being placed
        where = f"{host.id}: reservation {name!r}"
        count += 1
        cpu += _number(entry, "cpu", where, default=0)
        memory += _number(entry, "memory", where, default=0)
        disk += _number(entry, "disk", where, default=0)
    return count, cpu, memory, disk


def _after(n_vms: int, n_res: int) -> str:
    text = _plural(n_vms, "VM")
    return f"{text} and {_plural(n_res, 'reservation')}" if n_res else text


def _evaluate(host: HostState, request: Request, policy: Policy, reservations):
    """Return (reasons, limits, fit): reasons/limits empty when the host fits."""
    hid = host.id
    if not host.up:
        return ["down (not answering)"], ["down"], None
    if host.cordoned:
        return [f"cordoned: {host.cordoned} (salt-run virt.uncordon {hid} lifts it)"], ["cordoned"], None

    idx = 0 if policy.count_shutoff else 1
    n_vms = host.vm_count[idx]
    n_res, res_cpu, res_mem, res_disk = _reserved_on(host, reservations.get(hid), request.name)
    reasons: list[str] = []
    limits: list[str] = []
    after = _after(n_vms, n_res)

    # memory: bookkeeping view, then (if reported) the host's own view
    capacity = int(host.memory_total * policy.memory_ratio)
    committed = host.memory_sum[idx] + res_mem + policy.reserve_memory_mib
    free = capacity - committed
    ratio = "" if policy.memory_ratio == 1 else f" x {_fmt_ratio(policy.memory_ratio)}"
    detail = f"after {after} (of {host.memory_total} MiB{ratio}, {policy.reserve_memory_mib} MiB kept for the host)"
    if host.memory_free is not None:
        host_view = host.memory_free - res_mem - policy.reserve_memory_mib
        if host_view < free:
            free = host_view
            res = f" and {res_mem} MiB for {_plural(n_res, 'reservation')}" if n_res else ""
            detail = (
                f"by the host's own count ({host.memory_free} MiB reported free, less "
                f"{policy.reserve_memory_mib} MiB kept for the host{res})"
            )
    if free < request.memory_mib:
        shown = f"{free} MiB free" if free >= 0 else f"none free (over-committed by {-free} MiB)"
        reasons.append(f"needs {request.memory_mib} MiB memory, {shown} {detail}")
        limits.append("memory")

    # vCPU over-commit
    budget = host.cpus * policy.cpu_ratio
    used = host.vcpu_sum[idx] + res_cpu
    left = budget - used
    if used + request.cpu > budget:
        reasons.append(
            f"needs {_plural(request.cpu, 'vCPU')}, {max(left, 0):g} of {budget:g} left "
            f"({_plural(host.cpus, 'CPU')} x {_fmt_ratio(policy.cpu_ratio)}) after {after}"
        )
        limits.append("vcpu")

    # disk in the images dir
    disk_left = None
    if host.disk_free is not None:
        disk_avail = host.disk_free - res_disk
        disk_left = disk_avail - request.disk_mib
        if disk_left < 0:
            res = f" after {_plural(n_res, 'reservation')}" if n_res else ""
            reasons.append(f"needs {request.disk_mib} MiB disk, {max(disk_avail, 0)} MiB free in the images dir{res}")
            limits.append("disk")
    elif request.disk_mib:
        reasons.append(f"needs {request.disk_mib} MiB disk, free space in the images dir not reported")
        limits.append("disk")

    # bridges
    if request.bridges:
        missing = [b for b in request.bridges if b not in host.bridges]
        if missing:
            has = ", ".join(sorted(host.bridges)) or "none"
            reasons.append(f"needs bridge {', '.join(missing)}, not on this host (has: {has})")
            limits.append("bridge")

    if reasons:
        return reasons, limits, None
    fit = HostFit(
        free_memory_mib=free - request.memory_mib,
        vcpus_left=left - request.cpu,
        disk_free_mib=disk_left,
        vms=n_vms + n_res,
    )
    return reasons, limits, fit


def coerce(request, policy=None):
    """``(Request, Policy)`` from objects or mappings (``policy`` None: the defaults)."""
    if not isinstance(request, Request):
        request = Request.from_dict(request)
    if policy is None:
        policy = Policy()
    elif not isinstance(policy, Policy):
        policy = Policy.from_dict(policy)
    return request, policy


def place(hosts, request, policy: Policy | None = None) -> Placement:
    """Pick a hypervisor for ``request`` among ``hosts``.

    ``hosts``: an iterable of host records (dicts, see the module doc) or :class:`HostState`, or a
    ``{minion_id: record}`` mapping as a Salt client returns it. ``request``: a :class:`Request` or
    a mapping for :meth:`Request.from_dict`. ``policy``: a :class:`Policy` or a mapping.

    Returns a :class:`Placement`; ``placement.host`` is None when nothing fits (call
    ``placement.require()`` to raise :class:`NoHostFits` instead).
    """
    request, policy = coerce(request, policy)
    states, bad = _coerce_hosts(hosts)
    excluded: dict[str, str] = {hid: reason for hid, (_, reason) in bad.items()}
    limits: dict[str, tuple[str, ...]] = {hid: (limit,) for hid, (limit, _) in bad.items()}
    fits: dict[str, HostFit] = {}
    skip = frozenset(request.exclude)
    reservations = policy.reservations

    for host in states:
        hid = host.id
        if hid in skip:
            if not host.up:
                excluded[hid], limits[hid] = f"{hid}: down (not answering)", ("down",)
            else:
                excluded[hid], limits[hid] = f"{hid}: excluded by request", ("excluded",)
            continue
        reasons, failed, fit = _evaluate(host, request, policy, reservations)
        if fit is None:
            excluded[hid] = f"{hid}: " + "; ".join(reasons)
            limits[hid] = tuple(failed)
        else:
            fits[hid] = fit

    if policy.rank == "free_memory":
        order = sorted(fits, key=lambda h: (-fits[h].free_memory_mib, h))
        ranked = [(h, fits[h].free_memory_mib) for h in order]
    elif policy.rank == "pack":
        order = sorted(fits, key=lambda h: (fits[h].free_memory_mib, h))
        ranked = [(h, fits[h].free_memory_mib) for h in order]
    else:  # spread
        order = sorted(fits, key=lambda h: (fits[h].vms, -fits[h].free_memory_mib, h))
        ranked = [(h, fits[h].vms) for h in order]

    return Placement(
        request=request,
        policy=policy,
        host=ranked[0][0] if ranked else None,
        ranked=ranked,
        excluded=excluded,
        limits=limits,
        fits=fits,
    )
