"""Running a migration: the job (started on the source's libvirt, watched, concluded), its
progress and cost, and the pull that runs the whole migration from the target."""

import contextlib
import threading
import time

from saltvirt import connection
from saltvirt.domain import vmops
from saltvirt.errors import InvalidArgument, NotFound, VirtError, libvirt_message
from saltvirt.migration.checks import preflight
from saltvirt.migration.common import (
    MIB,
    PAUSED_POSTCOPY,
    PAUSED_POSTCOPY_FAILED,
    RUNNING_MIGRATED,
    MigrationFailed,
    libvirt,
    positive_int,
)
from saltvirt.migration.facts import remove_probes
from saltvirt.migration.flags import plan
from saltvirt.migration.journal import prepare_disks
from saltvirt.migration.options import JOB_OPTIONS, POSTCOPY_STALL, PULL_OPTIONS


def _mib(value):
    return None if value is None else round(value / MIB, 1)


def _percent(total, remaining):
    if not total:
        return None
    return max(0.0, min(100.0, round(100.0 * (total - (remaining or 0)) / total, 1)))


def summarize_job(stats):
    """The progress of an active job as a flat dict (MiB, percent), from ``dom.jobStats()``."""
    stats = stats or {}
    memory_pct = _percent(stats.get("memory_total"), stats.get("memory_remaining"))
    disk_pct = _percent(stats.get("disk_total"), stats.get("disk_remaining"))
    if stats.get("disk_total") and (disk_pct or 0) < 100:
        phase = "disk"
    elif stats.get("memory_postcopy_requests"):
        phase = "postcopy"
    else:
        phase = "memory"
    return {
        "phase": phase,
        "percent": _percent(stats.get("data_total"), stats.get("data_remaining")),
        "memory_percent": memory_pct,
        "disk_percent": disk_pct,
        "memory_total_mib": _mib(stats.get("memory_total")),
        "memory_remaining_mib": _mib(stats.get("memory_remaining")),
        "disk_total_mib": _mib(stats.get("disk_total")),
        "disk_remaining_mib": _mib(stats.get("disk_remaining")),
        "bandwidth_mib_s": _mib(stats.get("memory_bps") or stats.get("disk_bps")),
        "dirty_rate_pages_s": stats.get("memory_dirty_rate"),
        "iteration": stats.get("memory_iteration"),
        "elapsed_s": None if stats.get("time_elapsed") is None else round(stats["time_elapsed"] / 1000, 1),
    }


def job_result(stats):
    """What a completed migration cost, from ``jobStats(COMPLETED)``: downtime, time, data."""
    stats = stats or {}
    if not stats or stats.get("type") in (None, 0):
        return {}
    return {
        "downtime_ms": stats.get("downtime"),
        "downtime_net_ms": stats.get("downtime_net"),
        "total_time_ms": stats.get("time_elapsed"),
        "setup_time_ms": stats.get("setup_time"),
        "memory_transferred_mib": _mib(stats.get("memory_processed")),
        "memory_total_mib": _mib(stats.get("memory_total")),
        "disk_transferred_mib": _mib(stats.get("disk_processed")),
        "disk_total_mib": _mib(stats.get("disk_total")),
        "memory_bandwidth_mib_s": _mib(stats.get("memory_bps")),
        "iterations": stats.get("memory_iteration"),
        "postcopy_requests": stats.get("memory_postcopy_requests"),
    }


def domain_status(conn, name):
    """Where a domain stands on this host: defined, active, state and reason, last completed job."""
    try:
        dom = vmops.lookup(conn, name)
    except NotFound:
        return {"name": name, "defined": False, "active": False, "state": None}
    state, reason = dom.state()
    status = {
        "name": name,
        "defined": True,
        "uuid": dom.UUIDString(),
        "active": bool(dom.isActive()),
        "persistent": bool(dom.isPersistent()),
        "state": vmops.STATES.get(state, "unknown"),
        "reason": reason,
        "migrated_in": state == libvirt.VIR_DOMAIN_RUNNING and reason == RUNNING_MIGRATED,
    }
    with contextlib.suppress(libvirt.libvirtError):
        flags = libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED | libvirt.VIR_DOMAIN_JOB_STATS_KEEP_COMPLETED
        status["job"] = job_result(dom.jobStats(flags))
    return status


class _Watcher:
    """Polls the running job: progress, the switch to post-copy, the time limit, a stuck post-copy."""

    # After the switch-over the job cannot be cancelled (the guest runs on the target with pages
    # still here), but it can stall for good (QEMU waiting on a link or a handshake that never
    # comes): with nothing moved for stall_limit seconds it is paused (a failed post-copy, which
    # the runner resumes), and if even that does not end the job, given up on after the grace.
    stall_limit = POSTCOPY_STALL
    abort_grace = 30

    def __init__(self, dom, progress, timeout, postcopy):
        self.dom, self.progress = dom, progress
        self.timeout, self.postcopy = timeout, postcopy
        self.last = None
        self.aborted = None
        self.aborted_at = None
        self.abort_error = None
        self.switched = False
        self.started = time.monotonic()
        self.moved, self.moved_at = None, self.started

    def poll(self):
        now = time.monotonic()
        try:
            stats = self.dom.jobStats()
        except libvirt.libvirtError:
            stats = {}
        if stats.get("type") not in (None, libvirt.VIR_DOMAIN_JOB_NONE):
            self._report(stats)
            mark = tuple(stats.get(k) for k in ("data_processed", "memory_processed", "disk_processed"))
            if mark != self.moved:
                self.moved, self.moved_at = mark, now
        if self.aborted:
            return
        with contextlib.suppress(libvirt.libvirtError):
            if self.postcopy and not self.switched and (stats.get("memory_iteration") or 0) >= 2:
                # One full pass of memory is copied: let the guest run on the target now.
                self.dom.migrateStartPostCopy(0)
                self.switched = True
                self.moved_at = now
            elif self.timeout and not self.switched and now - self.started > self.timeout:
                self._abort(f"took longer than {self.timeout}s", now, self.dom.abortJob)
        if self.switched and now - self.moved_at > self.stall_limit:
            self._abort(f"nothing moved for {self.stall_limit}s after the switch to post-copy", now,
                        self.dom.abortJobFlags, libvirt.VIR_DOMAIN_ABORT_JOB_POSTCOPY)

    def _report(self, stats):
        self.last = summarize_job(stats)
        if self.progress is not None:
            # A failing progress sink must not break the migration.
            with contextlib.suppress(Exception):
                self.progress(dict(self.last))

    def _abort(self, why, now, abort, *args):
        self.aborted, self.aborted_at = why, now
        # Asked from a thread of its own: a QEMU that no longer answers its monitor must not
        # stop this one from giving up on the job.
        thread, outcome = _blocking(abort, *args)
        thread.join(5)
        if thread.is_alive():
            self.abort_error = "libvirt did not answer the request within 5s"
        elif "error" in outcome:
            self.abort_error = libvirt_message(outcome["error"])

    def given_up(self):
        """The job was asked to end and did not within the grace: stop waiting for it."""
        return self.aborted_at is not None and time.monotonic() - self.aborted_at > self.abort_grace


def _blocking(func, *args):
    """Run ``func(*args)`` in a thread (libvirt releases the GIL); return (thread, outcome)."""
    outcome = {}

    def _run():
        try:
            outcome["value"] = func(*args)
        except BaseException as exc:  # pylint: disable=broad-except
            outcome["error"] = exc

    thread = threading.Thread(target=_run, daemon=True)
    thread.start()
    return thread, outcome


def migrate(conn, name, dest_uri, *, live=True, offline=False, persistent=True, undefinesource=True,
            copy_storage=None, migrate_disks=None, max_bandwidth=None, max_downtime=None,
            postcopy=False, auto_converge=False, compressed=False, parallel_connections=None,
            tunnel=False, tls=False, unsafe=False, migration_uri=None, peer2peer=True,
            progress=None, interval=1.0, timeout=None, dest_conn=None, postcopy_bandwidth=None,
            postcopy_resume=False, postcopy_stall=POSTCOPY_STALL):
    """Migrate domain ``name`` from ``conn`` to the libvirt at ``dest_uri``.

    Peer-to-peer by default (``migrateToURI3``: the source libvirtd drives the migration, so it
    survives this process); ``peer2peer=False`` uses ``migrate3`` over ``dest_conn``.
    ``progress(dict)`` is called every ``interval`` seconds with :func:`summarize_job`;
    ``timeout`` seconds aborts the job (the VM keeps running here). ``max_downtime`` in ms,
    ``max_bandwidth`` in MiB/s. On failure raises :class:`MigrationFailed` carrying the
    domain's state here afterwards. ``postcopy_resume``: resume a post-copy migration that
    failed after the switch-over (see :func:`saltvirt.migration.flags.plan`). After the
    switch-over, ``postcopy_stall`` seconds without progress pause the post-copy (libvirt's
    post-copy abort: the migration fails in a state a resume continues from).
    """
    stall = positive_int(postcopy_stall, "postcopy_stall (s)")
    dom = vmops.lookup(conn, name)
    uuid = dom.UUIDString()
    active = bool(dom.isActive())
    if postcopy_resume:
        state, reason = dom.state()
        if not (state == libvirt.VIR_DOMAIN_PAUSED and reason in (PAUSED_POSTCOPY, PAUSED_POSTCOPY_FAILED)):
            raise InvalidArgument(f"{name} is not paused in a failed post-copy migration: nothing to resume")
        max_downtime = None  # the switch-over is behind us
    if not active and not offline:
        raise InvalidArgument(f"{name} is not running: a live migration needs it running (or offline=True)")
    the_plan = plan(live=live, offline=offline, persistent=persistent, undefinesource=undefinesource,
                    copy_storage=copy_storage, migrate_disks=migrate_disks, max_bandwidth=max_bandwidth,
                    postcopy=postcopy, auto_converge=auto_converge, compressed=compressed,
                    parallel_connections=parallel_connections, tunnel=tunnel, tls=tls, unsafe=unsafe,
                    migration_uri=migration_uri, peer2peer=peer2peer, postcopy_bandwidth=postcopy_bandwidth,
                    postcopy_resume=postcopy_resume)
    if not the_plan.peer2peer and dest_conn is None:
        raise InvalidArgument("a direct (non peer-to-peer) migration needs a destination connection")
    if max_downtime is not None:
        try:
            dom.migrateSetMaxDowntime(positive_int(max_downtime, "max_downtime (ms)"), 0)
        except libvirt.libvirtError as exc:
            raise VirtError(f"cannot set the maximum downtime of {name}: {libvirt_message(exc)}") from exc
    watcher = _Watcher(dom, progress, timeout, postcopy and not postcopy_resume)
    watcher.switched = bool(postcopy_resume)
    watcher.stall_limit = stall
    started = time.monotonic()
    outcome = _run_job(dom, the_plan, dest_uri, dest_conn, watcher if active else None, interval)
    exc = outcome.get("error")
    if outcome.get("stuck"):
        raise MigrationFailed(
            f"migration of {name} to {dest_uri} failed: {watcher.aborted}, and the job did not end when "
            f"interrupted ({watcher.abort_error or 'no error'}) within {watcher.abort_grace}s",
            source_state=_state_after(conn, uuid),
            phase="postcopy" if watcher.switched else "precopy",
        )
    if isinstance(exc, libvirt.libvirtError):
        message = libvirt_message(exc)
        if watcher.aborted:
            message = f"aborted: {watcher.aborted} ({message})"
        raise MigrationFailed(
            f"migration of {name} to {dest_uri} failed: {message}",
            source_state=_state_after(conn, uuid),
            phase="postcopy" if watcher.switched else "precopy",
        ) from exc
    if exc is not None:
        raise exc
    return _migrated(conn, name, uuid, dest_uri, dest_conn, the_plan, watcher, time.monotonic() - started)


def _run_job(dom, the_plan, dest_uri, dest_conn, watcher, interval):
    """Run the migration job to its end, polling ``watcher`` (if any) meanwhile: its outcome.

    The migration blocks in a worker thread; this thread polls, so ``progress`` runs in the
    caller's thread (Salt's loader context, for one, is per thread).
    """
    flags = the_plan.flag_value()
    if the_plan.peer2peer:
        thread, outcome = _blocking(dom.migrateToURI3, dest_uri, dict(the_plan.params), flags)
    else:
        thread, outcome = _blocking(dom.migrate3, dest_conn, dict(the_plan.params), flags)
    while thread.is_alive():
        thread.join(interval)
        if thread.is_alive() and watcher is not None:
            watcher.poll()
            if watcher.given_up():
                return {"stuck": True}  # the blocked call is left to its (daemon) thread
    return outcome


def _migrated(conn, name, uuid, dest_uri, dest_conn, the_plan, watcher, duration):
    """The result of a migration that succeeded."""
    result = {
        "name": name,
        "uuid": uuid,
        "dest_uri": dest_uri,
        "duration_s": round(duration, 2),
        "postcopy_switched": watcher.switched,
        "last_progress": watcher.last,
        "job": {},
    }
    result.update(the_plan.to_dict())
    # Where the domain stands now, seen by both libvirts: callers verify the move with it
    # without asking the hosts again.
    result["source_status"] = dict(_state_after(conn, uuid), name=name)
    if dest_conn is not None:
        with contextlib.suppress(libvirt.libvirtError):
            result["target_status"] = domain_status(dest_conn, name)
            result["job"] = result["target_status"].get("job") or {}
    return result




def reach_source(uri):
    """Open the source's libvirt for a pull: ``(conn or None, pre-flight check)``."""
    try:
        conn = connection.connect(uri)
    except VirtError as exc:
        return None, {"check": "reaches the source", "ok": False, "detail": str(exc)}
    return conn, {"check": "reaches the source", "ok": True, "detail": f"reaches {uri}"}


def migrate_in(conn, facts, source_uri, dest_uri, journal, *, copy_storage=None, offline=False,
               progress=None, announce=None, unsafe_fs=(), **options):
    """The whole migration, run on the target: the VM is pulled, in one call.

    ``conn``: this host (the target); ``facts``: the source's :func:`source_facts`;
    ``source_uri``: the source's libvirt (:func:`reach_source`); ``dest_uri``: how the source
    reaches this host. Steps: :func:`preflight` here, the
    probe files this host sees removed (the others are the caller's), disks pre-created
    (:func:`prepare_disks`, journaled in ``journal``), then :func:`migrate` started on the
    source's libvirt, which drives it peer to peer (the same job as a push from the source).
    ``announce(step, **data)`` says which step starts (``prepare``, ``migrate``); ``options``:
    :data:`PULL_OPTIONS`.

    Returns a dict with ``checks``, ``storage``, ``probes_removed`` and then either
    ``refused: True`` (nothing changed), or the plan and :func:`migrate`'s result, or ``error``
    (with ``prepared``, ``phase``, ``source_state``): the caller decides the recovery.
    """
    unknown = sorted(set(options) - set(PULL_OPTIONS))
    if unknown:
        raise InvalidArgument(f"unknown migration option(s): {', '.join(unknown)}")
    report = preflight(conn, facts, copy_storage=copy_storage, offline=offline, unsafe_fs=unsafe_fs)
    probe = facts.get("probe") or {}
    out = {"refused": False, "checks": report["checks"], "storage": report["storage"],
           "probes_removed": remove_probes(probe.get("dirs"), probe.get("token"))}
    source_conn, reach = reach_source(source_uri)
    out["checks"].insert(0, reach)
    try:
        return _pull(conn, facts, source_conn, dest_uri, journal, out, offline, announce, progress, options)
    finally:
        if source_conn is not None:
            source_conn.close()


def _pull(conn, facts, source_conn, dest_uri, journal, out, offline, announce, progress, options):
    """:func:`migrate_in` once the checks are in ``out``: the plan, the disks, the migration."""
    storage = out["storage"]
    the_plan = None
    if all(c["ok"] for c in out["checks"]):
        try:
            if "postcopy_stall" in options:
                positive_int(options["postcopy_stall"], "postcopy_stall (s)")
            the_plan = plan(offline=offline, copy_storage=storage["copy_storage"],
                            migrate_disks=storage["migrate_disks"], unsafe=storage["unsafe"],
                            **{k: v for k, v in options.items() if k not in JOB_OPTIONS})
        except InvalidArgument as exc:
            out["checks"].append({"check": "options", "ok": False, "detail": str(exc)})
    if the_plan is None:
        out.update(refused=True, ok=False)
        return out
    out.update(ok=True, plan=the_plan.to_dict())
    prepared = []
    try:
        if storage["create"]:
            if announce:
                announce("prepare", disks=len(storage["create"]))
            prepared = prepare_disks(storage["create"], journal, source_conn, facts["name"])["created"]
        if announce:
            announce("migrate", mode=the_plan.mode, migrate_disks=list(storage["migrate_disks"]))
        result = migrate(source_conn, facts["name"], dest_uri, offline=offline,
                         copy_storage=storage["copy_storage"], migrate_disks=storage["migrate_disks"],
                         unsafe=storage["unsafe"], dest_conn=conn, progress=progress, **options)
    except MigrationFailed as exc:
        out.update(error=str(exc), phase=exc.phase, source_state=exc.source_state, prepared=prepared)
        return out
    except VirtError as exc:
        out.update(error=str(exc), prepared=prepared)
        return out
    out.update(result)
    out["prepared"] = prepared
    return out


def _state_after(conn, uuid):
    try:
        dom = conn.lookupByUUIDString(uuid)
        state, reason = dom.state()
    except libvirt.libvirtError:
        return {"defined": False}
    return {"defined": True, "state": vmops.STATES.get(state, "unknown"), "reason": reason,
            "active": bool(dom.isActive())}
