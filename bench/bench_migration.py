#!/usr/bin/env python3
"""Live migration on the lab: ``salt-run virt.migrate`` against a bare libvirt ``migrateToURI3``.

One running guest (BENCH_MEMORY_MIB, default 256 MiB, of which BENCH_FILL_MIB, default 0, hold
data; its disk on storage both lab hypervisors see) is moved back and forth between the two lab
hypervisors BENCH_ROUNDS times (default 4) with ``salt-run virt.migrate`` (pre-flight, progress,
verification included) and as often with a plain ``dom.migrateToURI3`` and the same flags; each
path takes each direction equally often. A second guest with a local disk (overlay, copied by
QEMU) is then moved there and back with the runner. Printed per path: wall time (median, min),
the runner's own time (its wall time minus the libvirt call inside it) and the guest's downtime
from libvirt's completed-job statistics.

Needs the lab (``make lab-up``; honours LAB_NETNS / LAB_DIR like lab/bin/*)::

    .venv/bin/python bench/bench_migration.py
"""

import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import time
import uuid

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(REPO, "lab", "bin")
PYTHON = os.path.join(REPO, ".venv", "bin", "python")
LAB_DIR = os.environ.get("LAB_DIR", "/var/lib/svlab")
SHARED = os.path.join(LAB_DIR, "shared-storage")
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "4"))
MEMORY = int(os.environ.get("BENCH_MEMORY_MIB", "256"))
# Memory the guest fills with data (its name ends in -mem<N>: see lab/image/README.rst).
FILL = int(os.environ.get("BENCH_FILL_MIB", "0"))
ADDRESS = {"hypervisor1": "127.0.0.2", "hypervisor2": "127.0.0.3"}

# The flags the runner uses for a shared-storage VM in the lab (see its "flags" return).
RAW = r"""
import json, sys, time, libvirt
libvirt.registerErrorHandler(lambda *_: None, None)
name, uri = sys.argv[1], sys.argv[2]
conn = libvirt.open("qemu:///system")
dom = conn.lookupByName(name)
flags = (libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PEER2PEER | libvirt.VIR_MIGRATE_PERSIST_DEST
         | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE | libvirt.VIR_MIGRATE_UNSAFE)
started = time.monotonic()
dom.migrateToURI3(uri, {}, flags)
seconds = time.monotonic() - started
dconn = libvirt.open(uri)
stats = dconn.lookupByName(name).jobStats(
    libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED | libvirt.VIR_DOMAIN_JOB_STATS_KEEP_COMPLETED)
print(json.dumps({"seconds": seconds, "downtime_ms": stats.get("downtime"),
                  "total_ms": stats.get("time_elapsed")}))
"""


def run(tool, *args, timeout=600):
    proc = subprocess.run([os.path.join(BIN, tool), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        raise SystemExit(f"{tool} {' '.join(map(str, args))} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def last_json(text):
    return json.loads(text[text.rindex("\n{\n") + 1:] if "\n{\n" in text else text)


def jitter():
    """Start at a random point of the guest's one-second heartbeat: the beat dirties memory, and
    a fixed phase (the raw call starts right after a beat is seen, the runner ~1 s later) would
    favour one path."""
    time.sleep(random.uniform(0, 1))


def runner_migrate(vm, target):
    jitter()
    started = time.monotonic()
    out = run("salt-run", "virt.migrate", vm, target, "--out=json")
    wall = time.monotonic() - started
    result = last_json(out)
    assert result["result"] is True, result
    return {"wall": wall, "runner": result["duration_s"], "libvirt": result["migration_s"],
            "downtime_ms": result["downtime_ms"], "flags": result["flags"],
            "job_s": (result["job"].get("total_time_ms") or 0) / 1000 or None}


def raw_migrate(vm, source, target):
    jitter()
    started = time.monotonic()
    out = run("hv-exec", source, PYTHON, "-c", RAW, vm, f"qemu+tls://{ADDRESS[target]}/system")
    data = json.loads(out.strip().splitlines()[-1])
    data["wall"] = time.monotonic() - started
    data["job_s"] = (data.get("total_ms") or 0) / 1000 or None
    return data


def wait_heartbeat(host, vm, above=2, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = subprocess.run([os.path.join(BIN, "hv-exec"), host, "cat", f"/var/log/libvirt/qemu/{vm}-serial.log"],
                             capture_output=True, text=True).stdout
        beats = [int(n) for n in re.findall(r"SALTVIRT-HEARTBEAT (\d+)", log)]
        if beats and max(beats) > above:
            return max(beats)
        time.sleep(0.5)
    raise SystemExit(f"{vm} shows no heartbeat on {host}")


def line(label, values, key, unit="s"):
    picked = [v[key] for v in values if v.get(key) is not None]
    if not picked:
        return f"  {label:44} n/a"
    fmt = "{:7.2f}" if unit == "s" else "{:7.0f}"
    return (f"  {label:44} median {fmt.format(statistics.median(picked))} {unit}, "
            f"min {fmt.format(min(picked))} {unit}  (n={len(picked)})")


def main():
    tag = uuid.uuid4().hex[:6]
    shared_vm, local_vm = f"bench-mig-s{tag}" + (f"-mem{FILL}" if FILL else ""), f"bench-mig-l{tag}"
    pool = os.path.join(SHARED, shared_vm)
    os.makedirs(SHARED, mode=0o755, exist_ok=True)
    runner_runs, raw_runs, local_runs = [], [], []
    try:
        run("salt", "hypervisor*", "saltutil.sync_all", "--out=json")
        # seed=False: a seed ISO is a local disk (virt:images), which the raw path cannot migrate.
        run("salt-run", "virt.init", shared_vm, 1, MEMORY, "salt://centos.qcow2", "host=hypervisor1",
            "disks=" + json.dumps([{"name": "system", "pool": pool}]), "seed=False", "--out=json")
        beat = wait_heartbeat("hypervisor1", shared_vm)
        if FILL:
            log = run("hv-exec", "hypervisor1", "cat", f"/var/log/libvirt/qemu/{shared_vm}-serial.log")
            if f"SALTVIRT-MEMORY {FILL} MiB in use" not in log:
                raise SystemExit(f"{shared_vm} did not fill {FILL} MiB of its memory:\n{log[-2000:]}")
        for i in range(ROUNDS):
            # Each path takes each direction equally often.
            if i % 2 == 0:
                runner_runs.append(runner_migrate(shared_vm, "hypervisor2"))
                beat = wait_heartbeat("hypervisor2", shared_vm, beat)
                raw_runs.append(raw_migrate(shared_vm, "hypervisor2", "hypervisor1"))
            else:
                raw_runs.append(raw_migrate(shared_vm, "hypervisor1", "hypervisor2"))
                beat = wait_heartbeat("hypervisor2", shared_vm, beat)
                runner_runs.append(runner_migrate(shared_vm, "hypervisor1"))
            beat = wait_heartbeat("hypervisor1", shared_vm, beat)
        # Started only now: a second TCG guest would take CPU from the comparison above.
        run("salt-run", "virt.init", local_vm, 1, 256, "/var/lib/libvirt/images/centos.qcow2",
            "enable_qcow=True", "host=hypervisor1", "--out=json")
        wait_heartbeat("hypervisor1", local_vm)
        for target in ("hypervisor2", "hypervisor1"):
            local_runs.append(runner_migrate(local_vm, target))
    finally:
        for vm in (shared_vm, local_vm):
            subprocess.run([os.path.join(BIN, "salt-run"), "virt.purge", vm], capture_output=True)
        shutil.rmtree(pool, ignore_errors=True)

    print(f"Live migration of a running {MEMORY} MiB TCG guest ({FILL} MiB of it filled with data) "
          f"between lab hypervisors ({ROUNDS} rounds)")
    print("shared storage:")
    print(line("salt-run virt.migrate, wall (process)", runner_runs, "wall"))
    print(line("  runner function (duration_s)", runner_runs, "runner"))
    print(line("  libvirt migrateToURI3 inside it", runner_runs, "libvirt"))
    for r in runner_runs:
        r["own"] = r["runner"] - r["libvirt"]
    print(line("  runner's own time (function - libvirt)", runner_runs, "own"))
    print(line("  libvirt's own job time (time_elapsed)", runner_runs, "job_s"))
    print(line("  guest downtime", runner_runs, "downtime_ms", "ms"))
    print(f"  flags: {' '.join(sorted(runner_runs[0]['flags']))}")
    print(line("raw migrateToURI3 (same flags), call only", raw_runs, "seconds"))
    print(line("  libvirt's own job time (time_elapsed)", raw_runs, "job_s"))
    print(line("raw, incl. python start + hv-exec", raw_runs, "wall"))
    print(line("  guest downtime", raw_runs, "downtime_ms", "ms"))
    if os.environ.get("BENCH_VERBOSE"):
        print("  each run, libvirt call (s): runner", sorted(round(r["libvirt"], 2) for r in runner_runs),
              "raw", sorted(round(r["seconds"], 2) for r in raw_runs))
    overhead = statistics.median(r["wall"] for r in runner_runs) - statistics.median(
        r["seconds"] for r in raw_runs)
    print(f"  runner overhead over raw libvirt (median wall - median call): {overhead:.2f} s")
    med = lambda runs, key: statistics.median(r[key] for r in runs)  # noqa: E731
    ratio = med(runner_runs, "runner") / med(raw_runs, "seconds")
    print(f"  ratio runner function / raw call:               {ratio:.2f}x")
    print(f"  ratio (raw call + runner's own time) / raw call: "
          f"{(med(raw_runs, 'seconds') + med(runner_runs, 'own')) / med(raw_runs, 'seconds'):.2f}x")
    print(f"  ratio salt-run process / raw process:           {med(runner_runs, 'wall') / med(raw_runs, 'wall'):.2f}x")
    print("local disk (qcow2 overlay, copy-storage inc + seed ISO fetched), runner there and back:")
    print(line("salt-run virt.migrate, wall (process)", local_runs, "wall"))
    print(line("  libvirt migrateToURI3 inside it", local_runs, "libvirt"))
    print(line("  guest downtime", local_runs, "downtime_ms", "ms"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
