"""A migration's steps as one hypervisor runs them (the execution module's ``virt.migrate_*``).

Each function takes the host's :class:`saltvirt.settings.HostSettings`; the module only maps
Salt arguments and errors. The master's side is :mod:`saltvirt.migration.migrator`.
"""

import os
import secrets
import time

from saltvirt import connection
from saltvirt.domain import vmops
from saltvirt.errors import InvalidArgument, VirtError
from saltvirt.migration import checks, facts, journal, run
from saltvirt.migration.common import MigrationFailed
from saltvirt.settings import FIRST_BOOT, SEED_PUB


def _uri(target):
    return facts.dest_uri(target)


def reach(conn, uri, here):
    """Whether this host (``conn``, named ``here``) reaches the libvirt at ``uri`` (another host)."""
    try:
        with connection.opened(uri) as dconn:
            same = facts.host_uuid(dconn) == facts.host_uuid(conn)
    except VirtError as exc:
        return {"uri": uri, "ok": False, "detail": str(exc)}
    if same:
        return {"uri": uri, "ok": False, "detail": f"{uri} is this very host (same host UUID)"}
    return {"uri": uri, "ok": True, "detail": f"{here} reaches {uri}"}


def source_info(conn, settings, name, dest=None, probe=True):
    """The source's facts about domain ``name`` (see ``virt.migrate_source_info``)."""
    found = facts.source_facts(conn, name, probe=probe)
    if dest:
        found["dest_check"] = reach(conn, _uri(dest), settings.minion_id)
    found["images"] = settings.images_dir
    found["address"] = settings.address
    return found


def preflight(conn, settings, source_facts, copy_storage=None, offline=False, source=None):
    """Whether this host can take the VM ``source_facts`` describes (see ``virt.migrate_preflight``)."""
    if not isinstance(source_facts, dict) or "disks" not in source_facts:
        raise InvalidArgument("facts must be the dict returned by virt.migrate_source_info")
    report = checks.preflight(conn, source_facts, copy_storage=copy_storage, offline=offline,
                              unsafe_fs=settings.unsafe_fs)
    if source:
        sconn, check = run.reach_source(_uri(source))
        if sconn is not None:
            sconn.close()
        report["checks"].insert(0, check)
        report["ok"] = report["ok"] and check["ok"]
    report["host"] = settings.minion_id
    return report


def _emitter(settings, name, progress_tag):
    if not progress_tag:
        return None, None

    def event(data):
        settings.salt.fire_master(dict(data, name=name, host=settings.minion_id), progress_tag)

    return event, (lambda step, **data: event(dict(data, step=step)))


def pull(conn, settings, name, source_facts, source, dest=None, copy_storage=None, offline=False, token=None,
         progress_tag=None, options=None):
    """Pull domain ``name`` here from ``source`` in one call (see ``virt.migrate_in``)."""
    if not isinstance(source_facts, dict) or "disks" not in source_facts or source_facts.get("name") != name:
        raise InvalidArgument(f"facts must be the dict virt.migrate_source_info returned for {name}")
    options = options.given() if options is not None else {}
    if options.get("tunnel") is None:
        options["tunnel"] = settings.tunnel
    token = str(token or secrets.token_hex(8))
    dest = _uri(dest or settings.address)
    event, announce = _emitter(settings, name, progress_tag)
    journal.prune_journals(settings.migration_dir)
    result = run.migrate_in(
        conn, source_facts, _uri(source), dest, journal.journal_path(settings.migration_dir, token),
        copy_storage=copy_storage, offline=offline, unsafe_fs=settings.unsafe_fs, progress=event,
        announce=announce, **options,
    )
    result.update(host=settings.minion_id, token=token, dest_uri=dest)
    return result


def push(conn, settings, name, target, options, copy_storage=None, offline=False, migrate_disks=None,
         unsafe=False, progress_tag=None, postcopy_resume=False):
    """Migrate domain ``name`` from here to ``target`` (see ``virt.migrate``)."""
    uri = _uri(target)
    kwargs = options.given()
    kwargs["tunnel"] = settings.tunnel if options.tunnel is None else bool(options.tunnel)
    event, _announce = _emitter(settings, name, progress_tag)
    try:
        dconn = connection.connect(uri)
    except VirtError as exc:
        raise InvalidArgument(f"cannot migrate {name}: {exc}") from exc
    try:
        if facts.host_uuid(dconn) == facts.host_uuid(conn):
            raise InvalidArgument(f"{uri} is this very host ({settings.minion_id}): nothing to migrate")
        result = run.migrate(conn, name, uri, offline=offline, copy_storage=copy_storage,
                             migrate_disks=migrate_disks, unsafe=unsafe, dest_conn=dconn, progress=event,
                             postcopy_resume=postcopy_resume, **kwargs)
    except MigrationFailed as exc:
        state = exc.source_state or {}
        where = (f"{name} is still {state.get('state')} on {settings.minion_id}" if state.get("defined")
                 else f"{name} is no longer defined on {settings.minion_id}")
        raise VirtError(f"{exc}; {where}") from exc
    finally:
        dconn.close()
    result["source"] = settings.minion_id
    return result


def _connect_waiting(settings, kwargs, wait):
    """A connection, waiting up to ``wait`` seconds for a restarting libvirtd: ``(conn or None, error)``."""
    deadline = time.monotonic() + float(wait)
    while True:
        try:
            return connection.connect(**settings.connect_args(kwargs)), None
        except VirtError as exc:
            if time.monotonic() > deadline:
                return None, str(exc)
            time.sleep(1)


def _remove_stale(conn, settings, name, stale, error):
    if conn is None:
        return {"removed": [], "kept": list(stale), "error": error}
    vm_dir = settings.vm_dir(name)
    if not vmops.exists(conn, name):
        # The VM lives elsewhere now: its seed bookkeeping here goes with its disks.
        stale = [*stale, *(os.path.join(vm_dir, f) for f in (SEED_PUB, FIRST_BOOT))]
    return journal.remove_stale(conn, name, stale, vm_dir)


def cleanup(settings, name, token=None, probe=None, remove_domain=False, uuid=None, stale=None, wait=30,
            connect_args=None):
    """Undo or finish a migration on this host (see ``virt.migrate_cleanup``)."""
    result = {"name": name, "host": settings.minion_id}
    if probe:
        result["probes_removed"] = facts.remove_probes(probe.get("dirs"), probe.get("token"))
    if not token and not stale:
        return result
    conn, error = _connect_waiting(settings, connect_args, wait)
    try:
        if token:
            path = journal.journal_path(settings.migration_dir, token)
            result.update(journal.cleanup(conn, path, name=name, uuid=uuid, remove_domain=remove_domain))
            if conn is None:
                result["error"] = f"{result.get('error')}: {error}"
        if stale:
            result["stale"] = _remove_stale(conn, settings, name, stale, error)
    finally:
        if conn is not None:
            conn.close()
    return result
