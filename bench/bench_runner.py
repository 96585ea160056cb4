#!/usr/bin/env python3
"""Runner latency against its baselines at 2 and 50 hypervisors, with one master and behind a syndic.

The targets of issue 17 compare whole ``salt-run`` processes with a baseline measured in the same
run: per-VM commands (``virt.vm_info/start/stop/force_off``) and ``virt.init`` with
``salt-run test.arg``; the fan-outs (``virt.query``, ``virt.list``, ``virt.host_info``) with
``salt 'hypervisor*' test.ping`` on the same minions. Every round runs each command once, in
turn, so that baselines and commands see the same machine load; the figures are medians.

Four set-ups, one after the other, on a throw-away lab (``BENCH_LAB_DIR``, default
/var/lib/svlab-bench; ``BENCH_NETNS``, default svlabb):

* one master, the 2 real hypervisors; then 48 more hypervisor minions that drive libvirt's
  ``test:///`` driver (``LAB_FAKE_HYPERVISORS``): 50;
* the same behind a syndic (``LAB_SYNDIC=1``: top master with ``order_masters``, one syndic,
  every hypervisor a minion of the syndic's master), at 2 and at 50.

The per-VM commands act on a real VM (the lab's busybox image) on hypervisor1: start boots it,
stop asks it to power off, force_off destroys it; ``virsh start``/``destroy`` of the same VM
through the same TLS listener give libvirt's own time for reference. ``virt.init`` makes a seeded qcow2 overlay with
``start=False`` on hypervisor1 (``host=``; placement reads the master's capacity copy while it is
fresh) and the VM is purged, untimed, after each round. ``salt-run salt.execute hypervisor1
test.ping`` (Salt's runner sending one job) is the floor a per-VM command can reach: one Salt
round trip. Prints figures; asserts nothing about speed.

    .venv/bin/python bench/bench_runner.py            # BENCH_ROUNDS (default 7), BENCH_FAKES (48)
    BENCH_SETUPS=plain-2,syndic-2 .venv/bin/python bench/bench_runner.py
"""

import json
import os
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = os.path.join(REPO, ".venv", "bin", "python")
BIN = os.path.join(REPO, "lab", "bin")
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "7"))
FAKES = int(os.environ.get("BENCH_FAKES", "48"))
ENV = dict(os.environ, LAB_NETNS=os.environ.get("BENCH_NETNS", "svlabb"),
           LAB_DIR=os.environ.get("BENCH_LAB_DIR", "/var/lib/svlab-bench"), LAB_HYPERVISORS="2")
ENV.pop("LAB_MASTER", None)
VM = "benchvm"
SETUPS = ("plain-2", "plain-50", "syndic-2", "syndic-50")

# (label, argv after lab/bin/, baseline label); a baseline's own baseline is None.
ARG = ("salt-run test.arg", ["salt-run", "test.arg", "--out=json"], None)
PING = ("salt 'hypervisor*' test.ping", ["salt", "hypervisor*", "test.ping", "--out=json", "--static"], None)
# The floor of a per-VM command: a runner that sends one job to hypervisor1 and prints its answer
# (Salt's own ``salt.execute``), i.e. one Salt round trip and nothing of salt-virt.
ONE_JOB = ("salt-run salt.execute (one job, floor)",
           ["salt-run", "salt.execute", "hypervisor1", "test.ping", "tgt_type=list", "--out=json"], ARG[0])
PER_VM = [
    (f"virt.vm_info {VM}", ["salt-run", "virt.vm_info", VM, "--out=json"], ARG[0]),
    (f"virt.start {VM}", ["salt-run", "virt.start", VM, "--out=json"], ARG[0]),
    (f"virt.stop {VM}", ["salt-run", "virt.stop", VM, "--out=json"], ARG[0]),
    (f"virt.force_off {VM}", ["salt-run", "virt.force_off", VM, "--out=json"], ARG[0]),
]
# libvirt alone, for reference: virsh in the hypervisor's namespace over the same TLS listener
# (its own process and connection, as each salt-run has). Run after force_off, in this order,
# so that the VM is off again at the end of the round.
LIBVIRT_ALONE = [
    (f"virsh start {VM} (libvirt alone)", ["virsh", "hypervisor1", "start", VM], ARG[0]),
    (f"virsh destroy {VM} (libvirt alone)", ["virsh", "hypervisor1", "destroy", VM], ARG[0]),
]
FANOUT = [
    ("virt.query", ["salt-run", "virt.query", "--out=json"], PING[0]),
    ("virt.list", ["salt-run", "virt.list", "--out=json"], PING[0]),
    ("virt.host_info", ["salt-run", "virt.host_info", "--out=json"], PING[0]),
]
INIT_LABEL = "virt.init (qcow2 overlay, seeded, start=False)"


def run(argv, env=ENV, timeout=900, check=True):
    proc = subprocess.run([str(a) for a in argv], env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        sys.exit(f"{' '.join(map(str, argv))} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def labctl(*args, **env):
    return run([PY, os.path.join(REPO, "lab", "labctl.py"), *args], env=dict(ENV, **env), timeout=1800)


def timed(argv):
    started = time.monotonic()
    run([os.path.join(BIN, argv[0]), *argv[1:]])
    return time.monotonic() - started


def measure(setup):
    """{label: [seconds per round]} for one set-up."""
    commands = [ARG, PING, ONE_JOB, *PER_VM, *LIBVIRT_ALONE, *FANOUT]
    times = {label: [] for label, _argv, _base in commands}
    times[INIT_LABEL] = []
    for n in range(ROUNDS):
        for label, argv, _base in commands:
            times[label].append(timed(argv))
        name = f"benchinit{n}"
        times[INIT_LABEL].append(timed(["salt-run", "virt.init", name, "1", "128", "salt://centos.qcow2",
                                        "enable_qcow=True", "start=False", "host=hypervisor1", "--out=json"]))
        run([os.path.join(BIN, "salt-run"), "virt.purge", name, "--out=json"])
        print(f"  {setup}: round {n + 1}/{ROUNDS} done", flush=True)
    return times


def bring_up(setup):
    syndic = setup.startswith("syndic")
    fakes = FAKES if setup.endswith("-50") else 0
    if setup in ("plain-2", "syndic-2"):
        labctl("down")  # the topology changes only while the lab is down
    labctl("up", LAB_SYNDIC="1" if syndic else "0", LAB_FAKE_HYPERVISORS=str(fakes))
    # Each fan-out answers for every hypervisor (and exits 0: none failed).
    for fun in ("virt.host_info", "virt.query", "virt.list"):
        answered = json.loads(run([os.path.join(BIN, "salt-run"), fun, "--out=json"]))
        hosts = len([h for h in answered if h.startswith("hypervisor")])
        if hosts != 2 + fakes or "retcode" in answered:
            sys.exit(f"{setup}: {fun} answered for {hosts} hypervisors, expected {2 + fakes}")
    run([os.path.join(BIN, "salt"), "hypervisor1", "virt.purge", VM], check=False)
    run([os.path.join(BIN, "salt"), "hypervisor1", "virt.init", VM, "1", "128",
         "image=/var/lib/libvirt/images/centos.qcow2", "enable_qcow=True", "seed=False"])
    found = json.loads(run([os.path.join(BIN, "salt-run"), "virt.vm_info", VM, "--out=json"]))
    if list(found) != ["hypervisor1"] or VM not in found["hypervisor1"]["vm_info"]:
        sys.exit(f"{setup}: virt.vm_info {VM} did not find it on hypervisor1: {found}")
    return hosts


def report(results):
    setups = list(results)
    width = 48
    print()
    print(f"{'median of ' + str(ROUNDS) + ' whole processes':{width}}" + "".join(f"{s:>22}" for s in setups))
    rows = [ARG, PING, ONE_JOB, *PER_VM, *LIBVIRT_ALONE, (INIT_LABEL, None, ARG[0]), *FANOUT]
    for label, _argv, base in rows:
        cells = []
        for setup in setups:
            median = statistics.median(results[setup][label])
            if base is None:
                cells.append(f"{median:6.2f} s        ")
            else:
                ratio = median / statistics.median(results[setup][base])
                cells.append(f"{median:6.2f} s ({ratio:4.2f}x)")
        print(f"{label:{width}}" + "".join(f"{c:>22}" for c in cells))
    for setup in setups:
        own = {cmd: statistics.median(results[setup][cmd]) - statistics.median(results[setup][alone])
               for cmd, alone in ((PER_VM[1][0], LIBVIRT_ALONE[0][0]), (PER_VM[3][0], LIBVIRT_ALONE[1][0]))}
        base = statistics.median(results[setup][ARG[0]])
        parts = [f"{cmd} less libvirt alone: {t:.2f} s ({t / base:.2f}x)" for cmd, t in own.items()]
        print(f"{setup}: " + ", ".join(parts))
    print("\nratios: per-VM commands and virt.init over salt-run test.arg; virt.query/list/host_info over "
          "salt 'hypervisor*' test.ping, in the same set-up and rounds")


def main():
    wanted = [s for s in os.environ.get("BENCH_SETUPS", ",".join(SETUPS)).split(",") if s]
    unknown = sorted(set(wanted) - set(SETUPS))
    if unknown:
        sys.exit(f"BENCH_SETUPS: unknown {', '.join(unknown)}; choose among {', '.join(SETUPS)}")
    results = {}
    try:
        for setup in wanted:
            hosts = bring_up(setup)
            print(f"{setup}: {hosts} hypervisors answering", flush=True)
            results[setup] = measure(setup)
            report({setup: results[setup]})  # kept even if a later set-up fails
    finally:
        subprocess.run([os.path.join(BIN, "salt"), "hypervisor1", "virt.purge", VM], env=ENV, capture_output=True)
        labctl("down")
    report(results)


if __name__ == "__main__":
    main()
