"""saltvirt.migration: flags and typed parameters, storage decisions, job statistics (pure)."""

import os

import libvirt
import pytest

from saltvirt import migration
from saltvirt.errors import InvalidArgument
from saltvirt.migration import dest_uri, job_result, plan, storage_plan, summarize_job

# ------------------------------------------------------------------------------------ plan


def test_default_is_live_peer_to_peer_persistent_and_undefines_the_source():
    p = plan()
    assert p.flags == ["LIVE", "PERSIST_DEST", "UNDEFINE_SOURCE", "PEER2PEER"]
    assert p.params == {} and p.mode == "peer2peer" and p.peer2peer and p.notes == []
    expected = (libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PERSIST_DEST
                | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE | libvirt.VIR_MIGRATE_PEER2PEER)
    assert p.flag_value() == expected


def test_tunnel_is_peer_to_peer_tunnelled():
    p = plan(tunnel=True)
    assert {"PEER2PEER", "TUNNELLED"} <= set(p.flags) and "TLS" not in p.flags
    assert p.mode == "tunnelled"
    assert p.flag_value() & libvirt.VIR_MIGRATE_TUNNELLED


def test_tunnel_forces_peer_to_peer_even_when_direct_was_asked():
    p = plan(tunnel=True, peer2peer=False)
    assert "PEER2PEER" in p.flags and p.peer2peer


@pytest.mark.parametrize("mode,flag", [("all", "NON_SHARED_DISK"), ("inc", "NON_SHARED_INC")])
def test_tunnel_with_copy_storage_becomes_peer_to_peer_tls(mode, flag):
    # libvirt 9.0: p2p + tunnelled + copy-storage fails ("argument key 'host' must not have null value").
    p = plan(tunnel=True, copy_storage=mode, migrate_disks=["vda"])
    assert "TUNNELLED" not in p.flags
    assert {"PEER2PEER", "TLS", flag} <= set(p.flags)
    assert p.mode == "peer2peer+tls"
    assert p.params == {migration.PARAM_DISKS: ["vda"]}
    assert any("TLS instead" in note for note in p.notes)


def test_typed_parameters_use_libvirts_names():
    p = plan(max_bandwidth=100, parallel_connections=4, migration_uri="tcp://10.0.0.2:49152",
             copy_storage="all", migrate_disks=["vda", "vdb"])
    assert p.params == {
        libvirt.VIR_MIGRATE_PARAM_BANDWIDTH: 100,
        libvirt.VIR_MIGRATE_PARAM_PARALLEL_CONNECTIONS: 4,
        libvirt.VIR_MIGRATE_PARAM_URI: "tcp://10.0.0.2:49152",
        libvirt.VIR_MIGRATE_PARAM_MIGRATE_DISKS: ["vda", "vdb"],
    }
    assert {"PARALLEL", "NON_SHARED_DISK"} <= set(p.flags)


def test_optional_features_each_add_their_flag():
    p = plan(postcopy=True, auto_converge=True, compressed=True, unsafe=True, tls=True)
    assert {"POSTCOPY", "AUTO_CONVERGE", "COMPRESSED", "UNSAFE", "TLS"} <= set(p.flags)
    assert p.mode == "peer2peer+tls"
    p.flag_value()  # every name is a real libvirt flag


def test_direct_mode_and_non_persistent_keeping_the_source():
    p = plan(peer2peer=False, persistent=False, undefinesource=False)
    assert p.flags == ["LIVE"] and p.mode == "direct" and not p.peer2peer


def test_offline_moves_the_definition_only():
    p = plan(offline=True)
    assert "OFFLINE" in p.flags and "LIVE" not in p.flags and "PERSIST_DEST" in p.flags


@pytest.mark.parametrize("kwargs,message", [
    ({"offline": True, "copy_storage": "all"}, "cannot copy disks"),
    ({"offline": True, "postcopy": True}, "postcopy needs a live"),
    ({"offline": True, "persistent": False}, "persistent must be True"),
    ({"copy_storage": "everything"}, "copy_storage must be"),
    ({"tunnel": True, "migration_uri": "tcp://x"}, "does not apply to a tunnelled"),
    ({"tunnel": True, "parallel_connections": 2}, "cannot be tunnelled"),
    ({"max_bandwidth": 0}, "positive integer"),
    ({"max_bandwidth": "fast"}, "positive integer"),
    ({"max_bandwidth": True}, "positive integer"),
    ({"parallel_connections": -1}, "positive integer"),
    ({"migrate_disks": ["vda"]}, "only applies when copying"),
    ({"tls": True, "copy_storage": "all", "parallel_connections": 2}, "fail on libvirt 9.0"),
    ({"tunnel": True, "copy_storage": "inc", "parallel_connections": 2}, "fail on libvirt 9.0"),
])
def test_impossible_combinations_are_refused(kwargs, message):
    with pytest.raises(InvalidArgument, match=message):
        plan(**kwargs)


def test_dest_uri():
    assert dest_uri("hyper2.example.com") == "qemu+tls://hyper2.example.com/system"
    assert dest_uri("127.0.0.3") == "qemu+tls://127.0.0.3/system"
    assert dest_uri("fd00::2") == "qemu+tls://[fd00::2]/system"
    assert dest_uri("qemu+ssh://root@h/system") == "qemu+ssh://root@h/system"
    with pytest.raises(InvalidArgument):
        dest_uri("")


# ------------------------------------------------------------------------- storage decisions


def disk(target="vda", path="/srv/salt-images/vm/system.qcow2", fmt="qcow2", readonly=False,
         backing=(), fs="ext4", kind="file", size=1_000_000):
    return {"target": target, "type": kind, "device": "disk", "path": path, "format": fmt,
            "readonly": readonly, "dir": os.path.dirname(path) if path else None, "fs_type": fs,
            "size": size, "virtual_size": 8 << 30, "allocation": size,
            "backing": [{"path": b, "format": "qcow2", "size": 5_000_000} for b in backing]}


def base_seen(path, exists=True, fmt="qcow2", size=5_000_000):
    return {"path": path, "exists": exists, "format": fmt if exists else None, "size": size if exists else None}


def test_a_disk_whose_probe_the_target_sees_is_shared_and_needs_unsafe_on_a_local_fs():
    out = storage_plan([disk()], {"vda": {"probe": True, "exists": True}})
    assert out["disks"][0]["action"] == "shared"
    assert out["copy_storage"] is None and out["create"] == [] and out["migrate_disks"] == []
    assert out["unsafe"] is True and out["errors"] == []


def test_shared_on_nfs_leaves_safety_to_libvirt():
    out = storage_plan([disk(fs="nfs4")], {"vda": {"probe": True, "exists": True}})
    assert out["disks"][0]["action"] == "shared" and out["unsafe"] is False


def test_shared_on_an_unknown_filesystem_is_not_forced_unsafe():
    out = storage_plan([disk(fs="fuse.sshfs")], {"vda": {"probe": True, "exists": True}})
    assert out["disks"][0]["action"] == "error" and out["unsafe"] is False
    assert "shared on a fuse.sshfs filesystem" in out["errors"][0]
    assert "add 'fuse.sshfs' to virt:migration:unsafe_fs" in out["errors"][0]
    # the operator's say-so
    out = storage_plan([disk(fs="fuse.sshfs")], {"vda": {"probe": True, "exists": True}}, unsafe_fs=["fuse.sshfs"])
    assert out["disks"][0]["action"] == "shared" and out["unsafe"] is True and out["errors"] == []


def test_a_standalone_local_disk_is_precreated_blank_and_copied_whole():
    out = storage_plan([disk()], {"vda": {"probe": False, "exists": False, "bases": []}})
    assert out["disks"][0]["action"] == "copy"
    assert out["copy_storage"] == "all" and out["migrate_disks"] == ["vda"]
    (create,) = out["create"]
    assert create["kind"] == "blank" and create["format"] == "qcow2" and create["virtual_size"] == 8 << 30
    assert out["unsafe"] is False


def test_an_overlay_whose_base_is_on_the_target_is_copied_incrementally():
    base = "/var/lib/libvirt/images/centos.qcow2"
    out = storage_plan([disk(backing=[base])],
                       {"vda": {"probe": False, "exists": False, "bases": [base_seen(base)]}})
    assert out["copy_storage"] == "inc"
    (create,) = out["create"]
    assert create["kind"] == "overlay" and create["backing"] == base and create["backing_format"] == "qcow2"


def test_an_overlay_whose_base_is_missing_gets_the_base_fetched_first():
    base = "/srv/salt-images/base/centos-0923aa8613de609c.qcow2"
    out = storage_plan([disk(backing=[base])],
                       {"vda": {"probe": False, "exists": False, "bases": [base_seen(base, exists=False)]}})
    assert out["errors"] == [] and out["copy_storage"] == "inc"
    fetch, overlay = out["create"]
    assert fetch == {"target": "vda", "path": base, "kind": "fetch", "format": "qcow2", "size": 5_000_000,
                     "mode": 0o444, "base": True}
    assert overlay["kind"] == "overlay" and overlay["backing"] == base
    assert out["disks"][0]["action"] == "copy" and "fetched from the source" in out["disks"][0]["reason"]
    # a deeper chain with a missing link is still a clear refusal
    deeper = storage_plan([disk(backing=[base, "/b/deeper.qcow2"])],
                          {"vda": {"probe": False, "exists": False,
                                   "bases": [base_seen(base, exists=False), base_seen("/b/deeper.qcow2")]}})
    assert deeper["disks"][0]["action"] == "error" and "copy_storage=all" in deeper["errors"][0]


def test_a_different_base_on_the_target_is_refused():
    base = "/var/lib/libvirt/images/centos.qcow2"
    out = storage_plan([disk(backing=[base])],
                       {"vda": {"exists": False, "bases": [base_seen(base, size=123)]}})
    assert "differs" in out["errors"][0]


def test_copy_storage_all_flattens_an_overlay_without_needing_its_base():
    base = "/srv/salt-images/base/centos-abc.qcow2"
    out = storage_plan([disk(backing=[base])],
                       {"vda": {"exists": False, "bases": [base_seen(base, exists=False)]}},
                       copy_storage="all")
    assert out["errors"] == [] and out["copy_storage"] == "all"
    (create,) = out["create"]
    assert create["kind"] == "blank"
    assert create["allocation"] == 5_000_000 + 1_000_000  # the chain's data lands in one file


def test_a_writable_file_at_the_same_path_that_is_not_shared_is_never_overwritten():
    out = storage_plan([disk()], {"vda": {"probe": False, "exists": True, "size": 42}})
    assert out["disks"][0]["action"] == "error" and out["create"] == []
    assert "refusing to overwrite" in out["errors"][0]


def test_read_only_disks_are_fetched_or_reused():
    iso = disk("vdb", "/srv/salt-images/vm/cidata.iso", fmt="raw", readonly=True, size=69632)
    out = storage_plan([iso], {"vdb": {"probe": False, "exists": False}})
    assert out["disks"][0]["action"] == "fetch"
    assert out["create"] == [{"target": "vdb", "path": iso["path"], "kind": "fetch", "format": "raw",
                              "size": 69632}]
    assert out["copy_storage"] is None and out["migrate_disks"] == []  # QEMU cannot copy read-only disks

    same = storage_plan([iso], {"vdb": {"probe": False, "exists": True, "size": 69632}})
    assert same["disks"][0]["action"] == "present" and same["create"] == []
    other = storage_plan([iso], {"vdb": {"probe": False, "exists": True, "size": 1}})
    assert "differs" in other["errors"][0]


def test_shared_read_only_disks_do_not_need_unsafe():
    iso = disk("vdb", "/shared/vm/cidata.iso", fmt="raw", readonly=True)
    out = storage_plan([iso], {"vdb": {"probe": True, "exists": True}})
    assert out["disks"][0]["action"] == "shared" and out["unsafe"] is False


def test_mixed_disks():
    base = "/var/lib/libvirt/images/centos.qcow2"
    disks = [disk("vda", backing=[base]), disk("vdb", "/shared/vm/data.raw", fmt="raw"),
             disk("vdc", "/srv/salt-images/vm/cidata.iso", fmt="raw", readonly=True),
             disk("sda", None, kind="file"), disk("vdd", "pool/vol", kind="network")]
    seen = {"vda": {"exists": False, "bases": [base_seen(base)]},
            "vdb": {"probe": True, "exists": True}, "vdc": {"exists": False}}
    out = storage_plan(disks, seen)
    assert [d["action"] for d in out["disks"]] == ["copy", "shared", "fetch", "skip", "shared"]
    assert out["copy_storage"] == "inc" and out["migrate_disks"] == ["vda"] and out["unsafe"] is True


def test_offline_migration_downloads_local_files():
    out = storage_plan([disk()], {"vda": {"exists": False}}, offline=True)
    assert out["errors"] == [] and out["migrate_disks"] == [] and out["copy_storage"] is None
    assert [d["action"] for d in out["disks"]] == ["fetch"]
    assert [(c["path"], c["kind"]) for c in out["create"]] == [(disk()["path"], "fetch")]
    # An overlay goes as it is; its base first when the target lacks it, kept when it has it.
    base = "/var/lib/libvirt/images/centos.qcow2"
    lacking = storage_plan([disk("vda", backing=[base])], {"vda": {"exists": False, "bases": [{"exists": False}]}},
                           offline=True)
    assert [(c["path"], c.get("base", False)) for c in lacking["create"]] == [(base, True), (disk()["path"], False)]
    having = storage_plan([disk("vda", backing=[base])], {"vda": {"exists": False, "bases": [base_seen(base)]}},
                          offline=True)
    assert [c["path"] for c in having["create"]] == [disk()["path"]] and having["errors"] == []
    # Never over a file of the same name on the target.
    clash = storage_plan([disk()], {"vda": {"exists": True}}, offline=True)
    assert "refusing to overwrite it" in clash["errors"][0] and clash["create"] == []
    shared = storage_plan([disk()], {"vda": {"probe": True, "exists": True}}, offline=True)
    assert shared["errors"] == [] and shared["unsafe"] is False


def test_missing_block_device_is_an_error():
    out = storage_plan([disk("vda", "/dev/sdz", kind="block")], {"vda": {"exists": False}})
    assert "block device /dev/sdz does not exist" in out["errors"][0]


def test_copy_storage_is_ignored_when_everything_is_shared():
    out = storage_plan([disk()], {"vda": {"probe": True, "exists": True}}, copy_storage="all")
    assert out["copy_storage"] is None and "ignored" in out["notes"][0]


# ------------------------------------------------------------------------------ job stats


def test_summarize_job_reports_percentages():
    stats = {"type": 2, "time_elapsed": 1003, "data_total": 269_492_224, "data_remaining": 115_617_792,
             "memory_total": 269_230_080, "memory_remaining": 115_617_792, "memory_processed": 81_860_833,
             "disk_total": 262_144, "disk_remaining": 0, "memory_bps": 130_000_000,
             "memory_iteration": 1, "memory_dirty_rate": 0}
    out = summarize_job(stats)
    assert out["phase"] == "memory" and out["disk_percent"] == 100.0
    assert out["memory_percent"] == pytest.approx(57.1, abs=0.1)
    assert out["elapsed_s"] == 1.0 and out["iteration"] == 1
    assert out["bandwidth_mib_s"] == pytest.approx(124.0, abs=0.1)


def test_summarize_job_during_the_disk_copy_and_before_anything_is_known():
    out = summarize_job({"type": 2, "disk_total": 100, "disk_remaining": 60, "memory_total": 0})
    assert out["phase"] == "disk" and out["disk_percent"] == 40.0 and out["memory_percent"] is None
    assert summarize_job({})["percent"] is None


def test_job_result_of_a_completed_migration():
    stats = {"type": 3, "operation": 5, "time_elapsed": 1121, "downtime": 55, "downtime_net": 52,
             "setup_time": 1, "memory_processed": 94_932_582, "memory_total": 269_230_080,
             "memory_bps": 226_741_000, "memory_iteration": 3, "memory_postcopy_requests": 0}
    out = job_result(stats)
    assert out["downtime_ms"] == 55 and out["total_time_ms"] == 1121 and out["iterations"] == 3
    assert out["memory_transferred_mib"] == pytest.approx(90.5, abs=0.1)
    assert job_result({"type": 0}) == {} and job_result(None) == {}


# --------------------------------------------------------------------------- probes, fs


def test_probes_are_created_seen_and_removed(tmp_path):
    shared, other = tmp_path / "shared", tmp_path / "other"
    shared.mkdir()
    other.mkdir()
    made = migration.create_probes([str(shared), str(shared), str(tmp_path / "missing")], "abc123")
    assert made == [str(shared)]
    disks = [{"target": "vda", "type": "file", "path": str(shared / "d.qcow2"), "dir": str(shared)},
             {"target": "vdb", "type": "file", "path": str(other / "d.qcow2"), "dir": str(other)}]
    seen = migration.observe_disks(disks, "abc123")
    assert seen["vda"]["probe"] is True and seen["vdb"]["probe"] is False
    assert migration.remove_probes(made, "abc123") == [str(shared)]
    assert os.listdir(shared) == []
    assert migration.remove_probes(made, "../etc") == []  # tokens are hex, never paths


def test_fs_type_picks_the_longest_mount_point(tmp_path):
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
        "40 22 0:40 / /srv/nfs rw,relatime shared:2 - nfs4 server:/export rw\n"
        "41 22 0:41 / /srv/nfs-local rw - tmpfs tmpfs rw\n"
    )
    assert migration.fs_type("/srv/nfs/vm/disk.qcow2", str(mountinfo)) == "nfs4"
    assert migration.fs_type("/srv/nfs-local/x", str(mountinfo)) == "tmpfs"
    assert migration.fs_type("/var/lib/libvirt/images", str(mountinfo)) == "ext4"


def test_journal_names_are_tokens_only(tmp_path):
    assert migration.journal_path(str(tmp_path), "a1b2") == str(tmp_path / "a1b2.json")
    with pytest.raises(InvalidArgument):
        migration.journal_path(str(tmp_path), "../x")


def test_cleanup_removes_exactly_what_the_journal_lists(tmp_path):
    journal = str(tmp_path / "j" / "t1.json")
    vm_dir = tmp_path / "images" / "vm"
    vm_dir.parent.mkdir()
    create = [{"path": str(vm_dir / "system.qcow2"), "kind": "blank", "format": "qcow2",
               "virtual_size": 1 << 20}]
    record = migration.prepare_disks(create, journal, name="vm")
    assert record["created"] == [str(vm_dir / "system.qcow2")] and record["dirs"] == [str(vm_dir)]
    foreign = tmp_path / "images" / "keep.txt"
    foreign.write_text("not ours")

    class FakeConn:
        def listAllDomains(self, _flags):
            return []

    result = migration.cleanup(FakeConn(), journal, name="vm")
    assert str(vm_dir / "system.qcow2") in result["removed"] and not vm_dir.exists()
    assert foreign.exists() and not os.path.exists(journal)


def test_prepare_is_all_or_nothing(tmp_path):
    journal = str(tmp_path / "t2.json")
    existing = tmp_path / "vm" / "data.raw"
    existing.parent.mkdir()
    existing.write_text("someone's data")
    create = [{"path": str(tmp_path / "vm" / "system.qcow2"), "kind": "blank", "format": "qcow2",
               "virtual_size": 1 << 20},
              {"path": str(existing), "kind": "blank", "format": "raw", "virtual_size": 1 << 20}]
    with pytest.raises(InvalidArgument, match="already exists"):
        migration.prepare_disks(create, journal, name="vm")
    assert sorted(os.listdir(tmp_path / "vm")) == ["data.raw"]
    assert existing.read_text() == "someone's data" and not os.path.exists(journal)


def test_cleanup_without_libvirt_keeps_the_files(tmp_path):
    journal = str(tmp_path / "t3.json")
    create = [{"path": str(tmp_path / "vm" / "system.qcow2"), "kind": "blank", "format": "raw",
               "virtual_size": 1 << 20}]
    migration.prepare_disks(create, journal, name="vm")
    result = migration.cleanup(None, journal, name="vm")
    assert result["kept"] == [str(tmp_path / "vm" / "system.qcow2")] and "unreachable" in result["error"]
    assert os.path.exists(tmp_path / "vm" / "system.qcow2")


# ------------------------------------------------------------------------- UEFI variable store


def nvram(path="/srv/salt-images/vm/nvram.fd", size=540672):
    return {"target": "nvram", "type": "file", "device": "nvram", "path": path, "format": "raw",
            "readonly": False, "nvram": True, "dir": os.path.dirname(path), "fs_type": "ext4", "size": size}


def test_a_uefi_store_the_target_lacks_is_fetched_first_never_copied_by_qemu():
    out = storage_plan([disk(), nvram()], {"vda": {"exists": False, "bases": []}, "nvram": {"exists": False}})
    assert [(d["target"], d["action"]) for d in out["disks"]] == [("vda", "copy"), ("nvram", "fetch")]
    assert out["migrate_disks"] == ["vda"] and out["errors"] == []  # libvirt has no copy of it to make
    assert out["create"][0] == {"target": "nvram", "path": "/srv/salt-images/vm/nvram.fd", "kind": "fetch",
                                "format": "raw", "size": 540672, "nvram": True}
    # Offline too (no QEMU runs on either side).
    offline = storage_plan([nvram()], {"nvram": {"exists": False}}, offline=True)
    assert [c["path"] for c in offline["create"]] == ["/srv/salt-images/vm/nvram.fd"]


def test_a_shared_uefi_store_stays_and_a_foreign_one_is_never_overwritten():
    shared = storage_plan([nvram()], {"nvram": {"probe": True, "exists": True}})
    assert shared["disks"][0]["action"] == "shared" and shared["create"] == [] and shared["unsafe"] is False
    clash = storage_plan([nvram()], {"nvram": {"probe": False, "exists": True, "size": 540672}})
    assert clash["disks"][0]["action"] == "error" and clash["create"] == []
    assert "UEFI variable store /srv/salt-images/vm/nvram.fd exists on the target" in clash["errors"][0]


def test_the_source_facts_carry_an_existing_store_only(tmp_path):
    from saltvirt.domain.xmlview import DomainXml
    from saltvirt.migration.facts import _nvram_facts

    store = tmp_path / "nvram.fd"
    xml = f"<domain type='qemu'><name>vm</name><os><type>hvm</type><nvram>{store}</nvram></os></domain>"
    assert _nvram_facts(DomainXml.parse(xml)) is None  # never started: libvirt makes it from the template
    store.write_bytes(b"\0" * 4096)
    facts = _nvram_facts(DomainXml.parse(xml))
    assert facts["target"] == "nvram" and facts["path"] == str(store) and facts["size"] == 4096
    assert facts["nvram"] is True and facts["dir"] == str(tmp_path)
    assert _nvram_facts(DomainXml.parse("<domain><name>vm</name><os><type>hvm</type></os></domain>")) is None


class _FakeSource:
    """The source's libvirt for :func:`fetch_file`: one volume with ``data``."""

    def __init__(self, data):
        self.data = data

    def storageVolLookupByPath(self, _path):
        class Vol:
            def download(self, _stream, _offset, _length, _flags):
                return None

        return Vol()

    def newStream(self, _flags):
        data = self.data

        class Stream:
            def recvAll(self, handler, opaque):
                handler(self, data, opaque)

            def finish(self):
                return None

        return Stream()


def test_a_fetched_uefi_store_is_journaled_and_gone_when_the_preparation_fails(tmp_path):
    vm_dir = tmp_path / "vm"
    store = str(vm_dir / "nvram.fd")
    source = _FakeSource(b"VARS" * 1024)
    ok = migration.prepare_disks([{"path": store, "kind": "fetch", "format": "raw", "size": 4096, "nvram": True}],
                                 str(tmp_path / "ok.json"), source, name="vm")
    assert ok["created"] == [store] and open(store, "rb").read() == b"VARS" * 1024
    os.unlink(store)
    # Whole or nothing: a later item that fails takes the fetched store with it.
    (vm_dir / "data.raw").write_text("someone's data")
    create = [{"path": store, "kind": "fetch", "format": "raw", "size": 4096, "nvram": True},
              {"path": str(vm_dir / "data.raw"), "kind": "blank", "format": "raw", "virtual_size": 1 << 20}]
    with pytest.raises(InvalidArgument, match="already exists"):
        migration.prepare_disks(create, str(tmp_path / "t.json"), source, name="vm")
    assert sorted(os.listdir(vm_dir)) == ["data.raw"]


# ------------------------------------------------------------------ watching the running job


class _Clock:
    def __init__(self):
        self.now = 1000.0

    def monotonic(self):
        return self.now


class _Refused(libvirt.libvirtError):
    def get_error_message(self):
        return self.args[0]


class _Job:
    """A domain whose job statistics the test sets; records what the watcher asked of it."""

    def __init__(self, abort_fails=False):
        self.stats = {"type": libvirt.VIR_DOMAIN_JOB_UNBOUNDED, "data_processed": 0, "memory_iteration": 1}
        self.calls = []
        self.abort_fails = abort_fails

    def jobStats(self):  # noqa: N802 (libvirt's name)
        return dict(self.stats)

    def migrateStartPostCopy(self, flags):  # noqa: N802
        self.calls.append(("migrateStartPostCopy", flags))

    def abortJob(self):  # noqa: N802
        self.calls.append(("abortJob",))

    def abortJobFlags(self, flags):  # noqa: N802
        self.calls.append(("abortJobFlags", flags))
        if self.abort_fails:
            raise _Refused("migrate-pause is currently only supported during postcopy-active state")


@pytest.fixture
def clock(monkeypatch):
    from saltvirt.migration import run

    fake = _Clock()
    monkeypatch.setattr(run, "time", fake)
    return fake


def _watch(dom, postcopy=True, timeout=None, switched=False):
    from saltvirt.migration import run

    watcher = run._Watcher(dom, None, timeout, postcopy)  # pylint: disable=protected-access
    watcher.switched = switched
    return watcher


def _tick(clock, watcher, seconds, dom=None, step=0):
    """``seconds`` of one-second polls; the job moves ``step`` bytes a second."""
    for _ in range(seconds):
        clock.now += 1
        if dom is not None:
            dom.stats["data_processed"] += step
        watcher.poll()


def test_a_moving_post_copy_is_never_interrupted(clock):
    dom = _Job()
    watcher = _watch(dom)
    dom.stats["memory_iteration"] = 2
    watcher.poll()
    assert watcher.switched and dom.calls == [("migrateStartPostCopy", 0)]
    _tick(clock, watcher, 600, dom, step=4 << 20)  # ten minutes at 4 MiB/s
    assert dom.calls == [("migrateStartPostCopy", 0)] and watcher.aborted is None


def test_a_post_copy_where_nothing_moves_is_paused_then_given_up_on(clock):
    dom = _Job()
    watcher = _watch(dom, switched=True)  # a resume: the switch-over is behind us
    _tick(clock, watcher, 30, dom, step=1 << 20)
    _tick(clock, watcher, watcher.stall_limit)  # stuck: nothing moves
    assert dom.calls == []
    _tick(clock, watcher, 1)
    assert dom.calls == [("abortJobFlags", libvirt.VIR_DOMAIN_ABORT_JOB_POSTCOPY)]
    assert watcher.aborted == "nothing moved for 60s after the switch to post-copy"
    _tick(clock, watcher, watcher.abort_grace)
    assert not watcher.given_up() and len(dom.calls) == 1  # asked once, then given its grace
    _tick(clock, watcher, 1)
    assert watcher.given_up() and watcher.abort_error is None


def test_a_resume_whose_job_never_starts_is_interrupted_and_the_refusal_kept(clock):
    dom = _Job(abort_fails=True)
    dom.stats = {"type": libvirt.VIR_DOMAIN_JOB_NONE}
    watcher = _watch(dom, switched=True)
    _tick(clock, watcher, watcher.stall_limit + 1)
    assert dom.calls == [("abortJobFlags", libvirt.VIR_DOMAIN_ABORT_JOB_POSTCOPY)]
    assert "only supported during postcopy-active" in watcher.abort_error


def test_before_the_switch_a_still_job_waits_for_its_timeout_and_is_cancelled(clock):
    dom = _Job()
    watcher = _watch(dom, postcopy=False, timeout=300)
    _tick(clock, watcher, 200)  # nothing moves, but pre-copy can still be cancelled: no stall rule
    assert dom.calls == []
    _tick(clock, watcher, 101)
    assert dom.calls == [("abortJob",)] and watcher.aborted == "took longer than 300s"


def test_a_job_that_does_not_end_when_interrupted_is_left_to_its_thread():
    import threading

    from saltvirt.migration import run

    release = threading.Event()
    dom = _Job(abort_fails=True)
    dom.migrateToURI3 = lambda *args: release.wait(30)
    watcher = _watch(dom, switched=True)
    watcher.stall_limit, watcher.abort_grace = 0.05, 0.05
    the_plan = plan(postcopy=True, postcopy_resume=True)
    try:
        outcome = run._run_job(dom, the_plan, "qemu+tls://hv2/system", None, watcher, 0.01)  # pylint: disable=protected-access
        assert outcome == {"stuck": True} and watcher.given_up()
        assert dom.calls == [("abortJobFlags", libvirt.VIR_DOMAIN_ABORT_JOB_POSTCOPY)]
    finally:
        release.set()


@pytest.mark.parametrize("stall", [0, -5, "soon", True])
def test_a_bad_postcopy_stall_is_refused_before_anything_is_prepared(stall):
    from saltvirt.migration import run

    out = {"checks": [{"check": "state", "ok": True}],
           "storage": {"copy_storage": None, "migrate_disks": [], "unsafe": False}}
    # No connection, journal or source: a refusal must come before any of them is used.
    ret = run._pull(None, {"name": "vm1"}, None, "qemu+tls://hv2/system", None, out,  # pylint: disable=protected-access
                    False, None, None, {"postcopy": True, "postcopy_stall": stall})
    assert ret["refused"] is True and ret["ok"] is False
    assert ret["checks"][-1] == {"check": "options", "ok": False,
                                 "detail": f"postcopy_stall (s) must be a positive integer, not {stall!r}"}
