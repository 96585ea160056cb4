"""Draining a hypervisor: which VMs move where, which stay and why, and the drain's report.

A drain never stops a VM. Running (and paused) VMs are live-migrated, each through the
runner's ``virt.migrate`` (placement with reservations, the migration pre-flight, verification,
cleanup); a VM that cannot move stays running where it is and the report says why. Shut-off
VMs are left (``shutoff="leave"``, the default) or moved offline (``shutoff="move"``).

:func:`plan` is the pure part: it places the VMs one after another on copies of the host
records (largest memory first, each placed VM counted on its target), excluding the drained
host and every cordoned one -- what ``test=True`` shows. :func:`in_flight` finds VMs that an
interrupted drain left mid-migration, and :func:`report` builds the return.
"""

import copy

from saltvirt import placement
from saltvirt.errors import InvalidArgument

MIGRATE, MOVE_OFFLINE, LEAVE, STAY = "migrate", "move_offline", "leave", "stay"
SHUTOFF_CHOICES = ("leave", "move")


def check_options(shutoff, parallel):
    """``(shutoff, parallel)`` validated; a clear error naming the value and the fix."""
    if shutoff not in SHUTOFF_CHOICES:
        raise InvalidArgument(f"shutoff must be leave or move, got {shutoff!r}")
    try:
        parallel = int(parallel)
    except (TypeError, ValueError):
        raise InvalidArgument(f"parallel must be a whole number of migrations >= 1, got {parallel!r}") from None
    if parallel < 1:
        raise InvalidArgument(f"parallel must be a whole number of migrations >= 1, got {parallel!r}")
    return shutoff, parallel


def _stopped(vm):
    return str(vm.get("state", "running")).lower() in placement.STOPPED_STATES


def in_flight(source, records):
    """Names of ``source``'s VMs that another host holds too: a migration still under way."""
    names = {vm["name"] for r in records if r.get("id") == source for vm in r.get("vms") or ()}
    elsewhere = {vm["name"] for r in records if r.get("id") != source and r.get("up", True)
                 for vm in r.get("vms") or ()}
    return sorted(names & elsewhere)


def plan(source, records, policy=None, shutoff="leave"):
    """The drain of ``source``, step by step: ``[{vm, action, target, reason, cpu, memory, state}]``.

    ``records``: host records as placement takes them (``cordoned`` hosts are not targets).
    Steps come largest memory first (the hardest to fit get the most room).
    """
    hosts = {r["id"]: copy.deepcopy(r) for r in records if isinstance(r, dict) and r.get("id")}
    if source not in hosts or not hosts[source].get("up", True):
        raise InvalidArgument(f"{source} did not answer: a drain needs the host running")
    vms = sorted(hosts[source].get("vms") or (), key=lambda v: (-int(v.get("memory") or 0), v["name"]))
    steps = []
    for vm in vms:
        step = {"vm": vm["name"], "cpu": vm.get("cpu"), "memory": vm.get("memory"),
                "state": vm.get("state", "running"), "target": None, "reason": None}
        stopped = _stopped(vm)
        if stopped and shutoff == "leave":
            steps.append(dict(step, action=LEAVE, reason="shut off: left here (shutoff=move moves it offline)"))
            continue
        request = placement.Request(name=vm["name"], cpu=max(1, int(vm.get("cpu") or 1)),
                                    memory_mib=max(1, int(vm.get("memory") or 1)), exclude=(source,))
        chosen = placement.place(list(hosts.values()), request, policy)
        if chosen.host is None:
            steps.append(dict(step, action=STAY, reason=placement.fits_nowhere_message(chosen)))
            continue
        hosts[chosen.host].setdefault("vms", []).append(
            {"name": vm["name"], "cpu": request.cpu, "memory": request.memory_mib, "state": step["state"]})
        steps.append(dict(step, action=MOVE_OFFLINE if stopped else MIGRATE, target=chosen.host))
    return steps


def outcome(result):
    """``("moved", target, detail)`` or ``("stayed", None, reason)`` from a migrate return."""
    if isinstance(result, dict) and result.get("result") is True and result.get("host"):
        return "moved", result["host"], {"target": result["host"], "duration_s": result.get("duration_s")}
    if isinstance(result, dict):
        reason = result.get("error") or result.get("comment") or "migration failed"
    else:
        reason = f"migration failed: {result!r}"
    return "stayed", None, str(reason)


def locations(records):
    """``{vm: host}`` of every VM the answering hosts have (running ones win over copies)."""
    out = {}
    for record in records:
        for vm in record.get("vms") or ():
            if vm["name"] not in out or not _stopped(vm):
                out[vm["name"]] = record["id"]
    return out


def report(host, steps, cordon=None, test=False, results=None, where=None):
    """The drain's return.

    ``steps``: :func:`plan`'s list. ``results``: ``{vm: (kind, target, detail)}`` of the
    migrations this run did (:func:`outcome`). ``cordon``: the host's cordon record (earlier
    runs' progress under ``drain``). ``where``: :func:`locations` at the start of this run.
    """
    results = results or {}
    moved, stayed, left, planned = {}, {}, {}, {}
    for step in steps:
        vm = step["vm"]
        if step["action"] == LEAVE:
            left[vm] = step["reason"]
        elif test:
            if step["action"] == STAY:
                stayed[vm] = step["reason"]
            else:
                planned[vm] = {"target": step["target"], "action": step["action"]}
        elif vm in results:
            kind, _target, detail = results[vm]
            (moved if kind == "moved" else stayed)[vm] = detail
        elif step["action"] == STAY:
            stayed[vm] = step["reason"]
    earlier = {}
    progress = (cordon or {}).get("drain") or {}
    here = {s["vm"] for s in steps}
    for vm in progress.get("vms") or ():
        if vm not in here:
            earlier[vm] = (where or {}).get(vm) or progress.get("moved", {}).get(vm) or "gone"
    out = {
        "host": host,
        "test": bool(test),
        "cordoned": bool(cordon) or not test,
        "moved": moved,
        "stayed": stayed,
        "left": left,
        "moved_earlier": earlier,
        "result": not stayed,
    }
    if test:
        out["plan"] = planned
        out["steps"] = steps
    if not steps:
        out["message"] = f"{host} has no VM: nothing to move"
    elif test:
        out["message"] = (f"{host}: {len(planned)} VM(s) would move, {len(stayed)} cannot, "
                          f"{len(left)} shut off left")
    elif stayed:
        out["message"] = (f"{host} is cordoned but not empty: {len(stayed)} VM(s) still run there "
                          f"({', '.join(sorted(stayed))}); see stayed")
    else:
        out["message"] = f"{host} is drained: {len(moved)} VM(s) moved" + (
            f", {len(left)} shut off VM(s) left" if left else "")
    return out
