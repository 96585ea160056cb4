#!/usr/bin/env python3
"""Lab figures: lab-up cold (empty state dir) and warm (state kept), and guest boot time.

Runs a throw-away lab (netns ``svlabb``, state in /var/lib/svlab-bench) so the default lab is
left alone. Prints figures; asserts nothing about speed.

    .venv/bin/python bench/bench_lab.py
"""

import os
import re
import shutil
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, LAB_NETNS="svlabb", LAB_DIR="/var/lib/svlab-bench", LAB_HYPERVISORS="2")
PY = os.path.join(REPO, ".venv", "bin", "python")


def run(*argv, timeout=900):
    proc = subprocess.run(argv, env=ENV, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def labctl(cmd):
    started = time.monotonic()
    run(PY, os.path.join(REPO, "lab", "labctl.py"), cmd)
    return time.monotonic() - started


def guest_boot_seconds(name="benchvm"):
    bin_ = os.path.join(REPO, "lab", "bin")
    started = time.monotonic()
    run(os.path.join(bin_, "salt"), "hypervisor1", "virt.init", name, "1", "192",
        "image=/var/lib/libvirt/images/centos.qcow2", "enable_qcow=True", "seed=False")
    defined = time.monotonic() - started
    deadline = started + 180
    while time.monotonic() < deadline:
        log = subprocess.run([os.path.join(bin_, "hv-exec"), "hypervisor1", "cat",
                              f"/var/log/libvirt/qemu/{name}-serial.log"],
                             env=ENV, capture_output=True, text=True).stdout
        if re.search(r"SALTVIRT-HEARTBEAT 1\b", log):
            break
        time.sleep(0.2)
    else:
        sys.exit("the guest printed no heartbeat within 180 s")
    boot = time.monotonic() - started
    run(os.path.join(bin_, "salt"), "hypervisor1", "virt.purge", name)
    return defined, boot


def main():
    labctl("down")
    shutil.rmtree(ENV["LAB_DIR"], ignore_errors=True)
    try:
        cold = labctl("up")
        defined, boot = guest_boot_seconds()
        labctl("down")
        warm = labctl("up")
        again = labctl("up")
    finally:
        down = labctl("down")
    print(f"lab-up cold (empty state, 2 hypervisors): {cold:6.1f} s")
    print(f"lab-up warm (state kept, daemons stopped):  {warm:6.1f} s")
    print(f"lab-up when already running:              {again:6.1f} s")
    print(f"lab-down:                                  {down:6.1f} s")
    print(f"virt.init (qcow2 overlay) returns after:   {defined:6.1f} s")
    print(f"virt.init -> first guest heartbeat (TCG):  {boot:6.1f} s")


if __name__ == "__main__":
    main()
