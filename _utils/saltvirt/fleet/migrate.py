"""Migrating a VM from the master: find it, pick and reserve the target, run the
:class:`saltvirt.migration.migrator.Migrator` (pre-flight, disks, migration, verification,
cleanup). Also the fleet-wide rebase of a base image."""

import contextlib
import logging
import os
import secrets
import time

from saltvirt import fileio, placement
from saltvirt.errors import InvalidArgument, VirtError
from saltvirt.fleet.hosts import describe_errors, request
from saltvirt.migration import migrator
from saltvirt.placement import reservations

log = logging.getLogger(__name__)


@contextlib.contextmanager
def migration_lock(fleet, name):
    """One migration of a VM at a time (an flock: a killed runner releases it)."""
    directory = os.path.join(fleet.opts["cachedir"], "saltvirt", "migrations")
    os.makedirs(directory, mode=0o700, exist_ok=True)
    held = contextlib.ExitStack()
    try:
        held.enter_context(fileio.locked(os.path.join(directory, name.replace("/", "%2F") + ".lock"), timeout=0))
    except BlockingIOError:
        raise VirtError(f"{name} is being migrated by another salt-run virt.migrate") from None
    with held:
        yield


def drop_probes(fleet, name, answers, keep=None):
    """Remove the survey's probe files on every host but ``keep`` (its Migrator does that)."""
    for host, info in answers.items():
        if host != keep and (info.get("migrate_source") or {}).get("probe"):
            try:
                fleet.call(host, "virt.migrate_cleanup", [name], {"probe": info["migrate_source"]["probe"]})
            except VirtError as exc:
                log.warning("virt.migrate: probe files of %s left on %s: %s", name, host, exc)


def _check_target(name, target, source, answers, errors):
    if target is None:
        return None
    target = str(target)
    if target == source:
        raise InvalidArgument(f"{name} is already on {target}: nothing to migrate")
    if target not in answers:
        raise InvalidArgument(errors.get(target) or
                              f"unknown hypervisor {target} (answering: {', '.join(sorted(answers))})")
    return target


def _job(fleet, store, name, source, target, answers, errors, test, options):
    """``(Migrator, reservation name or None)`` with the target chosen (and reserved)."""
    vm = answers[source]["migrate_source"]
    target = _check_target(name, target, source, answers, errors)
    records = [r for r in fleet.records(answers, errors) if target is None or r["id"] == target]
    # Reserved under a name of its own: the VM's name may still hold virt.init's lingering
    # reservation. The reservation only lasts while the migration runs.
    req = request(f"{name}@migrate-{secrets.token_hex(4)}", vm["vcpus"], vm["memory_mib"], exclude=(source,))
    try:
        if test:
            target, reserved = placement.place(records, req, fleet.policy()).require(), None
        else:
            target, reserved = store.place_and_reserve(records, req, fleet.policy(), owned=True).host, req.name
    except (placement.NoHostFits, InvalidArgument) as exc:
        raise VirtError(f"cannot migrate {name}: {exc}") from exc
    offline = options.pop("offline")
    if offline is None:
        offline = vm.get("state") == "shutoff"
    job = migrator.Migrator(
        fleet, name, source, target, answers, offline=offline, **options,
        prepare_timeout=fleet.conf("prepare_timeout", 600), migrate_timeout=fleet.conf("migrate_timeout", 3600),
    )
    return job, reserved


def survey(fleet, name):
    """``virt.migrate_survey`` of every hypervisor: ``(answers, errors)``.

    On a master of masters, the hypervisors the master's copy of the capacities knows (of any
    age) are asked by name: Salt's client there waits ``syndic_wait`` after the answers to a
    glob, the runner stops at the named hosts' (docs/scale.rst). When none of them has the VM,
    the glob asks again (one the copy does not know yet)."""
    known = fleet.capacities.hosts() if fleet.capacities is not None and fleet.opts.get("order_masters") else []
    known = [h for h in known if fleet.hypervisors.matches(h)]
    if known:
        answers, errors = fleet.fanout("virt.migrate_survey", arg=[name], tgt=known, tgt_type="list")
        if any(isinstance(a, dict) and a.get("migrate_source") for a in answers.values()):
            return answers, errors
    return fleet.fanout("virt.migrate_survey", arg=[name])


def migrate(fleet, name, target=None, test=False, **options):
    """Migrate VM ``name`` (``options``: ``copy_storage``, ``tunnel``, ``offline``,
    ``keep_source_disks`` and ``opts`` for the execution module); the Migrator's report."""
    started = time.monotonic()
    store = reservations.Reservations(os.path.join(fleet.opts["cachedir"], "saltvirt", "reservations"))
    with migration_lock(fleet, name), fleet.session():
        fleet.progress(f"Looking for {name}")
        answers, errors = survey(fleet, name)
        # Each answer is a virt.capacity answer too: kept for virt.init's placement.
        fleet.saw_capacity({h: {k: v for k, v in a.items() if k != "migrate_source"}
                            for h, a in answers.items() if isinstance(a, dict)}, errors)
        try:
            source = migrator.locate(name, answers, errors)
        except VirtError:
            drop_probes(fleet, name, answers)
            raise
        drop_probes(fleet, name, answers, keep=source)
        try:
            job, reserved = _job(fleet, store, name, source, target, answers, errors, test, options)
        except BaseException:
            drop_probes(fleet, name, {source: answers[source]})
            raise
        if test:
            return job.test()
        try:
            result = job.run()
        finally:
            store.release(reserved)
        if fleet.locations is not None:
            fleet.locations.set(name, result.get("host") or source)
        if fleet.capacities is not None:
            fleet.capacities.moved(name, source, result.get("host") or source)
    result["duration_s"] = round(time.monotonic() - started, 2)
    return result


def rebase(fleet, base, host=None, **kwarg):
    """Rebase the overlays of ``base`` on every hypervisor that has it (or on ``host``)."""
    kwarg["missing_ok"] = True
    timeout = fleet.conf("rebase_timeout", 1800)
    if host:
        answers, errors = fleet.on(host, "virt.rebase_base", [base], kwarg, timeout=timeout)
    else:
        answers, errors = fleet.fanout("virt.rebase_base", arg=[base], kwarg=kwarg, timeout=timeout)
    hosts = {h: r for h, r in answers.items() if isinstance(r, dict) and r.get("present")}
    result = {
        "base": base,
        "hosts": hosts,
        "absent": sorted(h for h in answers if h not in hosts),
        "rebased": sum(len(r.get("rebased") or []) for r in hosts.values()),
    }
    if errors:
        result.update(result=False, retcode=1, error=f"rebase of {base} failed: {describe_errors(errors)}",
                      errors=errors)
    elif not hosts:
        raise VirtError(f"no hypervisor has {base} ({', '.join(sorted(answers)) or 'none answered'})")
    else:
        result["result"] = True
    return result
