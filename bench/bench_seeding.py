"""Benchmark seeding: cidata vs the guestfs mount seeder, and virt.init -> test.version.

* ``cidata``: :func:`saltvirt.seeding.make_cidata` (the ISO a ``seed_cmd=cidata`` virt.init
  attaches), best of 50; key generation (done once per VM by the runner) shown separately.
  Target: < 0.1 s.
* ``mount``: :func:`saltvirt.seeding.seed_image` (``seed_cmd=seed.apply``) on a copy of the
  lab's busybox image (FAT) and of the Debian minion image (ext4), split into mount / write /
  umount (the umount includes waiting for guestmount to exit). The libguestfs appliance
  boots under TCG here, so this is dominated by that boot.
* ``e2e`` (needs the lab: ``make lab-up``; skipped with ``--no-e2e``): ``salt-run virt.init``
  of the Debian minion image on the lab, until the new minion's start event and its first
  ``test.version`` answer, for each seeding method.

No assertions; run it and read the figures::

    .venv/bin/python bench/bench_seeding.py [--no-e2e] [--runs N]
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "_utils"))

from saltvirt import hypervisor, seeding  # noqa: E402

TARGET_CIDATA = 0.1
CACHE = os.environ.get("SALTVIRT_LAB_CACHE", "/var/cache/salt-virt-lab")
MINION_IMAGE_DIR = os.environ.get("SALTVIRT_MINION_IMAGE_DIR", os.path.join(CACHE, "minion-image"))
LAB_DIR = os.environ.get("LAB_DIR", "/var/lib/svlab")
BIN = os.path.join(REPO, "lab", "bin")


def bench_cidata(work, runs=50):
    t0 = time.perf_counter()
    priv, pub = seeding.gen_minion_keys()
    keygen = time.perf_counter() - t0
    times = []
    for i in range(runs):
        dest = os.path.join(work, f"cidata-{i}.iso")
        t0 = time.perf_counter()
        seeding.make_cidata(dest, minion_id=f"bench{i}", master="10.231.0.1", pub_key_pem=pub,
                            priv_key_pem=priv, extra_minion_config={"multiprocessing": False})
        times.append(time.perf_counter() - t0)
        os.unlink(dest)
    best, median = min(times), sorted(times)[len(times) // 2]
    flag = "OK" if median < TARGET_CIDATA else "SLOW"
    print(f"cidata        best {best * 1000:7.1f} ms   median {median * 1000:7.1f} ms   "
          f"(target < {TARGET_CIDATA * 1000:.0f} ms: {flag});  key generation {keygen * 1000:.0f} ms")


def bench_mount(work, image, label, runs=1):
    if not os.path.exists(image):
        print(f"mount {label:8s} skipped: {image} not built")
        return
    works, _reason = hypervisor.kvm_status(os.path.join(work, "kvm-probe.json"))
    env = seeding.libguestfs_env(force_tcg=not works)
    priv, pub = seeding.gen_minion_keys()
    for run in range(runs):
        copy = os.path.join(work, f"{label}-{run}{os.path.splitext(image)[1]}")
        shutil.copyfile(image, copy)
        t0 = time.perf_counter()
        res = seeding.seed_image(copy, minion_id=f"bench-{label}", master="10.231.0.1",
                                 pub_key_pem=pub, priv_key_pem=priv, install=False, env=env)
        total = time.perf_counter() - t0
        s = res["seconds"]
        print(f"mount {label:8s} total {total:6.1f} s   mount {s['mount']:5.1f} s   write {s['write']:4.2f} s   "
              f"umount+exit {s['umount']:4.1f} s   ({res['device']} {res['fstype']}, "
              f"{'TCG' if not works else 'KVM'} appliance)")
        os.unlink(copy)


def _run(tool, *args, timeout=900):
    return subprocess.run([os.path.join(BIN, tool), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def _last_json(text):
    """salt-run prints progress documents before the return: parse the last JSON document."""
    start = text.rfind("\n{")
    while start != -1:
        try:
            return json.loads(text[start + 1:])
        except json.JSONDecodeError:
            start = text.rfind("\n{", 0, start)
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return {}


def _find_host(name):
    out = _run("salt", "hypervisor*", "virt.vm_state", "--out=json", "--static").stdout
    try:
        states = json.loads(out)
    except json.JSONDecodeError:
        return None
    return next((h for h, vms in states.items() if isinstance(vms, dict) and name in vms), None)


def bench_e2e(seed_cmd):
    name = f"bench-{uuid.uuid4().hex[:6]}"
    image = os.path.join(MINION_IMAGE_DIR, "debian-minion.qcow2")
    dest = os.path.join(LAB_DIR, "images", "debian-minion.qcow2")
    if not os.path.exists(dest) or not os.path.samefile(image, dest):
        if os.path.exists(dest):
            os.unlink(dest)
        os.link(image, dest)
    last = int(name[-2:], 16)
    mac = f"52:54:00:e3:{int(name[-4:-2], 16):02x}:{last:02x}"
    listener = subprocess.Popen([os.path.join(BIN, "salt-run"), "state.event", f"salt/minion/{name}/start",
                                 "count=1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    host = None
    try:
        time.sleep(3)
        t0 = time.monotonic()
        proc = _run("salt-run", "virt.init", name, 1, 1024, "salt://debian-minion.qcow2", f"seed_cmd={seed_cmd}",
                    "config=" + json.dumps({"master": "10.231.0.1"}),
                    "interfaces=" + json.dumps([{"name": "eth0", "type": "bridge", "source": "br0", "mac": mac}]),
                    "--out=json")
        t_init = time.monotonic() - t0
        out = proc.stdout
        ret = _last_json(out)
        host = ret.get("host") if isinstance(ret, dict) else None
        if not host:
            host = _find_host(name)
        if proc.returncode or not host:
            print(f"e2e {seed_cmd:10s} virt.init failed: {out[-500:]} {proc.stderr[-500:]}")
            return
        listener.wait(timeout=600)
        t_start = time.monotonic() - t0
        answer = " ".join(_run("salt", name, "test.version", "-t", "120", "--out=json", "--static").stdout.split())
        t_answer = time.monotonic() - t0
        print(f"e2e {seed_cmd:10s} virt.init {t_init:6.1f} s   minion start {t_start:6.1f} s   "
              f"test.version {t_answer:6.1f} s   ({answer.strip()})")
    except subprocess.TimeoutExpired:
        print(f"e2e {seed_cmd:10s} no minion start within 600 s")
    finally:
        if listener.poll() is None:
            listener.kill()
        host = host or _find_host(name)
        if host:
            _run("salt", host, "virt.purge", name)
        _run("salt-key", "-y", "-d", name)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--no-e2e", action="store_true", help="skip the lab end-to-end runs")
    parser.add_argument("--runs", type=int, default=1, help="mount seeding runs per image")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="bench-seeding-", dir="/var/tmp")
    try:
        bench_cidata(work)
        lab_image = os.path.join(LAB_DIR, "images", "centos.img")
        if not os.path.exists(lab_image):
            subprocess.run(["bash", os.path.join(REPO, "lab", "image", "build.sh"), work], check=True,
                           capture_output=True)
            lab_image = os.path.join(work, "centos.img")
        bench_mount(work, lab_image, "fat", args.runs)
        subprocess.run(["bash", os.path.join(REPO, "lab", "image", "build-minion-image.sh"), MINION_IMAGE_DIR],
                       check=True, capture_output=True)
        bench_mount(work, os.path.join(MINION_IMAGE_DIR, "debian-minion.qcow2"), "ext4", args.runs)
        if not args.no_e2e:
            if not os.path.exists(f"/run/netns/{os.environ.get('LAB_NETNS', 'svlab')}"):
                print("e2e skipped: the lab is not running (make lab-up)")
            else:
                for method in ("cidata", "seed.apply"):
                    bench_e2e(method)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
