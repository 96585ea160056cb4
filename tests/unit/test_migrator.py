"""saltvirt.migrator: the order of the steps and the never-lose-a-VM decisions (pure logic).

The hosts are a recording fake here; the real thing (LocalClient, minions, libvirtd, QEMU) is
proven by tests/integration/test_migration*.py.
"""

import pytest

from saltvirt import migrator
from saltvirt.errors import InvalidArgument, VirtError

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
    """Answers the module calls from a script and records them."""

    def __init__(self, storage, preflight_ok=True, migrate=None, status=None, fail=()):
        self.storage, self.preflight_ok = storage, preflight_ok
        self.migrate_data = migrate
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
        if fun == "virt.migrate_prepare":
            return {"created": [c["path"] for c in self.storage["create"]]}
        if fun == "virt.resume":
            return {"resumed": True}
        return {"host": host}

    def status(self, name, hosts):
        self.calls.append((tuple(hosts), "virt.migrate_status", {}))
        return self.status_answer

    def watch(self, host, fun, arg, kwarg, tag, on_progress, timeout):
        self.calls.append((host, fun, kwarg))
        on_progress({"memory_total_mib": 256, "memory_percent": 50.0, "elapsed_s": 1})
        if isinstance(self.migrate_data, Exception):
            raise self.migrate_data
        return self.migrate_data

    def progress(self, message, **data):
        self.events.append(message)

    def funs(self):
        return [(c[0], c[1]) for c in self.calls]


ARRIVED = {"defined": True, "active": True, "state": "running", "migrated_in": True,
           "job": {"downtime_ms": 42}}
GONE = {"defined": False}
RUNNING_HERE = {"defined": True, "active": True, "state": "running", "reason": 1}
PAUSED_FOR_MIGRATION = {"defined": True, "active": True, "state": "paused", "reason": 2}


def ok_return():
    return {"retcode": 0, "return": {"duration_s": 2.1, "source_status": GONE, "target_status": ARRIVED}}


def make(hosts, answers, **kw):
    return migrator.Migrator(hosts, "vm1", "hv1", "hv2", answers, **kw)


def test_shared_storage_takes_preflight_and_migrate_only():
    answers, storage = survey()
    hosts = FakeHosts(storage, migrate=ok_return())
    result = make(hosts, answers, opts={"max_downtime": 300}).run()
    assert result["result"] is True and result["host"] == "hv2"
    assert result["downtime_ms"] == 42 and result["migration_s"] == 2.1
    assert result["postcopy_switched"] is False
    # the source's own view after the switch-over verifies it: no status round trip
    assert hosts.funs() == [("hv2", "virt.migrate_preflight"), ("hv1", "virt.migrate")]
    module_opts = hosts.calls[1][2]
    assert module_opts["probe"] == PROBE and module_opts["max_downtime"] == 300
    assert module_opts["progress_tag"].startswith("saltvirt/migrate/")
    assert any("memory 50%" in e for e in hosts.events)


def test_copied_disks_are_prepared_then_stale_copies_removed():
    answers, storage = survey(copy=True)
    hosts = FakeHosts(storage, migrate=ok_return())
    result = make(hosts, answers).run()
    assert result["result"] is True
    assert hosts.funs() == [("hv2", "virt.migrate_preflight"), ("hv2", "virt.migrate_prepare"),
                            ("hv1", "virt.migrate"), ("hv1", "virt.migrate_cleanup")]
    assert hosts.calls[-1][2] == {"stale": ["/srv/salt-images/vm1/system.qcow2"]}
    assert hosts.calls[2][2]["migrate_disks"] == ["vda"]


def test_failed_stale_cleanup_does_not_undo_a_good_migration():
    answers, storage = survey(copy=True)
    hosts = FakeHosts(storage, migrate=ok_return(), fail={("hv1", "virt.migrate_cleanup")})
    result = make(hosts, answers).run()
    assert result["result"] is True
    assert "boom" in result["source_cleanup"]["error"]


def test_keep_source_disks_skips_the_stale_cleanup():
    answers, storage = survey(copy=True)
    hosts = FakeHosts(storage, migrate=ok_return())
    make(hosts, answers, keep_source_disks=True).run()
    assert ("hv1", "virt.migrate_cleanup") not in hosts.funs()


def test_refused_preflight_removes_probes_and_changes_nothing():
    answers, storage = survey()
    hosts = FakeHosts(storage, preflight_ok=False)
    with pytest.raises(migrator.MigrationRefused, match="memory: 256 MiB free"):
        make(hosts, answers).run()
    assert hosts.funs() == [("hv2", "virt.migrate_preflight"), ("hv1", "virt.migrate_cleanup")]
    assert hosts.calls[-1][2] == {"probe": PROBE}


def test_failed_prepare_removes_probes():
    answers, storage = survey(copy=True)
    hosts = FakeHosts(storage, fail={("hv2", "virt.migrate_prepare")})
    with pytest.raises(VirtError, match="boom"):
        make(hosts, answers).run()
    assert hosts.funs()[-1] == ("hv1", "virt.migrate_cleanup")


def test_failure_with_vm_paused_on_source_resumes_it_and_cleans_target():
    answers, storage = survey(copy=True)
    hosts = FakeHosts(storage, migrate={"retcode": 1, "return": "ERROR: target libvirtd went away"},
                      status=({"hv1": PAUSED_FOR_MIGRATION, "hv2": {"defined": False}}, {}))
    result = make(hosts, answers).run()
    assert result["result"] is False and result["retcode"] == 1
    assert result["error"] == "target libvirtd went away"
    assert result["host"] == "hv1"
    assert result["recovery"]["resumed"] is True
    cleanup = [c for c in hosts.calls if c[:2] == ("hv2", "virt.migrate_cleanup")]
    assert cleanup and cleanup[0][2]["remove_domain"] is True and cleanup[0][2]["uuid"] == "u-1"
    assert cleanup[0][2]["token"] == result["token"]
    assert result["prepared"] == ["/srv/salt-images/vm1/system.qcow2"]


def test_failure_while_vm_runs_on_target_touches_nothing():
    answers, storage = survey()
    hosts = FakeHosts(storage, migrate=VirtError("virt.migrate on hv1 vanished"),
                      status=({"hv1": PAUSED_FOR_MIGRATION, "hv2": ARRIVED}, {}))
    result = make(hosts, answers).run()
    assert result["result"] is False and result["host"] == "hv2"
    assert "nothing was resumed or cleaned up" in result["recovery"]["note"]
    assert not any(f in ("virt.resume", "virt.migrate_cleanup") for _, f in hosts.funs())


def test_vm_running_nowhere_is_reported_not_guessed():
    answers, storage = survey()
    hosts = FakeHosts(storage, migrate={"retcode": 1, "return": "ERROR: x"},
                      status=({"hv1": GONE}, {"hv2": "hv2 did not answer"}))
    result = make(hosts, answers).run()
    assert result["result"] is False and result["host"] is None
    assert "neither" in result["recovery"]["note"]
    assert result["status"]["hv2"] == "hv2 did not answer"


def test_arrived_but_still_defined_on_source_is_a_failure():
    answers, storage = survey()
    data = ok_return()
    data["return"]["source_status"] = RUNNING_HERE | {"active": False, "state": "shutoff"}
    hosts = FakeHosts(storage, migrate=data)
    result = make(hosts, answers).run()
    assert result["result"] is False
    assert "still defined on hv1" in result["error"]
    assert result["host"] == "hv2"  # it runs there: nothing is cleaned


def test_no_status_in_return_asks_both_hosts():
    answers, storage = survey()
    hosts = FakeHosts(storage, migrate={"retcode": 0, "return": {"duration_s": 1.0}},
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
