"""saltvirt.migration.migrator: the order of the steps and the never-lose-a-VM decisions (pure logic).

The hosts are a recording fake here; the real thing (LocalClient, minions, libvirtd, QEMU) is
proven by tests/integration/test_migration*.py.
"""

import pytest

from saltvirt.errors import InvalidArgument, VirtError
from saltvirt.migration import migrator

PROBE = {"token": "t0k", "dirs": ["/srv/salt-images/vm1"]}


def survey(copy=False):
    disk = {"target": "vda", "action": "copy" if copy else "shared"}
    storage = {
        "disks": [disk], "create": [{"path": "/srv/salt-images/vm1/system.qcow2"}] if copy else [],
        "copy_storage": "inc" if copy else None, "migrate_disks": ["vda"] if copy else [],
        "unsafe": not copy, "errors": [], "notes": [],
    }
    answers = {
        "hv1": {"address": "10.0.0.1",
                "migrate_source": {"name": "vm1", "uuid": "u-1", "probe": PROBE, "disks": [],
                                   "vcpus": 1, "memory_mib": 256, "state": "running"}},
        "hv2": {"address": "10.0.0.2"},
    }
    return answers, storage


class FakeHosts:
    """Answers the module calls from a script and records them.

    ``migrate_in``: the data of the target's job (``{"retcode", "return"}``) or an exception.
    """

    def __init__(self, storage, preflight_ok=True, migrate_in=None, status=None, fail=()):
        self.storage, self.preflight_ok = storage, preflight_ok
        self.migrate_in = migrate_in
        self.status_answer = status
        self.fail = set(fail)
        self.calls, self.events = [], []

    def call(self, host, fun, arg=(), kwarg=None, timeout=None):
        self.calls.append((host, fun, kwarg or {}))
        if (host, fun) in self.fail:
            raise VirtError(f"{fun} on {host} failed: boom")
        if fun == "virt.migrate_preflight":
            checks = [{"check": "memory", "ok": self.preflight_ok, "detail": "256 MiB free"}]
            return {"ok": self.preflight_ok, "checks": checks, "storage": self.storage}
        if fun == "virt.migrate_source_info":
            return {"dest_check": {"ok": True, "detail": "hv1 reaches hv2"}}
        if fun == "virt.resume":
            return {"resumed": True}
        return {"host": host}

    def status(self, name, hosts):
        self.calls.append((tuple(hosts), "virt.migrate_status", {}))
        if isinstance(self.status_answer, list):  # one answer per call, the last one repeated
            return self.status_answer.pop(0) if len(self.status_answer) > 1 else self.status_answer[0]
        return self.status_answer

    def watch(self, host, fun, arg, kwarg, tag, on_progress, timeout):
        self.calls.append((host, fun, kwarg))
        if fun == "virt.migrate_recover":
            if (host, fun) in self.fail:
                return {"retcode": 1, "return": "ERROR: migration of vm1 failed: boom"}
            on_progress({"memory_total_mib": 256, "memory_percent": 90.0, "elapsed_s": 2})
            return {"retcode": 0, "return": {"host": host}}
        on_progress({"step": "migrate", "mode": "peer2peer", "migrate_disks": ["vda"]})
        on_progress({"memory_total_mib": 256, "memory_percent": 50.0, "elapsed_s": 1})
        if isinstance(self.migrate_in, Exception):
            raise self.migrate_in
        return self.migrate_in

    def progress(self, message, **data):
        self.events.append(message)

    def funs(self):
        return [(c[0], c[1]) for c in self.calls]


ARRIVED = {"defined": True, "active": True, "state": "running", "migrated_in": True,
           "job": {"downtime_ms": 42}}
GONE = {"defined": False}
RUNNING_HERE = {"defined": True, "active": True, "state": "running", "reason": 1}
PAUSED_FOR_MIGRATION = {"defined": True, "active": True, "state": "paused", "reason": 2}
PLAN = {"mode": "peer2peer", "flags": ["LIVE", "PEER2PEER"], "notes": []}


def job(storage, retcode=0, seen=True, **ret):
    """The target job's data: the probe seen (shared) or not, then ``ret``."""
    base = {"refused": False, "checks": [{"check": "memory", "ok": True, "detail": "ok"}],
            "storage": storage, "probes_removed": list(PROBE["dirs"]) if seen else [], "plan": PLAN,
            "prepared": [c["path"] for c in storage["create"]]}
    base.update(ret)
    return {"retcode": retcode, "return": base}


def ok_job(storage, **kw):
    return job(storage, duration_s=2.1, source_status=GONE, target_status=ARRIVED, **kw)


def make(hosts, answers, **kw):
    return migrator.Migrator(hosts, "vm1", "hv1", "hv2", answers, **kw)


def test_shared_storage_takes_one_job_on_the_target():
    answers, storage = survey()
    hosts = FakeHosts(storage, migrate_in=ok_job(storage))
    result = make(hosts, answers, opts={"max_downtime": 300}).run()
    assert result["result"] is True and result["host"] == "hv2"
    assert result["downtime_ms"] == 42 and result["migration_s"] == 2.1
    assert result["postcopy_switched"] is False and result["mode"] == "peer2peer"
    # the job brings both hosts' view after the switch-over: no status round trip, and the
    # target removed the probe it saw: nothing to do on the source
    assert hosts.funs() == [("hv2", "virt.migrate_in")]
    module_opts = hosts.calls[0][2]
    assert module_opts["max_downtime"] == 300 and module_opts["dest"] == "qemu+tls://10.0.0.2/system"
    assert module_opts["progress_tag"].startswith("saltvirt/migrate/") and module_opts["token"]
    assert any("memory 50%" in e for e in hosts.events)
    assert "Migrating vm1 from hv1 to hv2 (peer2peer, copying vda)" in hosts.events


def test_copied_disks_then_stale_copies_and_unseen_probes_removed_on_the_source():
    answers, storage = survey(copy=True)
    hosts = FakeHosts(storage, migrate_in=ok_job(storage, seen=False))
    result = make(hosts, answers, copy_storage="inc").run()
    assert result["result"] is True
    assert hosts.funs() == [("hv2", "virt.migrate_in"), ("hv1", "virt.migrate_cleanup")]
    assert hosts.calls[0][2]["copy_storage"] == "inc"
    assert hosts.calls[-1][2] == {"stale": ["/srv/salt-images/vm1/system.qcow2"], "probe": PROBE}


def test_failed_stale_cleanup_does_not_undo_a_good_migration():
    answers, storage = survey(copy=True)
    hosts = FakeHosts(storage, migrate_in=ok_job(storage), fail={("hv1", "virt.migrate_cleanup")})
    result = make(hosts, answers).run()
    assert result["result"] is True
    assert "boom" in result["source_cleanup"]["error"]


def test_keep_source_disks_skips_the_stale_cleanup():
    answers, storage = survey(copy=True)
    hosts = FakeHosts(storage, migrate_in=ok_job(storage))
    make(hosts, answers, keep_source_disks=True).run()
    assert ("hv1", "virt.migrate_cleanup") not in hosts.funs()


def test_refused_by_the_target_removes_probes_and_changes_nothing():
    answers, storage = survey()
    refused = job(storage, retcode=1, seen=False, refused=True, ok=False,
                  checks=[{"check": "memory", "ok": False, "detail": "256 MiB free"}])
    hosts = FakeHosts(storage, migrate_in=refused)
    with pytest.raises(migrator.MigrationRefused, match="memory: 256 MiB free"):
        make(hosts, answers).run()
    assert hosts.funs() == [("hv2", "virt.migrate_in"), ("hv1", "virt.migrate_cleanup")]
    assert hosts.calls[-1][2] == {"probe": PROBE}


def test_no_facts_is_refused_before_any_job():
    answers, storage = survey()
    answers["hv1"]["migrate_source"] = {}
    hosts = FakeHosts(storage)
    with pytest.raises(migrator.MigrationRefused, match="no migration facts"):
        make(hosts, answers).run()
    assert ("hv2", "virt.migrate_in") not in hosts.funs()


def test_failure_with_vm_paused_on_source_resumes_it_and_cleans_target():
    answers, storage = survey(copy=True)
    failed = job(storage, retcode=1, seen=False, error="target libvirtd went away",
                 source_state={"defined": True, "state": "paused"})
    hosts = FakeHosts(storage, migrate_in=failed,
                      status=({"hv1": PAUSED_FOR_MIGRATION, "hv2": {"defined": False}}, {}))
    result = make(hosts, answers).run()
    assert result["result"] is False and result["retcode"] == 1
    assert result["error"] == "target libvirtd went away; vm1 is still paused on hv1"
    assert result["host"] == "hv1"
    assert result["recovery"]["resumed"] is True
    cleanup = [c for c in hosts.calls if c[:2] == ("hv2", "virt.migrate_cleanup")]
    assert cleanup and cleanup[0][2]["remove_domain"] is True and cleanup[0][2]["uuid"] == "u-1"
    assert cleanup[0][2]["token"] == result["token"] == hosts.calls[0][2]["token"]
    assert result["prepared"] == ["/srv/salt-images/vm1/system.qcow2"]
    # the probe the target could not see is removed on the source
    assert ("hv1", "virt.migrate_cleanup", {"probe": PROBE}) in hosts.calls


def test_failure_while_vm_runs_on_target_touches_nothing():
    answers, storage = survey()
    hosts = FakeHosts(storage, migrate_in=VirtError("virt.migrate_in on hv2 vanished"),
                      status=({"hv1": PAUSED_FOR_MIGRATION, "hv2": ARRIVED}, {}))
    result = make(hosts, answers).run()
    assert result["result"] is False and result["host"] == "hv2"
    assert "nothing was resumed or cleaned up" in result["recovery"]["note"]
    assert ("hv1", "virt.resume") not in hosts.funs()
    assert ("hv2", "virt.migrate_cleanup") not in hosts.funs()


SPLIT = {"defined": True, "active": True, "state": "paused", "reason": 13}  # paused, post-copy failed


def test_failure_after_a_postcopy_switch_over_is_resumed_from_the_source():
    answers, storage = survey(copy=True)
    failed = job(storage, retcode=1, error="migration failed: postcopy connection lost", postcopy_switched=True)
    hosts = FakeHosts(storage, migrate_in=failed, status=[({"hv1": SPLIT, "hv2": SPLIT}, {}),
                                                         ({"hv1": GONE, "hv2": ARRIVED}, {})])
    result = make(hosts, answers, opts={"postcopy": True, "tls": True}).run()
    assert result["result"] is True and result["host"] == "hv2", result
    assert result["postcopy_recovery"]["attempts"] == ["resumed"]
    assert "failed" in result["postcopy_recovery"]["failure"], result
    (recover,) = [c for c in hosts.calls if c[1] == "virt.migrate_recover"]
    assert recover[0] == "hv1" and recover[2]["tls"] is True and recover[2]["postcopy"] is True
    assert recover[2]["progress_tag"].startswith("saltvirt/migrate/")  # the resume's progress is shown
    assert "Resuming vm1: memory 90% (2s)" in hosts.events, hosts.events
    assert not [c for c in hosts.calls if c[1] == "virt.migrate_cleanup" and c[2].get("remove_domain")]


def test_failure_after_a_postcopy_switch_over_that_cannot_resume_removes_nothing():
    answers, storage = survey(copy=True)
    failed = job(storage, retcode=1, error="migration failed: postcopy connection lost", postcopy_switched=True)
    hosts = FakeHosts(storage, migrate_in=failed, status=({"hv1": SPLIT, "hv2": SPLIT}, {}),
                      fail={("hv1", "virt.migrate_recover")})
    job_ = make(hosts, answers)
    job_.recover_pause = 0
    result = job_.run()
    assert result["result"] is False and result["host"] == "hv2"
    assert "post-copy switch-over (hv1, hv2 paused, post-copy) and resuming it failed: nothing was removed" in \
        result["recovery"]["note"]
    assert [f for f in hosts.funs() if f[1] == "virt.migrate_recover"] == [("hv1", "virt.migrate_recover")] * 3
    assert "--postcopy-resume vm1" in result["recovery"]["note"]
    recovery = result["postcopy_recovery"]  # why it was resumed, and what each attempt met
    assert recovery["failure"].startswith("migration failed: postcopy connection lost")
    assert recovery["attempts"] == ["virt.migrate_recover on hv1 failed: migration of vm1 failed: boom"] * 3
    assert ("hv1", "virt.resume") not in hosts.funs()
    assert not [c for c in hosts.calls if c[1] == "virt.migrate_cleanup" and c[2].get("remove_domain")]


def test_vm_running_nowhere_is_reported_not_guessed():
    answers, storage = survey()
    hosts = FakeHosts(storage, migrate_in={"retcode": 1, "return": "ERROR: x"},
                      status=({"hv1": GONE}, {"hv2": "hv2 did not answer"}))
    result = make(hosts, answers).run()
    assert result["result"] is False and result["host"] is None
    assert "neither" in result["recovery"]["note"]
    assert result["status"]["hv2"] == "hv2 did not answer"
    assert result["error"] == "x"


def test_arrived_but_still_defined_on_source_is_a_failure():
    answers, storage = survey()
    data = ok_job(storage)
    data["return"]["source_status"] = RUNNING_HERE | {"active": False, "state": "shutoff"}
    hosts = FakeHosts(storage, migrate_in=data)
    result = make(hosts, answers).run()
    assert result["result"] is False
    assert "still defined on hv1" in result["error"]
    assert result["host"] == "hv2"  # it runs there: nothing is cleaned


def test_no_status_in_return_asks_both_hosts():
    answers, storage = survey()
    hosts = FakeHosts(storage, migrate_in=job(storage, duration_s=1.0),
                      status=({"hv1": GONE, "hv2": ARRIVED}, {}))
    assert make(hosts, answers).run()["result"] is True
    assert (("hv1", "hv2"), "virt.migrate_status") in hosts.funs()


def test_test_mode_reports_checks_reachability_and_plan():
    answers, storage = survey()
    hosts = FakeHosts(storage)
    result = make(hosts, answers).test()
    assert result["test"] is True and result["ok"] is True
    assert result["checks"][0] == {"check": "hv1 reaches hv2", "ok": True, "detail": "hv1 reaches hv2"}
    assert result["plan"]["mode"] and result["dest_uri"] == "qemu+tls://10.0.0.2/system"
    assert hosts.calls[0][:2] == ("hv2", "virt.migrate_preflight")
    assert hosts.calls[0][2]["source"] == "qemu+tls://10.0.0.1/system"  # the target must reach it
    assert hosts.funs()[-1] == ("hv1", "virt.migrate_cleanup")  # probes removed
    assert ("hv1", "virt.migrate") not in hosts.funs()


def test_locate():
    answers, _ = survey()
    assert migrator.locate("vm1", answers, {}) == "hv1"
    nowhere = {"hv2": answers["hv2"]}
    with pytest.raises(migrator.MigrationRefused, match="no VM named vm1.*not answering: hv3: down"):
        migrator.locate("vm1", nowhere, {"hv3": "down"})
    answers["hv2"]["migrate_source"] = {"name": "vm1"}
    with pytest.raises(migrator.MigrationRefused, match="several hypervisors: hv1, hv2"):
        migrator.locate("vm1", answers, {})


def test_check_options():
    migrator.check_options({"max_bandwidth": 10}, "inc")
    with pytest.raises(InvalidArgument, match="unknown option.*bogus"):
        migrator.check_options({"bogus": 1}, None)
    with pytest.raises(InvalidArgument, match="copy_storage must be all or inc"):
        migrator.check_options({}, "some")
