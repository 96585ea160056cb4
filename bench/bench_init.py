#!/usr/bin/env python3
"""``virt.init`` (start=False) time for 1 GiB and 8 GiB base images: qcow2 overlay vs full copy.

Runs the execution module in-process (Salt's loader) against this host's libvirtd; the bases
are qcow2 images with every cluster written (data that really has to be copied).

    .venv/bin/python bench/bench_init.py
"""

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "_utils"))

import salt.config  # noqa: E402
from saltfactories.utils.functional import Loaders  # noqa: E402


def make_base(path, gib):
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", path, f"{gib}G"], check=True)
    # Fill it in 256 MiB writes of a non-zero pattern so the copy has real work to do.
    step = 256
    cmds = []
    for offset in range(0, gib * 1024, step):
        cmds += ["-c", f"write -P 0x5a {offset}M {step}M"]
    subprocess.run(["qemu-io", "-f", "qcow2", *cmds, path], check=True, capture_output=True)


def main():
    root = tempfile.mkdtemp(prefix="salt-virt-bench-", dir="/var/tmp")
    os.chmod(root, 0o755)  # noqa: S103  (QEMU, running as libvirt-qemu, must reach the disks)
    opts = salt.config.minion_config(None)
    opts.update(
        id="bench", root_dir=root, cachedir=f"{root}/cache", pki_dir=f"{root}/pki",
        sock_dir=f"{root}/sock", file_client="local", file_roots={"base": [root]},
        module_dirs=[REPO],
        virt={"images": f"{root}/images", "image_roots": [root],  # the bases below live in root
              "nic": {"default": [{"name": "eth0", "type": "user"}]}},
    )
    virt = Loaders(opts).modules.virt
    try:
        for gib in (1, 8):
            base = f"{root}/base{gib}.qcow2"
            make_base(base, gib)
            for mode in ("overlay", "full copy"):
                times = []
                for run in range(3 if gib == 1 else 1):
                    name = f"bench-{gib}g-{mode[0]}{run}"
                    started = time.monotonic()
                    virt.init(name, 1, 128, image=base, enable_qcow=(mode == "overlay"), start=False,
                              seed=False, disks=[{"name": "system", "size": None}])
                    times.append(time.monotonic() - started)
                    virt.purge(name)
                    os.chmod(base, 0o644)  # make the next full copy start from the same state
                print(f"virt.init start=False, {gib} GiB base, {mode:9}: "
                      f"{statistics.median(times):7.3f} s (median of {len(times)})")
            os.unlink(base)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
