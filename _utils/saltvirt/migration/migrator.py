"""One live migration, driven from the master across the two hypervisors' minions.

:mod:`saltvirt.migration` holds what runs on a hypervisor; this module decides the order of the
steps and, when something fails, what must happen so that the VM is never lost. It talks to the
minions only through a *hosts* object (the Salt runner passes one backed by LocalClient)::

    hosts.call(host, fun, arg, kwarg, timeout)      -> the minion's return; raises VirtError
    hosts.status(name, [source, target])            -> ({host: migrate_status}, {host: error})
    hosts.watch(host, fun, arg, kwarg, tag, on_progress, timeout)
                                                    -> the job's return data ({return, retcode})
    hosts.progress(message, **data)                 -> an event/line for the operator

Steps of a migration (each a module function on one minion)::

    survey (all hypervisors, done by the caller)  where the VM is, host capacity, and the
                                                   source's facts with probe files
    virt.migrate_in          (target)             pre-flight, disks created, then the VM
                                                   pulled: the source's libvirt drives the
                                                   migration; both hosts' view comes back
    virt.migrate_cleanup     (source / target)    stale copies and unseen probes after
                                                   success, traces after a failure
    virt.migrate_preflight   (target)             pre-flight only (``test=True``)

A migration over shared storage therefore costs two Salt round trips: survey and migrate_in.
"""

import secrets
import time

from saltvirt import migration
from saltvirt.errors import InvalidArgument, VirtError
from saltvirt.migration.options import MODULE_OPTIONS


class MigrationRefused(VirtError):
    """The pre-flight checks failed or the request cannot work; nothing was changed."""


def locate(name, answers, errors):
    """The one hypervisor in ``answers`` (survey results) that has domain ``name``."""
    hosts = sorted(h for h, info in answers.items() if info.get("migrate_source"))
    if len(hosts) > 1:
        raise MigrationRefused(f"VM {name} is defined on several hypervisors: {', '.join(hosts)}")
    if not hosts:
        msg = f"no VM named {name} on any hypervisor ({', '.join(sorted(answers)) or 'none answered'})"
        if errors:
            msg += "; not answering: " + "; ".join(f"{m}: {r}" for m, r in sorted(errors.items()))
        raise MigrationRefused(msg)
    return hosts[0]


def progress_line(name, data, doing="Migrating"):
    """One human line from :func:`saltvirt.migration.summarize_job` data."""
    parts = []
    if data.get("disk_total_mib"):
        parts.append(f"disk {data.get('disk_percent') or 0:.0f}%")
    if data.get("memory_total_mib"):
        parts.append(f"memory {data.get('memory_percent') or 0:.0f}%")
    if data.get("iteration"):
        parts.append(f"pass {data['iteration']}")
    if data.get("bandwidth_mib_s"):
        parts.append(f"{data['bandwidth_mib_s']:.0f} MiB/s")
    return f"{doing} {name}: {', '.join(parts) or 'starting'} ({data.get('elapsed_s') or 0:.0f}s)"


def failed_checks(report):
    return [c for c in report["checks"] if not c["ok"]]


def arrived(status, offline):
    """Did the migration land on the host whose ``migrate_status`` this is?"""
    if offline:
        return bool(status.get("defined"))
    return bool(status.get("active") and (status.get("migrated_in") or status.get("state") == "paused"))


def left(status, undefinesource):
    """Is the source done with the domain (undefined, or at least stopped)?"""
    return not status.get("defined") if undefinesource else not status.get("active")


class Migrator:
    """Moves domain ``name`` from ``source`` to ``target`` (minion ids).

    ``answers``: the survey, ``{host: full_info}``; the source's entry carries
    ``migrate_source`` (its :func:`saltvirt.migration.source_facts`, probe files included).
    ``opts``: the :data:`MODULE_OPTIONS` given by the caller. The caller holds the lock that
    keeps two migrations of one VM apart, and the placement reservation.
    """

    def __init__(self, hosts, name, source, target, answers, *, copy_storage=None, offline=False,
                 tunnel=False, opts=None, keep_source_disks=False, prepare_timeout=600,
                 migrate_timeout=3600):
        self.hosts = hosts
        self.name, self.source, self.target = name, source, target
        self.answers = answers
        self.copy_storage, self.offline, self.tunnel = copy_storage, offline, tunnel
        self.opts = dict(opts or {})
        self.keep_source_disks = keep_source_disks
        self.prepare_timeout, self.migrate_timeout = prepare_timeout, migrate_timeout
        self.facts = (answers.get(source) or {}).get("migrate_source") or {}
        self.dest = migration.dest_uri(answers[target].get("address") or target)
        self.source_uri = migration.dest_uri(answers[source].get("address") or source)

    # ------------------------------------------------------------------ pre-flight

    def remove_probes(self, probe=None):
        """Remove the survey's probe files (default: all of them) from the source (best effort:
        they are tiny)."""
        probe = probe or self.facts.get("probe")
        if not probe:
            return None
        try:
            return self.hosts.call(self.source, "virt.migrate_cleanup", [self.name], {"probe": probe})
        except VirtError as exc:
            return {"error": str(exc)}

    def preflight(self, reach=False):
        """The target's report; with ``reach`` also whether the source reaches the target."""
        if not self.facts:
            raise MigrationRefused(f"{self.source} sent no migration facts for {self.name}")
        report = self.hosts.call(self.target, "virt.migrate_preflight", [self.facts],
                                 {"copy_storage": self.copy_storage, "offline": self.offline,
                                  "source": self.source_uri})
        if reach:
            check = self.hosts.call(self.source, "virt.migrate_source_info", [self.name],
                                    {"dest": self.dest, "probe": False}).get("dest_check") or {}
            report["checks"].insert(0, {"check": f"{self.source} reaches {self.target}",
                                        "ok": bool(check.get("ok")), "detail": check.get("detail")})
            report["ok"] = report["ok"] and bool(check.get("ok"))
        return report

    def plan(self, storage):
        opts = self.opts
        return migration.plan(
            live=opts.get("live", True), offline=self.offline, persistent=opts.get("persistent", True),
            undefinesource=opts.get("undefinesource", True), copy_storage=storage["copy_storage"],
            migrate_disks=storage["migrate_disks"], max_bandwidth=opts.get("max_bandwidth"),
            postcopy=opts.get("postcopy", False), auto_converge=opts.get("auto_converge", False),
            compressed=opts.get("compressed", False),
            parallel_connections=opts.get("parallel_connections"), tunnel=self.tunnel,
            tls=opts.get("tls", False), unsafe=storage["unsafe"],
            migration_uri=opts.get("migration_uri"), peer2peer=opts.get("peer2peer", True),
        )

    def test(self):
        """Pre-flight only: the report and the plan; nothing changes (probe files removed)."""
        self.hosts.progress(f"Pre-flight checks for {self.name}: {self.source} -> {self.target}")
        try:
            report = self.preflight(reach=True)
        finally:
            self.remove_probes()
        the_plan = self.plan(report["storage"]) if report["ok"] else None
        return {
            "test": True, "name": self.name, "source": self.source, "target": self.target,
            "dest_uri": self.dest, "ok": report["ok"], "checks": report["checks"],
            "storage": report["storage"], "plan": the_plan.to_dict() if the_plan else None,
        }

    # ------------------------------------------------------------------ the migration

    def run(self):
        """Migrate; the structured result has ``result`` True, or False with the recovery.

        One job on the target (``virt.migrate_in``) checks, prepares and pulls the VM; the
        source's libvirt drives the migration. Failures are recovered here, from both hosts'
        view afterwards.
        """
        name, source, target = self.name, self.source, self.target
        if not self.facts:
            raise MigrationRefused(f"{source} sent no migration facts for {name}")
        self.hosts.progress(f"Pre-flight checks for {name}: {source} -> {target}")
        token = secrets.token_hex(8)
        tag = f"saltvirt/migrate/{token}/progress"
        module_opts = {k: self.opts[k] for k in MODULE_OPTIONS if k in self.opts}
        module_opts.update(copy_storage=self.copy_storage, offline=self.offline, tunnel=self.tunnel,
                           token=token, progress_tag=tag, dest=self.dest)

        def on_progress(data):
            step = data.get("step")  # a step starts on the target, or the job's statistics
            if step == "prepare":
                self.hosts.progress(f"Preparing {data.get('disks')} disk(s) of {name} on {target}", host=target)
            elif step == "migrate":
                disks = data.get("migrate_disks") or []
                copying = ", copying " + ", ".join(disks) if disks else ""
                self.hosts.progress(f"Migrating {name} from {source} to {target} ({data.get('mode')}{copying})",
                                    host=source)
            else:
                self.hosts.progress(progress_line(name, data), host=source, progress=data)

        error, ret = None, None
        try:
            data = self.hosts.watch(target, "virt.migrate_in", [name, self.facts, self.source_uri], module_opts,
                                    tag, on_progress, self.prepare_timeout + self.migrate_timeout)
            ret = data.get("return")
            if not isinstance(ret, dict):
                error = ret.removeprefix("ERROR: ") if isinstance(ret, str) else f"virt.migrate_in failed: {ret}"
                ret = None
            elif ret.get("refused"):
                self.remove_probes()
                failed = "; ".join(f"{c['check']}: {c['detail']}" for c in failed_checks(ret))
                raise MigrationRefused(f"cannot migrate {name} from {source} to {target}: {failed}")
            elif ret.get("error") or data.get("retcode"):
                error = ret.get("error") or f"virt.migrate_in failed: {ret}"
                state = ret.get("source_state")
                if isinstance(state, dict):  # what the source's libvirt said right after
                    error += (f"; {name} is still {state.get('state')} on {source}" if state.get("defined")
                              else f"; {name} is no longer defined on {source}")
        except MigrationRefused:
            raise
        except Exception as exc:  # pylint: disable=broad-except
            error = str(exc)  # whatever broke, the hosts' state decides what happens next

        ret = ret or {}
        if error is None and ret.get("target_status") and ret.get("source_status"):
            # Both libvirts' view right after the switch-over came back with the job.
            status, status_errors = {source: ret["source_status"], target: ret["target_status"]}, {}
        else:
            status, status_errors = self.hosts.status(name, [source, target])
        return self._conclude(token, ret, error, status, status_errors)

    def _probes_left(self, ret):
        """Probe dirs the target could not see (not shared): only the source can remove them."""
        probe = self.facts.get("probe") or {}
        if not probe.get("dirs"):
            return None
        if "probes_removed" not in ret:
            return probe  # unknown: remove them all (harmless if gone)
        left = sorted(set(probe["dirs"]) - set(ret["probes_removed"] or ()))
        return {"token": probe["token"], "dirs": left} if left else None

    def _postcopy_split(self, status):
        """The hosts whose copy is paused in a failed post-copy migration (the guest is split)."""
        postcopy = (migration.PAUSED_POSTCOPY, migration.PAUSED_POSTCOPY_FAILED)
        return [h for h in (self.source, self.target)
                if (status.get(h) or {}).get("active") and (status.get(h) or {}).get("state") == "paused"
                and (status.get(h) or {}).get("reason") in postcopy]

    recover_pause = 5  # seconds between attempts to resume a failed post-copy migration

    def _recover_postcopy(self, attempts=3):
        """Resume a post-copy migration that failed after the switch-over, from the source:
        ``(recovered, report)``. Tried ``attempts`` times (the link may take a moment to return)."""
        name, source, target = self.name, self.source, self.target
        opts = {k: v for k, v in self.opts.items() if k in MODULE_OPTIONS and k not in ("timeout", "max_downtime")}
        opts["tunnel"] = self.tunnel  # the same transport as the migration it resumes
        report = {"attempts": []}
        for attempt in range(attempts):
            self.hosts.progress(f"Post-copy migration of {name} failed after the switch-over: resuming it "
                                f"({attempt + 1}/{attempts})", host=source)
            try:
                self._resume(opts)
                report["attempts"].append("resumed")
                return True, report
            except VirtError as exc:
                report["attempts"].append(str(exc))
            status, _errors = self.hosts.status(name, [source, target])
            if not self._postcopy_split(status):
                break  # no longer split: what the hosts show now decides
            time.sleep(self.recover_pause)
        return False, report

    def _resume(self, opts):
        """One resume from the source, its progress shown as the migration's was; VirtError when
        it failed."""
        name, source, fun = self.name, self.source, "virt.migrate_recover"
        tag = f"saltvirt/migrate/{secrets.token_hex(8)}/progress"

        def on_progress(data):
            self.hosts.progress(progress_line(name, data, "Resuming"), host=source, progress=data)

        data = self.hosts.watch(source, fun, [name, self.dest], dict(opts, progress_tag=tag), tag, on_progress,
                                self.migrate_timeout)
        ret = data.get("return")
        if data.get("retcode") or not isinstance(ret, dict):
            why = ret.removeprefix("ERROR: ") if isinstance(ret, str) else f"it returned {ret!r}"
            raise VirtError(f"{fun} on {source} failed: {why}")

    def _conclude(self, token, ret, error, status, status_errors):
        name, source, target = self.name, self.source, self.target
        if error is not None and self._postcopy_split(status):
            recovered, report = self._recover_postcopy()
            report = {"failure": error, **report}  # why it was resumed
            status, status_errors = self.hosts.status(name, [source, target])
            ret = dict(ret, postcopy_switched=True, postcopy_recovery=report)
            if recovered:
                error = None
        src, dst = status.get(source) or {}, status.get(target) or {}
        landed = arrived(dst, self.offline)
        gone = left(src, self.opts.get("undefinesource", True)) and source not in status_errors
        storage, the_plan = ret.get("storage") or {}, ret.get("plan") or {}
        result = {
            "name": name, "source": source, "target": target, "dest_uri": self.dest,
            "mode": the_plan.get("mode"), "flags": the_plan.get("flags"),
            "copy_storage": storage.get("copy_storage"),
            "storage": {d["target"]: d["action"] for d in storage.get("disks") or ()},
            "notes": list(the_plan.get("notes") or ()) + list(storage.get("notes") or ()),
            "token": token,  # names the target's journal: virt.migrate_cleanup <vm> token=<token>
        }
        probes = self._probes_left(ret)
        if error is None and landed and gone:
            job = dst.get("job") or ret.get("job") or {}
            result.update(result=True, host=target, state=dst.get("state"),
                          migration_s=ret.get("duration_s"),
                          **({"postcopy_recovery": ret["postcopy_recovery"]} if ret.get("postcopy_recovery") else {}),
                          postcopy_switched=bool(ret.get("postcopy_switched")),
                          downtime_ms=job.get("downtime_ms"), job=job)
            cleanup = {}
            copied = [c["path"] for c in storage.get("create") or ()]
            if copied and not self.keep_source_disks:
                cleanup["stale"] = copied
            if probes:
                cleanup["probe"] = probes
            if cleanup:
                try:
                    result["source_cleanup"] = self.hosts.call(source, "virt.migrate_cleanup", [name], cleanup)
                except VirtError as exc:
                    result["source_cleanup"] = {"error": str(exc)}
            self.hosts.progress(f"{name} is {dst.get('state')} on {target} "
                                f"(downtime {job.get('downtime_ms')} ms)", host=target)
            return result
        if error is None and landed and not gone:
            error = f"{name} arrived on {target} but is still defined on {source}: {src}"
        if probes:
            removed = self.remove_probes(probes)
            if "error" in removed:
                result["probes_left"] = {"error": removed["error"], **probes}
        if ret.get("postcopy_recovery"):
            result["postcopy_recovery"] = ret["postcopy_recovery"]  # what the resume attempts met
        return self._failed(token, ret.get("prepared"), error, status, status_errors, result)

    def _failed(self, token, prepared, error, status, status_errors, result):
        """Make sure the VM runs on the source only, and remove what this migration made on the target."""
        name, source, target = self.name, self.source, self.target
        src, dst = status.get(source) or {}, status.get(target) or {}
        error = error or f"{name} did not arrive on {target}: {dst or status_errors.get(target)}"
        recovery = {}
        split = self._postcopy_split(status)
        if split:
            # After a post-copy switch-over the guest's memory is split between the hosts: the
            # target has its CPU state, the source the pages not yet pulled. Removing or resuming
            # either copy alone loses the VM, so nothing is touched.
            where = target
            recovery["note"] = (
                f"{name} failed after the post-copy switch-over ({', '.join(split)} paused, post-copy) and "
                f"resuming it failed: nothing was removed. Recover it by resuming the migration from {source} "
                f"(virsh -c <{source}'s URI> migrate --live --p2p --postcopy --postcopy-resume {name} "
                f"<{target}'s URI>) once both hosts reach each other; if {source} is lost, its pages are "
                "too and the guest cannot continue"
            )
        elif dst.get("active") and dst.get("state") == "running":
            # The guest runs on the target: that is the live copy now, whatever the source shows.
            # Never resume or clean anything then: two copies must not run.
            where = target
            recovery["note"] = (f"{name} runs on {target}; nothing was resumed or cleaned up"
                                + (f"; {source} still has it {src.get('state')}" if src.get("defined") else ""))
        elif src.get("active"):
            if src.get("state") == "paused" and src.get("reason") == migration.PAUSED_MIGRATION:
                # libvirt left the source paused for the switch-over that never happened.
                try:
                    recovery["resumed"] = self.hosts.call(source, "virt.resume", [name]).get("resumed")
                except VirtError as exc:
                    recovery["resumed"] = str(exc)
            self.hosts.progress(f"Migration of {name} failed; removing its traces on {target}", host=target)
            try:
                recovery["target_cleanup"] = self.hosts.call(
                    target, "virt.migrate_cleanup", [name],
                    {"token": token, "remove_domain": True, "uuid": self.facts["uuid"], "wait": 30},
                    timeout=60,
                )
            except VirtError as exc:
                recovery["target_cleanup"] = {"error": str(exc)}
            where = source
        else:
            where = None
            recovery["note"] = (f"{name} is running on neither {source} nor {target}; nothing was cleaned "
                                "up, check both hosts (virsh list --all)")
        result.update(
            result=False, retcode=1, error=error, host=where,
            state=(src if where == source else dst).get("state") if where else None,
            recovery=recovery,
            status={source: src or status_errors.get(source), target: dst or status_errors.get(target)},
        )
        if prepared:
            result["prepared"] = prepared
        return result


def check_options(opts, copy_storage):
    """Refuse unknown options and copy modes before anything starts."""
    unknown = sorted(set(opts) - set(MODULE_OPTIONS))
    if unknown:
        raise InvalidArgument(f"virt.migrate: unknown option(s) {', '.join(unknown)}; known: "
                              f"{', '.join(MODULE_OPTIONS + ('copy_storage', 'tunnel', 'offline'))}")
    if copy_storage not in (None, "all", "inc"):
        raise InvalidArgument(f"copy_storage must be all or inc, not {copy_storage!r}")
