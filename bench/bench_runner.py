#!/usr/bin/env python3
"""Runner per-VM command latency with 2 hypervisors vs 2 + 8 more hypervisor minions.

The extra minions drive libvirt's test:/// driver (``LAB_FAKE_HYPERVISORS``), so they answer
like hypervisors without running daemons of their own. A throw-away lab (``svlabb``) is used.
Prints figures; asserts nothing about speed.

    .venv/bin/python bench/bench_runner.py
"""

import os
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, LAB_NETNS="svlabb", LAB_DIR="/var/lib/svlab-bench", LAB_HYPERVISORS="2")
PY = os.path.join(REPO, ".venv", "bin", "python")
BIN = os.path.join(REPO, "lab", "bin")
RUNS = 7


def run(argv, env=ENV, timeout=900):
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def timed(argv):
    times = []
    for _ in range(RUNS):
        started = time.monotonic()
        run(argv)
        times.append(time.monotonic() - started)
    return statistics.median(times), min(times)


def measure(label):
    results = {}
    for what, argv in (
        ("virt.vm_info benchvm", [f"{BIN}/salt-run", "virt.vm_info", "benchvm", "--out=json"]),
        ("virt.start benchvm (already running)", [f"{BIN}/salt-run", "virt.start", "benchvm", "--out=json"]),
        ("virt.list", [f"{BIN}/salt-run", "virt.list", "--out=json"]),
    ):
        results[what] = timed(argv)
    for what, (median, best) in results.items():
        print(f"{label:28} {what:38} median {median:5.2f} s  best {best:5.2f} s")


def main():
    labctl = [PY, os.path.join(REPO, "lab", "labctl.py")]
    run([*labctl, "down"])
    try:
        run([*labctl, "up"])
        run([f"{BIN}/salt", "hypervisor1", "virt.init", "benchvm", "1", "128",
             "image=/var/lib/libvirt/images/centos.qcow2", "enable_qcow=True", "seed=False"])
        measure("2 hypervisors")
        run([*labctl, "up"], env=dict(ENV, LAB_FAKE_HYPERVISORS="8"))
        hosts = run([f"{BIN}/salt-run", "virt.host_info", "--out=json"])
        count = hosts.count('"node_info"')
        measure(f"{count} hypervisors (8 test:///)")
    finally:
        subprocess.run([f"{BIN}/salt", "hypervisor1", "virt.purge", "benchvm"], env=ENV,
                       capture_output=True)
        run([*labctl, "down"])


if __name__ == "__main__":
    main()
