"""Operating the hypervisors from the master: cordon, drain, the copy of definitions, evacuate.

The decisions are in :mod:`saltvirt.operations` (pure); this module runs them over a
:class:`saltvirt.fleet.hosts.Fleet`. A drain migrates several VMs at once: ``migrate_one(vm,
offline)`` is given by the runner and must be safe to call from threads (each call its own
Salt client).
"""

import concurrent.futures
import contextvars
import logging
import os
import time

from saltvirt import placement
from saltvirt.errors import InvalidArgument, VirtError
from saltvirt.fleet.hosts import request, vm_names
from saltvirt.migration import migrator
from saltvirt.operations import cordons as opcordons
from saltvirt.operations import definitions as opdefs
from saltvirt.operations import drain as opdrain
from saltvirt.operations import evacuate as opevacuate
from saltvirt.pki import attest
from saltvirt.placement import reservations

log = logging.getLogger(__name__)


def definitions_store(fleet):
    return opdefs.Definitions(os.path.join(fleet.opts["cachedir"], "saltvirt", "definitions"))


def cordon(fleet, host, reason):
    host = fleet.exact(host)[0]
    return {"host": host, "cordoned": opcordons.describe(fleet.cordons.cordon(host, reason)), "result": True}


def uncordon(fleet, host):
    host = fleet.exact(host)[0]
    record = fleet.cordons.uncordon(host)
    return {"host": host, "cordoned": None, "result": True,
            "was": opcordons.describe(record) if record else "not cordoned"}


# -------------------------------------------------------------------------- drain


def _drain_records(fleet, host, settle):
    """Host records once no VM of ``host`` is mid-migration (an interrupted drain's), or after
    ``settle`` seconds; and the names still in flight then."""
    deadline = time.monotonic() + settle
    while True:
        answers, errors = fleet.capacity()
        if host not in answers:
            raise VirtError(
                f"{host} does not answer ({errors.get(host) or 'not a hypervisor'}): a drain moves VMs off a "
                f"running host; for a dead one see `salt-run virt.evacuate {host} fenced=True`"
            )
        records = fleet.records(answers, errors)
        flying = opdrain.in_flight(host, records)
        if not flying or time.monotonic() >= deadline:
            return records, flying
        fleet.progress(f"Waiting for the migration of {', '.join(flying)} (started earlier) to end", host=host)
        time.sleep(3)


def _preflight(step, check):
    """``step`` checked with the migration pre-flight (``check(vm, target)``: a test=True report)."""
    report = check(step["vm"], step["target"])
    if report.get("ok") is True:
        return step
    reason = report.get("error") or "; ".join(
        f"{c['check']}: {c['detail']}" for c in migrator.failed_checks(report)) or "pre-flight refused"
    return dict(step, action=opdrain.STAY, reason=f"cannot migrate to {step['target']}: {reason}")


def _run_moves(fleet, host, todo, parallel, migrate_one):
    """Migrate ``todo`` ``parallel`` at a time; ``{vm: outcome}``. Ctrl-C: no new migration
    starts; those under way end under libvirt's control (a VM is never lost)."""
    store, results = fleet.cordons, {}
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=parallel)
    try:
        # Salt's loader context lives in context variables: each thread runs in a copy of this one.
        futures = [pool.submit(contextvars.copy_context().run, lambda s: (
            s["vm"], migrate_one(s["vm"], s["action"] == opdrain.MOVE_OFFLINE)), step) for step in todo]
        for done, future in enumerate(concurrent.futures.as_completed(futures), start=1):
            vm, result = future.result()
            results[vm] = kind, target, detail = opdrain.outcome(result)
            if kind == "moved":
                store.note(host, "moved", vm, target)
                fleet.progress(f"[{done}/{len(todo)}] {vm} moved to {target}", host=host, vm=vm, target=target)
            else:
                store.note(host, "stayed", vm, detail)
                fleet.progress(f"[{done}/{len(todo)}] {vm} stays on {host}: {detail}", host=host, vm=vm)
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        log.warning("virt.drain of %s interrupted; run it again to continue", host)
        raise
    pool.shutdown()
    return results


def drain(fleet, host, migrate_one, check, test=False, parallel=None, shutoff="leave", settle=None):
    """Cordon ``host`` and move its VMs away (see the runner's ``virt.drain``)."""
    host = fleet.exact(host)[0]
    shutoff, parallel = opdrain.check_options(
        shutoff, fleet.conf("drain:parallel", 2) if parallel is None else parallel)
    store = fleet.cordons
    records, flying = _drain_records(fleet, host, 0 if test else float(settle or 300))
    steps = opdrain.plan(host, records, fleet.policy(), shutoff)
    if test:
        steps = [_preflight(s, check) if s["target"] else s for s in steps]
        return opdrain.report(host, steps, cordon=store.get(host), test=True, where=opdrain.locations(records))
    store.begin_drain(host, [s["vm"] for s in steps])
    for step in steps:
        if step["vm"] in flying:
            step.update(action=opdrain.STAY, reason="still being migrated by an earlier run: run virt.drain again")
    todo = [s for s in steps if s["action"] in (opdrain.MIGRATE, opdrain.MOVE_OFFLINE)]
    fleet.progress(f"Draining {host}: {len(todo)} VM(s) to move, {parallel} at a time", host=host)
    results = _run_moves(fleet, host, todo, parallel, migrate_one)
    for step in steps:
        if step["action"] == opdrain.STAY:
            store.note(host, "stayed", step["vm"], step["reason"])
    out = opdrain.report(host, steps, cordon=store.get(host), results=results, where=opdrain.locations(records))
    if not out["result"]:
        out["retcode"] = 1
    return out


# -------------------------------------------------------------------------- remember, evacuate


def remember(fleet, host=None, name=None, definition=None):
    """Refresh the master's copy of the VMs' definitions (of ``host``, or VM ``name`` on it);
    with ``definition`` (what the libvirt_events engine attached to an event of ``host``), store
    that instead of asking the hypervisor."""
    if name is not None and host is None:
        raise InvalidArgument("name= needs host=: the hypervisor whose copy of the VM to refresh")
    if definition is not None:
        if name is None:
            raise InvalidArgument("definition= needs host= and name=: the VM the engine's event is about")
        host = fleet.exact(host)[0]
        # The event's sender may be any minion (see saltvirt.pki.attest): only host's signature counts.
        definition = attest.Verifier(fleet.opts["pki_dir"]).check_record(attest.DEFINITION, host, name, definition)
        outcome = definitions_store(fleet).apply_event(host, name, definition)
        _follow_capacity(fleet, host, name, definition, outcome)
        saved = {host: [name] if outcome == "saved" else []}
        return {"saved": saved, "forgotten": {host: [name] if outcome == "forgotten" else []}}, {}
    if host is not None:
        answers, errors = fleet.on(host, "virt.definitions", kwarg={"name": name} if name else None)
    else:
        answers, errors = fleet.fanout("virt.definitions")
    store = definitions_store(fleet)
    verifier = attest.Verifier(fleet.opts["pki_dir"])
    out = {"saved": {}, "forgotten": {}}
    for minion, answer in sorted(answers.items()):
        try:
            if not isinstance(answer or {}, dict):
                raise InvalidArgument(f"{minion}: virt.definitions answered {type(answer).__name__}, not a mapping")
            answer = {vm: verifier.check_record(attest.DEFINITION, minion, vm, record)
                      for vm, record in (answer or {}).items()}
            saved, forgotten = store.refresh(minion, answer, only=name)
        except (InvalidArgument, attest.Unattested) as exc:
            errors[minion] = str(exc)
            continue
        out["saved"][minion], out["forgotten"][minion] = saved, forgotten
        if name is not None:  # an engine event without a definition (definitions: False)
            found = answer.get(name)
            _follow_capacity(fleet, minion, name, found, "saved" if isinstance(found, dict) else "forgotten")
    return out, errors


def restart_crashed(fleet, host, name, definition):
    """Start VM ``name`` again on ``host`` after its guest crashed (see the runner's
    ``virt.restart_crashed``): only on ``host``'s signed word that libvirt stopped it for that."""
    host = fleet.exact(host)[0]
    said = attest.Verifier(fleet.opts["pki_dir"]).check_record(attest.DEFINITION, host, name, definition)
    if (said.get("event"), said.get("detail")) != ("stopped", "crashed"):
        raise InvalidArgument(f"{host} did not say that {name} crashed ({said.get('event')}/{said.get('detail')}): "
                              "not restarting it")
    return fleet.vm_call(name, "virt.start", host=host)


def _follow_capacity(fleet, host, name, definition, outcome):
    """An engine event changes the master's copy of the capacities (``virt.init``'s placement)."""
    if fleet.capacities is None:
        return
    if outcome == "forgotten":
        fleet.capacities.undefined(host, name)
    elif outcome == "saved":
        try:
            cpu, mem = opevacuate.request_of(name, definition.get("xml"))
        except Exception:  # pylint: disable=broad-exception-caught
            fleet.capacities.discard()  # its claims unknown: the next placement asks the hypervisors
            return
        fleet.capacities.defined(host, {"name": name, "cpu": cpu, "memory": mem,
                                        "state": definition.get("state") or "running"})


def _evacuation_hosts(fleet, host):
    """``(placement records of the live hypervisors, VMs they run, answering)``; refuses a host
    that still answers."""
    alive, silent = fleet.ping(float(fleet.conf("evacuate_timeout", 10)))
    if host in alive:
        raise VirtError(f"{host} answers: it is not dead; move its VMs with `salt-run virt.drain {host}` instead")
    answers, errors = fleet.fanout("virt.capacity", tgt=sorted(alive), tgt_type="list") if alive else ({}, {})
    hosts = fleet.records(answers, {m: r for m, r in {**errors, **silent}.items() if m != host})
    return hosts, {n for info in answers.values() for n in vm_names(info)}, silent


def _evacuate_one(fleet, store, hosts, host, name, record, want_start, test):
    cpu, mem = opevacuate.request_of(name, record["xml"])
    req = request(f"{name}@evacuate", cpu, mem, exclude=(host,))
    try:
        if test:
            target = placement.place(hosts, req, fleet.policy()).require()
            return {"action": "would_start" if want_start else "would_define", "target": target,
                    "saved": record.get("saved")}
        target = store.place_and_reserve(hosts, req, fleet.policy(), owned=True).host
    except (placement.NoHostFits, InvalidArgument) as exc:
        return {"action": "failed", "reason": f"no hypervisor can take it: {exc}"}
    fleet.progress(f"Restarting {name} of {host} on {target}", host=target, vm=name)
    try:
        ans, errs = fleet.on(target, "virt.evacuate_in", [name, record["xml"]], {"start": want_start},
                             timeout=fleet.conf("init_timeout", 900))
    finally:
        store.release(req.name)
    if target not in ans:
        return {"action": "failed", "target": target, "reason": errs.get(target) or "no answer"}
    definitions_store(fleet).save(target, name, record["xml"], ans[target].get("state"), record.get("autostart"))
    for entry in hosts:
        if entry["id"] == target:
            entry["vms"] = [*entry["vms"], {"name": name, "cpu": cpu, "memory": mem, "state": "running"}]
    return {"action": "started" if want_start else "defined", "target": target,
            "state": ans[target].get("state"), "dropped": ans[target].get("dropped")}


def evacuate(fleet, host, fenced=False, test=False, start=True):
    """Restart a dead hypervisor's VMs elsewhere (see the runner's ``virt.evacuate``)."""
    host = fleet.exact(host)[0]
    hosts, running, silent = _evacuation_hosts(fleet, host)
    if not test and fenced is not True:
        raise InvalidArgument(
            f"{host} does not answer ({silent.get(host) or 'not connected'}), but that does not prove its VMs "
            "are stopped: make sure it is powered off or cut off from the storage, then confirm with fenced=True")
    records = definitions_store(fleet).on_host(host)
    store = reservations.Reservations(os.path.join(fleet.opts["cachedir"], "saltvirt", "reservations"))
    if not test:
        fleet.cordons.cordon(host, f"evacuated: {host} was declared dead and fenced")
    results = {}
    for name in opevacuate.order(records):
        if name in running:
            results[name] = {"action": "skipped", "reason": "already defined on another hypervisor"}
            continue
        want_start = bool(start) and records[name].get("state") == "running"
        results[name] = _evacuate_one(fleet, store, hosts, host, name, records[name], want_start, test)
    out = opevacuate.report(host, results, fenced, test)
    if not test and fleet.capacities is not None:
        fleet.capacities.discard()  # VMs were defined elsewhere: the next placement asks again
    if not out["result"]:
        out["retcode"] = 1
    return out
