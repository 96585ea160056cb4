"""Live migration on the lab: a guest that prints a heartbeat moves between hypervisors.

The guest's heartbeat counter lives in its running shell, so it carries on across a live
migration and restarts only if the guest boots again; it also appends the beats to a
heartbeat.log on its own boot disk, which shows that the disk's data survived the move.
"""

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid

import pytest

from .conftest import BIN, _last_json

LAB_DIR = os.environ.get("LAB_DIR", "/var/lib/svlab")
# Storage both hypervisors see: the lab only makes /srv/salt-images, /var/lib/libvirt... private.
SHARED = os.path.join(LAB_DIR, "shared-storage")
MASTER_CONF = os.path.join(LAB_DIR, "master", "etc", "salt", "master")


def beats(lab, host, vm):
    return [int(n) for n in re.findall(r"SALTVIRT-HEARTBEAT (\d+)", lab.serial_log(host, vm))]


def wait_beat_above(lab, host, vm, floor, timeout=60):
    """Wait until ``host``'s console of ``vm`` shows a heartbeat above ``floor``; return it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen = beats(lab, host, vm)
        if seen and max(seen) > floor:
            return max(seen)
        time.sleep(0.5)
    raise AssertionError(f"no heartbeat above {floor} from {vm} on {host} within {timeout}s: {seen[-5:]}")


def boots(lab, vm):
    return sum(lab.serial_log(h, vm).count("SALTVIRT-BOOT") for h in ("hypervisor1", "hypervisor2"))


def migrate(lab, vm, *args):
    proc, result = lab.run_json("virt.migrate", vm, *args)
    assert result["result"] is True, result
    assert f"Migrating {vm}" in proc.stdout  # progress was shown while it ran
    return result


def assert_heartbeat_log(lab, host, vm, disk, before):
    """heartbeat.log on the guest's disk: every beat from 1 on, without a gap, up to the latest write.

    The guest appends the beats not yet written on beat 1 and every 10th beat, so the file read
    now must hold 1..(last multiple of 10): the beats logged on the source before the migration
    (those up to ``before``'s last multiple of 10, or beat 1) as well as those logged since, on
    whichever host.
    """
    # Read between two of the guest's writes.
    current = wait_beat_above(lab, host, vm, 0)
    while current % 10 not in (3, 4, 5, 6):
        current = wait_beat_above(lab, host, vm, current)
    raw = f"/tmp/{vm}-heartbeat.raw"
    try:
        lab.hv(host, "qemu-img", "convert", "-U", "-O", "raw", disk, raw)
        text = subprocess.run(["mtype", "-i", f"{raw}@@1M", "::heartbeat.log"], capture_output=True,
                              text=True, check=True).stdout
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(raw)
    logged = [int(n) for n in text.split()]
    assert logged == list(range(1, len(logged) + 1)), f"gap or restart in heartbeat.log: {logged}"
    assert logged[-1] >= max(1, before // 10 * 10, current // 10 * 10), (logged[-1], before, current)


@contextlib.contextmanager
def master_virt_config(**settings):
    """Master config ``virt:<key>: <value>`` for each of ``settings`` while the body runs, through
    a master.d file removed afterwards (salt-run reads master.d at each start: no restart).

    An included file replaces a top-level key whole: it carries the rest of ``virt`` too."""
    with open(MASTER_CONF) as fh:
        virt = json.load(fh)["virt"]
    path = os.path.join(f"{MASTER_CONF}.d", f"zz-test-virt-{'-'.join(sorted(settings))}.conf")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as fh:
        json.dump({"virt": dict(virt, **settings)}, fh)
    try:
        yield
    finally:
        os.unlink(path)


@pytest.fixture
def shared_dir(vm):
    path = os.path.join(SHARED, vm)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_shared_storage_there_and_back_with_tunnel(lab, vm, shared_dir):
    os.makedirs(SHARED, mode=0o755, exist_ok=True)
    disks = json.dumps([{"name": "system", "pool": shared_dir}])
    _p, created = lab.run_json("virt.init", vm, "1", "256", "salt://centos.qcow2", "host=hypervisor1",
                               f"disks={disks}")
    # a pool directory is shared: the disk file carries the VM's name
    assert created["disks"]["vda"]["file"] == f"{shared_dir}/{vm}-system.qcow2"
    first = wait_beat_above(lab, "hypervisor1", vm, 1)

    # The lab's hypervisors see the same directory: detected as shared, nothing is copied.
    _p, report = lab.run_json("virt.migrate", vm, "hypervisor2", "test=True")
    assert report["ok"] is True and report["test"] is True
    # the seed ISO lives in the VM's own directory, not in the shared pool: fetched by the target
    assert {d["target"]: d["action"] for d in report["storage"]["disks"]} == {"vda": "shared", "vdb": "fetch"}
    assert "UNSAFE" in report["plan"]["flags"]  # ext4 seen from two mount namespaces
    assert sorted(os.listdir(shared_dir)) == [f"{vm}-system.qcow2"]  # no probe file left behind

    there = migrate(lab, vm, "hypervisor2")
    assert there["host"] == "hypervisor2" and there["copy_storage"] is None
    assert there["mode"] == "peer2peer" and there["downtime_ms"] is not None
    assert vm in lab.domains("hypervisor2") and vm not in lab.domains("hypervisor1")
    moved = wait_beat_above(lab, "hypervisor2", vm, first)

    with master_virt_config(tunnel=True):
        back = migrate(lab, vm)  # no target: placement picks the only other hypervisor
    assert back["host"] == "hypervisor1" and back["mode"] == "tunnelled"
    assert {"PEER2PEER", "TUNNELLED"} <= set(back["flags"])
    assert vm in lab.domains("hypervisor1") and vm not in lab.domains("hypervisor2")
    assert wait_beat_above(lab, "hypervisor1", vm, moved) > moved
    assert boots(lab, vm) == 1  # the guest never rebooted
    assert_heartbeat_log(lab, "hypervisor1", vm, f"{shared_dir}/{vm}-system.qcow2", first)


def test_local_disks_are_copied_there_and_back(lab, vm):
    _p, created = lab.run_json("virt.init", vm, "1", "256", "/var/lib/libvirt/images/centos.qcow2",
                               "enable_qcow=True", "host=hypervisor1")
    disk = f"/srv/salt-images/{vm}/system.qcow2"
    assert created["disks"]["vda"]["file"] == disk
    first = wait_beat_above(lab, "hypervisor1", vm, 1)

    there = migrate(lab, vm, "hypervisor2")
    # The overlay goes on top of the target's own copy of its base; the seed ISO is fetched.
    assert there["storage"] == {"vda": "copy", "vdb": "fetch"}
    assert there["copy_storage"] == "inc" and "NON_SHARED_INC" in there["flags"]
    assert there["source_cleanup"]["stale"]["removed"] == [
        f"/srv/salt-images/{vm}/cidata.iso", disk, f"/srv/salt-images/{vm}/minion.pub",
        f"/srv/salt-images/{vm}/.first-boot"]
    assert lab.hv("hypervisor1", "test", "-e", f"/srv/salt-images/{vm}", check=False).returncode != 0
    moved = wait_beat_above(lab, "hypervisor2", vm, first)

    with master_virt_config(tunnel=True):
        back = migrate(lab, vm, "hypervisor1")
    # libvirt 9.0 cannot tunnel a disk copy: peer-to-peer + TLS instead, and the return says so.
    assert back["mode"] == "peer2peer+tls" and "TUNNELLED" not in back["flags"] and "TLS" in back["flags"]
    assert any("TLS instead" in note for note in back["notes"])
    assert vm in lab.domains("hypervisor1") and vm not in lab.domains("hypervisor2")
    assert lab.hv("hypervisor2", "test", "-e", f"/srv/salt-images/{vm}", check=False).returncode != 0
    assert wait_beat_above(lab, "hypervisor1", vm, moved) > moved
    assert boots(lab, vm) == 1
    assert_heartbeat_log(lab, "hypervisor1", vm, disk, first)


USERFAULTFD = "/proc/sys/vm/unprivileged_userfaultfd"
POSTCOPY_CONF = "/etc/sysctl.d/90-salt-virt-postcopy.conf"


@contextlib.contextmanager
def _userfaultfd_restored():
    """The sysctl is machine-wide (the lab's hypervisors share this machine's kernel): put the
    old value back afterwards."""
    with open(USERFAULTFD) as fh:
        old = fh.read().strip()
    try:
        yield
    finally:
        with open(USERFAULTFD, "w") as fh:
            fh.write(old)


def _start_on_shared_storage(lab, vm, shared_dir):
    """``vm`` running on hypervisor1 with its disk in storage both hypervisors see; its beat."""
    os.makedirs(SHARED, mode=0o755, exist_ok=True)
    disks = json.dumps([{"name": "system", "pool": shared_dir}])
    lab.run_json("virt.init", vm, "1", "256", "salt://centos.qcow2", "host=hypervisor1", f"disks={disks}")
    return wait_beat_above(lab, "hypervisor1", vm, 1)


@pytest.fixture(scope="module")
def postcopy_ready(lab):
    """The formula's virt.postcopy applied on the hypervisors (once for the module: no_userfaultfd
    puts back the value it found, this one's)."""
    had_conf = os.path.exists(POSTCOPY_CONF)
    with _userfaultfd_restored():
        try:
            out = lab.salt_json("hypervisor*", "state.apply", "virt.postcopy")
            for host in ("hypervisor1", "hypervisor2"):
                assert all(s["result"] is True for s in out[host].values()), out
            with open(USERFAULTFD) as fh:
                assert fh.read().strip() == "1"
            yield
        finally:
            if not had_conf:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(POSTCOPY_CONF)


def test_postcopy_switches_over_and_the_guest_carries_on(lab, vm, shared_dir, postcopy_ready):
    # A guest that keeps rewriting 8 MiB and a 1 ms downtime limit: pre-copy never converges on its
    # own, the migration ends by the switch to post-copy after the first pass (8 MiB/s: seconds).
    busy = f"{vm}-dirty8"
    try:
        first = _start_on_shared_storage(lab, busy, shared_dir)
        lab.wait_serial("hypervisor1", busy, r"SALTVIRT-MEMORY 8 MiB dirtied", timeout=120)
        there = migrate(lab, busy, "hypervisor2", "postcopy=True", "max_bandwidth=8", "max_downtime=1")
        assert "POSTCOPY" in there["flags"] and there["postcopy_switched"] is True, there
        assert busy in lab.domains("hypervisor2") and busy not in lab.domains("hypervisor1")
        assert wait_beat_above(lab, "hypervisor2", busy, first) > first
        assert boots(lab, busy) == 1
    finally:
        lab.purge_everywhere(busy)


# Run inside hypervisor1's namespaces (libvirt-python on its own libvirtd): once the migration of
# argv[1] has switched to post-copy, fail it the way libvirt documents for testing a recovery --
# virDomainAbortJobFlags(VIR_DOMAIN_ABORT_JOB_POSTCOPY) makes QEMU pause the post-copy migration
# (migrate-pause), both copies then wait, the guest's memory split between the hosts -- and print
# the domain's (state, reason) on each host as it changes, until the source's copy shows the
# failure (paused, post-copy failed; 20 s at most: a missed injection then fails the test).
_POSTCOPY_FAILURE = """
import json, sys, time, libvirt
libvirt.registerErrorHandler(lambda *_: None, None)
name, limit = sys.argv[1], float(sys.argv[2])
here, there = libvirt.open("qemu:///system"), libvirt.open("qemu+tls://127.0.0.3/system")
def state(conn):
    try:
        return conn.lookupByName(name).state()
    except libvirt.libvirtError as exc:
        return str(exc)
deadline = time.monotonic() + limit
dom = here.lookupByName(name)
while dom.state() != [libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_POSTCOPY]:
    if time.monotonic() > deadline:
        sys.exit(f"no switch-over to post-copy within {limit}s: {dom.state()}")
    time.sleep(0.05)
time.sleep(1)  # the target runs the guest, pulling its pages
seen = [("switched", state(here), state(there))]
dom.abortJobFlags(libvirt.VIR_DOMAIN_ABORT_JOB_POSTCOPY)
failed = [libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_POSTCOPY_FAILED]
end = time.monotonic() + 20
while time.monotonic() < end and seen[-1][1] != failed:
    now = ("injected", state(here), state(there))
    if now != seen[-1]:
        seen.append(now)
    time.sleep(0.05)
print(json.dumps(seen))
"""
POSTCOPY_FAILED = [3, 13]  # paused, post-copy failed (VIR_DOMAIN_PAUSED_POSTCOPY_FAILED)


def _both_sides(lab, vm):
    return {h: lab.run("virsh", h, "domstate", vm, "--reason", check=False, timeout=30).stdout.strip()
            for h in ("hypervisor1", "hypervisor2")}


def _purge_split(lab, vm):
    """Remove ``vm`` from both hosts, the target's copy first: a resume stuck in the target's
    QEMU holds the source's domain (its libvirt job waits on the target's) until that copy dies.
    libvirt 9.0 may keep that job after both copies stopped: virt.purge then says to restart
    libvirtd, which this does (as the operator would) before purging again."""
    if vm in lab.domains("hypervisor2"):
        lab.run("virsh", "hypervisor2", "destroy", vm, check=False, timeout=60)
    lab.purge_everywhere(vm)
    if vm in lab.domains("hypervisor1"):
        refused = lab.run("salt", "hypervisor1", "virt.purge", vm, check=False)
        assert "restart libvirtd on this hypervisor, then purge again" in refused.stdout, refused.stdout
        pid = _libvirtd_pid(lab, "hypervisor1")
        lab.hv("hypervisor1", "kill", pid)
        while lab.hv("hypervisor1", "test", "-e", f"/proc/{pid}", check=False).returncode == 0:
            time.sleep(0.1)
        lab.start_libvirtd("hypervisor1")
        lab.purge_everywhere(vm)
    assert vm not in lab.domains("hypervisor1") and vm not in lab.domains("hypervisor2")


def _resumed_or_stuck(lab, vm, result, first, out):
    """The end of a post-copy migration that failed after the switch-over: resumed, the guest
    on the target only, never rebooted -- or, when the resume itself stalled (the target's QEMU
    stuck, see docs/migration.rst), given up on in bounded time with both copies kept."""
    recovery = result["postcopy_recovery"]
    if result["result"] is True:
        assert recovery["attempts"][-1] == "resumed", result
        assert f"Resuming {vm}: memory" in out  # the resume's progress (pages left at 4 MiB/s: seconds)
        assert result["host"] == "hypervisor2" and result["postcopy_switched"] is True, result
        assert _both_sides(lab, vm)["hypervisor2"].startswith("running")
        assert vm in lab.domains("hypervisor2") and vm not in lab.domains("hypervisor1")
        assert wait_beat_above(lab, "hypervisor2", vm, first) > first
        assert boots(lab, vm) == 1  # the guest never rebooted
        return "resumed"
    # The target's QEMU stopped answering: the paused migration's own job, or the resume's,
    # did not end when interrupted (the attempts after it are refused: the job is still there).
    jobs = [recovery.get("failure") or "", *recovery["attempts"]]
    assert any("did not end when interrupted" in j for j in jobs), result
    assert "nothing was removed" in result["recovery"]["note"], result
    assert vm in lab.domains("hypervisor1") and vm in lab.domains("hypervisor2"), result
    return "stuck"


def test_postcopy_failure_after_the_switch_over_is_resumed(lab, vm, shared_dir, postcopy_ready):
    """The post-copy migration fails after the switch-over (both copies paused, the guest's
    memory split between the hosts): virt.migrate resumes it from the source and the guest
    carries on on the target, never rebooted. Every wait is bounded: a recovery that does not
    happen fails the test with both hosts' view."""
    busy = f"{vm}-dirty48"  # rewrites 48 MiB over and over: post-copy has pages left to pull
    proc = None
    try:
        first = _start_on_shared_storage(lab, busy, shared_dir)
        lab.wait_serial("hypervisor1", busy, r"SALTVIRT-MEMORY 48 MiB dirtied", timeout=120)
        # A 1 ms downtime limit: pre-copy never converges on its own, the switch to post-copy ends
        # it; 4 MiB/s after the switch: the pages still on the source (most of the 48 MiB the guest
        # keeps rewriting) take several seconds to pull, so the failure injected 1 s after the
        # switch lands in post-copy (the resume pulls the rest at the same rate).
        proc = subprocess.Popen(
            [os.path.join(BIN, "salt-run"), "virt.migrate", busy, "hypervisor2", "postcopy=True",
             "max_bandwidth=16", "max_downtime=1", "postcopy_bandwidth=4", "--out=json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        inject = lab.hv("hypervisor1", sys.executable, "-c", _POSTCOPY_FAILURE, busy, "180", check=False,
                        timeout=240)
        if inject.returncode != 0:
            if proc.poll() is None:
                proc.kill()
            out, err = proc.communicate()
            raise AssertionError(f"no post-copy failure injected: {inject.stderr[-1500:]}; "
                                 f"{_both_sides(lab, busy)}\n{out[-3000:]}{err}")
        seen = json.loads(inject.stdout)
        # The failure happened: the source's copy went paused (post-copy failed).
        assert any(step[1] == POSTCOPY_FAILED for step in seen), seen
        try:
            out, err = proc.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            raise AssertionError(f"virt.migrate did not return within 600s after the failure: "
                                 f"{_both_sides(lab, busy)}; injection saw {seen}\n{out[-3000:]}{err}") from None
        result = _last_json(out)
        assert proc.returncode == (0 if result["result"] is True else 1), (seen, out[-3000:], err)
        assert "resuming it (1/3)" in out  # the progress said so while it ran
        _resumed_or_stuck(lab, busy, result, first, out)
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.communicate()
        _purge_split(lab, busy)


# Run inside hypervisor1's namespaces: wait until the migration of argv[1] has switched to
# post-copy (argv[2] seconds at most).
_POSTCOPY_SWITCHED = """
import sys, time, libvirt
libvirt.registerErrorHandler(lambda *_: None, None)
dom = libvirt.open("qemu:///system").lookupByName(sys.argv[1])
deadline = time.monotonic() + float(sys.argv[2])
while dom.state() != [libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_POSTCOPY]:
    if time.monotonic() > deadline:
        sys.exit(f"no switch-over to post-copy within {sys.argv[2]}s: {dom.state()}")
    time.sleep(0.05)
"""


def test_a_post_copy_that_stops_moving_is_paused_and_resumed(lab, vm, shared_dir, postcopy_ready):
    """After the switch-over the migration stream stalls for good (here: the target's QEMU is
    stopped, so nothing it is sent is read; a dead link that TCP has not noticed looks the same).
    A post-copy job cannot be cancelled and QEMU would wait for ever: once nothing has moved for
    postcopy_stall seconds (15 here, 60 by default) the source's job is paused (libvirt's
    post-copy abort), and the runner resumes it when the stream gets through again: the guest
    carries on on the target, never rebooted. Or, when the target's QEMU cannot take the resume
    (a device of the guest waiting on a page still on the source, which QEMU 7.2 under libvirt
    9.0 does not get out of), the runner answers anyway, in bounded time (the 300 s here), both
    copies kept as they are."""
    busy = f"{vm}-dirty48"
    proc, qemu = None, None
    try:
        first = _start_on_shared_storage(lab, busy, shared_dir)
        lab.wait_serial("hypervisor1", busy, r"SALTVIRT-MEMORY 48 MiB dirtied", timeout=120)
        proc = subprocess.Popen(
            [os.path.join(BIN, "salt-run"), "virt.migrate", busy, "hypervisor2", "postcopy=True",
             "max_bandwidth=16", "max_downtime=1", "postcopy_bandwidth=4", "postcopy_stall=15", "--out=json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        switched = lab.hv("hypervisor1", sys.executable, "-c", _POSTCOPY_SWITCHED, busy, "180", check=False,
                          timeout=240)
        assert switched.returncode == 0, (switched.stderr[-1500:], _both_sides(lab, busy))
        qemu = lab.hv("hypervisor2", "cat", f"/run/libvirt/qemu/{busy}.pid").stdout.strip()
        lab.hv("hypervisor2", "kill", "-STOP", qemu)
        stopped = time.monotonic()
        deadline = stopped + 150
        while not _both_sides(lab, busy)["hypervisor1"].startswith("paused (post-copy failed)"):
            assert time.monotonic() < deadline and proc.poll() is None, (_both_sides(lab, busy), proc.poll())
            time.sleep(0.5)
        paused_after = time.monotonic() - stopped
        lab.hv("hypervisor2", "kill", "-CONT", qemu)
        qemu = None
        try:
            out, err = proc.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            raise AssertionError(f"virt.migrate did not return: {_both_sides(lab, busy)}\n{out[-3000:]}{err}") from None
        result = _last_json(out)
        assert proc.returncode == (0 if result["result"] is True else 1), (out[-3000:], err)
        # Not paused before the 15 s without progress (the stall rule, not some other failure).
        assert paused_after >= 15, paused_after
        assert "nothing moved for 15s after the switch" in result["postcopy_recovery"]["failure"], result
        _resumed_or_stuck(lab, busy, result, first, out)
    finally:
        if qemu is not None:
            lab.hv("hypervisor2", "kill", "-CONT", qemu, check=False)
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.communicate()
        _purge_split(lab, busy)


@pytest.fixture
def no_userfaultfd():
    """vm.unprivileged_userfaultfd = 0 (Debian's default: virt.postcopy not applied)."""
    with _userfaultfd_restored():
        with open(USERFAULTFD, "w") as fh:
            fh.write("0")
        yield


def test_postcopy_without_userfaultfd_fails_cleanly(lab, vm, shared_dir, no_userfaultfd):
    first = _start_on_shared_storage(lab, vm, shared_dir)
    proc, result = lab.run_json("virt.migrate", vm, "hypervisor2", "postcopy=True", check=False)
    assert proc.returncode != 0 and result["result"] is False, result
    assert "ostcopy" in result["error"] and result["host"] == "hypervisor1", result
    assert lab.domains("hypervisor1").count(vm) == 1 and vm not in lab.domains("hypervisor2")
    assert wait_beat_above(lab, "hypervisor1", vm, first) > first
    assert boots(lab, vm) == 1


def _start_slow_migration(lab, vm):
    """A migration that takes over a minute (1 MiB/s), once it is under way on hypervisor2."""
    proc = subprocess.Popen(
        [os.path.join(BIN, "salt-run"), "virt.migrate", vm, "hypervisor2", "max_bandwidth=1", "timeout=150",
         "--out=json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 60
    while vm not in lab.domains("hypervisor2"):  # the incoming domain exists: it is under way
        if proc.poll() is not None or time.monotonic() > deadline:
            out, err = proc.communicate()
            raise AssertionError(f"the migration never started: {out}{err}")
        time.sleep(0.3)
    time.sleep(1)
    return proc


def _assert_only_on_source(lab, vm, first):
    """Running on hypervisor1, defined there once; hypervisor2 kept nothing; never rebooted."""
    assert lab.domains("hypervisor1").count(vm) == 1
    assert lab.run("virsh", "hypervisor1", "domstate", vm).stdout.strip() == "running"
    assert vm not in lab.domains("hypervisor2")
    assert lab.hv("hypervisor2", "test", "-e", f"/srv/salt-images/{vm}", check=False).returncode != 0
    assert wait_beat_above(lab, "hypervisor1", vm, max(beats(lab, "hypervisor1", vm))) > first
    assert boots(lab, vm) == 1


def _libvirtd_pid(lab, host):
    return lab.hv(host, "cat", "/run/libvirt/libvirtd.pid").stdout.strip()


# Each hypervisor's libvirtd log (its /var/log/libvirt, warnings and errors: the lab's pillar).
LIBVIRTD_LOGS = {h: os.path.join(LAB_DIR, f"hv{h[-1]}", "log-libvirt", "libvirtd.log")
                 for h in ("hypervisor1", "hypervisor2")}
# libvirt's keepalive giving up on a connection: its error (libvirt 9.0), its warning (older).
KEEPALIVE_GAVE_UP = re.compile(rb"connection closed due to keepalive timeout|after \d+ keepalive messages")


def _log_sizes():
    return {h: os.path.getsize(p) if os.path.exists(p) else 0 for h, p in LIBVIRTD_LOGS.items()}


def wait_keepalive_gave_up(since, timeout=60):
    """Wait until a hypervisor's libvirtd logs, after ``since`` (``_log_sizes()``), that libvirt's
    keepalive gave up on a connection; return that hypervisor."""
    deadline = time.monotonic() + timeout
    new = {}
    while True:
        for host, path in LIBVIRTD_LOGS.items():
            with contextlib.suppress(FileNotFoundError), open(path, "rb") as fh:
                if os.fstat(fh.fileno()).st_size >= since[host]:  # (else: a new file, read whole)
                    fh.seek(since[host])
                new[host] = fh.read()
            if KEEPALIVE_GAVE_UP.search(new.get(host, b"")):
                return host
        if time.monotonic() > deadline:
            raise AssertionError(f"libvirt's keepalive never gave up within {timeout}s; libvirtd logs since: "
                                 + "; ".join(f"{h}: {t[-1500:]!r}" for h, t in new.items()))
        time.sleep(0.5)


def test_errors_are_clear(lab, vm):
    lab.run_json("virt.init", vm, "1", "128", "/var/lib/libvirt/images/centos.qcow2", "enable_qcow=True",
                 "host=hypervisor1", "start=False")
    cases = [
        (("no-such-vm", "hypervisor2"), "no VM named no-such-vm on any hypervisor"),
        ((vm, "hypervisor1"), f"{vm} is already on hypervisor1"),
        ((vm, "hypervisor9"), "unknown hypervisor hypervisor9"),
        ((vm, "hypervisor2", "copy_storage=most"), "copy_storage must be all or inc"),
        ((vm, "hypervisor2", "speed=11"), "unknown option(s) speed"),
    ]
    for args, message in cases:
        proc = lab.run("salt-run", "virt.migrate", *args, check=False)
        assert proc.returncode != 0 and message in proc.stdout + proc.stderr, (args, proc.stdout)
    # A stopped VM moves offline: the target would download its local files (no QEMU copies them).
    _p, report = lab.run_json("virt.migrate", vm, "test=True")
    assert report["ok"] is True and report["target"] == "hypervisor2", report
    storage = next(c for c in report["checks"] if c["check"] == "storage")
    assert storage["detail"] == "vda: fetch, vdb: fetch", storage  # the system disk and its seed ISO
    assert vm in lab.domains("hypervisor1") and vm not in lab.domains("hypervisor2")
    # Every refusal above came after the survey dropped probe files next to the disks: all gone.
    listing = lab.hv("hypervisor1", "ls", "-a", f"/srv/salt-images/{vm}").stdout.split()
    assert "system.qcow2" in listing and not [f for f in listing if "migrate-probe" in f], listing


def test_base_only_on_the_source_is_fetched_by_the_target(lab, vm):
    """The unlucky placement of a first run: the overlay's content-addressed base exists only on
    the source. The target fetches it (checked against its name), then the overlay is copied
    incrementally; the guest never reboots."""
    image = f"centos-{vm}.qcow2"  # a file name of its own: a base name no host has yet
    served = os.path.join(LAB_DIR, "images", image)
    shutil.copyfile(os.path.join(LAB_DIR, "images", "centos.qcow2"), served)
    bases = []
    try:
        _p, created = lab.run_json("virt.init", vm, "1", "256", f"salt://{image}", "enable_qcow=True",
                                   "host=hypervisor1", "seed=False")
        base = created["disks"]["vda"]["backing"][0]
        bases = [os.path.join(LAB_DIR, f"hv{n}", "salt-images", os.path.relpath(base, "/srv/salt-images"))
                 for n in (1, 2)]
        assert os.path.exists(bases[0]) and not os.path.exists(bases[1])
        first = wait_beat_above(lab, "hypervisor1", vm, 1)
        _p, report = lab.run_json("virt.migrate", vm, "hypervisor2", "test=True")
        assert report["ok"] is True, report
        assert any(f"base image {base} is fetched from the source first" in n for n in report["storage"]["notes"])
        there = migrate(lab, vm, "hypervisor2")
        assert there["host"] == "hypervisor2" and there["copy_storage"] == "inc"
        assert oct(os.stat(bases[1]).st_mode & 0o777) == "0o444"
        assert wait_beat_above(lab, "hypervisor2", vm, first) > first
        assert boots(lab, vm) == 1
    finally:
        lab.run("salt-run", "virt.purge", vm, check=False)
        for path in [served, *bases]:
            if os.path.exists(path):
                os.chmod(path, 0o644)
                os.unlink(path)


# The failures and refusals below leave their VM running on hypervisor1 alone: they share one (the
# module's last tests, so that it is purged as soon as they are done), and each first checks that
# it still runs there only, untouched.


@pytest.fixture(scope="module")
def idle_vm(lab):
    """``(name, first beat)`` of a local-disk VM running on hypervisor1; purged afterwards."""
    name = f"it-{uuid.uuid4().hex[:6]}"
    try:
        lab.run_json("virt.init", name, "1", "256", "/var/lib/libvirt/images/centos.qcow2", "enable_qcow=True",
                     "host=hypervisor1")
        yield name, wait_beat_above(lab, "hypervisor1", name, 1)
    finally:
        lab.purge_everywhere(name)


def _assert_untouched(lab, vm, first):
    """The shared VM as the refusals leave it: only on hypervisor1, no probe file left there."""
    _assert_only_on_source(lab, vm, first)
    listing = lab.hv("hypervisor1", "ls", "-A", f"/srv/salt-images/{vm}").stdout.split()
    assert not [f for f in listing if f.startswith(".saltvirt")], listing


def test_killing_the_target_libvirtd_keeps_the_vm_on_the_source(lab, idle_vm):
    vm, first = idle_vm
    _assert_untouched(lab, vm, first)
    proc = _start_slow_migration(lab, vm)
    try:
        pid = _libvirtd_pid(lab, "hypervisor2")
        lab.hv("hypervisor2", "kill", pid)
        while lab.hv("hypervisor2", "test", "-e", f"/proc/{pid}", check=False).returncode == 0:
            time.sleep(0.1)
        lab.start_libvirtd("hypervisor2")
        out, err = proc.communicate(timeout=150)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0, out + err
    result = _last_json(out)
    assert result["result"] is False and result["host"] == "hypervisor1", result
    assert f"{vm} is still running on hypervisor1" in result["error"]
    cleanup = result["recovery"]["target_cleanup"]
    assert f"/srv/salt-images/{vm}/system.qcow2" in cleanup["removed"] and cleanup["kept"] == []
    _assert_only_on_source(lab, vm, first)


def test_a_network_outage_to_the_target_keeps_the_vm_on_the_source(lab, idle_vm):
    vm, first = idle_vm
    _assert_untouched(lab, vm, first)
    # Everything sent to hypervisor2's address (libvirt's TLS port, QEMU's memory and disk
    # streams) is silently dropped, inside the lab's network namespace (the minions reach the
    # master on 127.0.0.1), until libvirt's keepalive (5 s x 5) gives up on the migration's
    # connection and a libvirtd logs it (likely hypervisor2's: its pings still reach hypervisor1,
    # whose answers do not come back).
    # Then the network comes back: QEMU's blocked disk-mirror socket learns its peer is gone
    # (without that, only the kernel's TCP retransmission timeout would end the wait).
    rule = ["INPUT", "-d", "127.0.0.3", "-p", "tcp", "-j", "DROP"]
    netns = ["nsenter", f"--net=/run/netns/{os.environ.get('LAB_NETNS', 'svlab')}", "iptables"]
    proc = _start_slow_migration(lab, vm)
    try:
        logged = _log_sizes()
        subprocess.run([*netns, "-I", *rule], check=True)
        wait_keepalive_gave_up(logged, timeout=60)
        assert vm in lab.domains("hypervisor1")
        subprocess.run([*netns, "-D", *rule], check=True)
        out, err = proc.communicate(timeout=180)
    finally:
        subprocess.run([*netns, "-D", *rule], check=False, capture_output=True)
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0, out + err
    result = _last_json(out)
    assert result["result"] is False and result["host"] == "hypervisor1", result
    _assert_only_on_source(lab, vm, first)


def test_a_full_target_disk_is_refused_before_anything_moves(lab, idle_vm):
    vm, first = idle_vm
    _assert_untouched(lab, vm, first)
    # hypervisor2's virt:images filled up: a 64 KiB tmpfs over the VM's directory-to-be.
    target_dir = f"/srv/salt-images/{vm}"
    lab.hv("hypervisor2", "mkdir", target_dir)
    lab.hv("hypervisor2", "mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", target_dir)
    try:
        proc = lab.run("salt-run", "virt.migrate", vm, "hypervisor2", "--out=json", check=False)
        listing = lab.hv("hypervisor2", "ls", "-A", target_dir).stdout.split()
    finally:
        lab.hv("hypervisor2", "umount", target_dir, check=False)
        lab.hv("hypervisor2", "rmdir", target_dir, check=False)
    assert proc.returncode != 0
    result = _last_json(proc.stdout)
    assert f"space in {target_dir}" in result["error"] and "MiB needed" in result["error"], result
    assert listing == []  # nothing was written there
    _assert_untouched(lab, vm, first)


def test_a_target_that_cannot_reach_the_source_refuses_cleanly(lab, idle_vm):
    """The target pulls the VM: it must reach the source's libvirt too (TLS port 16514)."""
    vm, first = idle_vm
    _assert_untouched(lab, vm, first)
    # Connections to hypervisor1's libvirtd are refused; hypervisor1's own connection to
    # hypervisor2 (the migration itself) would still work.
    rule = ["INPUT", "-d", "127.0.0.2", "-p", "tcp", "--dport", "16514", "-j", "REJECT",
            "--reject-with", "tcp-reset"]
    netns = ["nsenter", f"--net=/run/netns/{os.environ.get('LAB_NETNS', 'svlab')}", "iptables"]
    subprocess.run([*netns, "-I", *rule], check=True)
    try:
        proc = lab.run("salt-run", "virt.migrate", vm, "hypervisor2", "--out=json", check=False)
    finally:
        subprocess.run([*netns, "-D", *rule], check=False, capture_output=True)
    assert proc.returncode != 0
    assert "reaches the source" in proc.stdout and "127.0.0.2" in proc.stdout, proc.stdout
    # The source's probe file (its disk is local: the target never saw it) is gone too.
    listing = lab.hv("hypervisor1", "ls", "-A", f"/srv/salt-images/{vm}").stdout.split()
    assert not [f for f in listing if f.startswith(".saltvirt")], listing
    _assert_only_on_source(lab, vm, first)
