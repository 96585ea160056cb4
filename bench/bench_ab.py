#!/usr/bin/env python3
"""``salt-run virt.init`` of two revisions of this tree, side by side in one run.

Two runs of ``bench_runner.py`` half an hour apart differed by as much as a regression (issue
15: 1.57x, then 1.79x for the same tree): load and memory state drift between runs. This bench
takes the drift out: each revision gets a checkout (``git worktree``, in the temporary directory) and a lab
of its own (own namespace and directory, brought up by that revision's ``lab/labctl.py``), both
labs run at once, and every round times, on each lab in turn (the order alternates between
rounds), ``salt-run test.arg`` and ``salt-run virt.init`` (seeded qcow2 overlay, start=False,
on hypervisor1), then purges the VM untimed. The figures are medians of whole processes; the
ratio of each revision is over its own ``test.arg`` of the same rounds. Prints figures, asserts
nothing about speed.

    BENCH_REVS=36481af,HEAD BENCH_ROUNDS=15 .venv/bin/python bench/bench_ab.py

``BENCH_SYNDIC=1`` brings both labs up behind a syndic (``LAB_SYNDIC=1``: the commands go to
the top master, docs/scale.rst). ``BENCH_KEEP=1`` leaves the labs and checkouts up (for another
run); they are otherwise taken down at the end.
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "15"))
REVS = [r for r in os.environ.get("BENCH_REVS", "HEAD~1,HEAD").split(",") if r]
KEEP = os.environ.get("BENCH_KEEP") == "1"
SYNDIC = "1" if os.environ.get("BENCH_SYNDIC") == "1" else "0"


def sh(argv, env=None, timeout=1800, check=True):
    proc = subprocess.run([str(a) for a in argv], env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        sys.exit(f"{' '.join(map(str, argv))} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


class Side:
    """One revision: its checkout, its lab, its figures."""

    def __init__(self, index, rev):
        self.rev = rev
        self.commit = sh(["git", "-C", REPO, "rev-parse", "--short", rev]).strip()
        self.tree = os.path.join(tempfile.gettempdir(), f"bench-ab-{index}-{self.commit}")
        self.env = dict(os.environ, LAB_DIR=f"/var/lib/svlab-ab{index}", LAB_NETNS=f"svlabab{index}",
                        LAB_HYPERVISORS="2", LAB_SYNDIC=SYNDIC, LAB_FAKE_HYPERVISORS="0")
        self.env.pop("LAB_MASTER", None)
        self.times = {"test.arg": [], "virt.init": []}

    def checkout(self):
        if not os.path.isdir(self.tree):
            sh(["git", "-C", REPO, "worktree", "add", "--detach", self.tree, self.commit])
        venv = os.path.join(self.tree, ".venv")
        if not os.path.exists(venv):
            os.symlink(os.path.join(REPO, ".venv"), venv)

    def labctl(self, *args):
        return sh([os.path.join(REPO, ".venv", "bin", "python"), os.path.join(self.tree, "lab", "labctl.py"), *args],
                  env=self.env)

    def tool(self, *argv, check=True):
        return sh([os.path.join(self.tree, "lab", "bin", argv[0]), *argv[1:]], env=self.env, timeout=900,
                  check=check)

    def timed(self, label, *argv):
        started = time.monotonic()
        self.tool(*argv)
        self.times[label].append(time.monotonic() - started)

    def round(self, n):
        self.timed("test.arg", "salt-run", "test.arg", "--out=json")
        name = f"abinit{n}"
        self.timed("virt.init", "salt-run", "virt.init", name, "1", "128", "salt://centos.qcow2",
                   "enable_qcow=True", "start=False", "host=hypervisor1", "--out=json")
        self.tool("salt-run", "virt.purge", name, "--out=json")

    def check(self):
        answered = json.loads(self.tool("salt-run", "virt.host_info", "--out=json"))
        hosts = sorted(h for h in answered if h.startswith("hypervisor"))
        if hosts != ["hypervisor1", "hypervisor2"]:
            sys.exit(f"{self.rev}: virt.host_info answered for {hosts}, expected hypervisor1 and hypervisor2")


def main():
    if len(REVS) != 2:
        sys.exit(f"BENCH_REVS: two revisions, comma-separated (e.g. 36481af,HEAD), not {REVS}")
    sides = [Side(i, rev) for i, rev in enumerate(REVS)]
    try:
        for side in sides:
            side.checkout()
            side.labctl("up")
            side.check()
            topology = "behind a syndic" if SYNDIC == "1" else "one master"
            print(f"{side.rev} ({side.commit}): lab up in {side.env['LAB_DIR']} ({topology})", flush=True)
        for n in range(ROUNDS):
            for side in sides if n % 2 == 0 else reversed(sides):
                side.round(n)
            print(f"  round {n + 1}/{ROUNDS} done", flush=True)
    finally:
        if not KEEP:
            for side in sides:
                side.labctl("down")
                sh(["git", "-C", REPO, "worktree", "remove", "--force", side.tree], check=False)
    print()
    heading = f"median of {ROUNDS} whole processes"
    print(f"{heading:40}" + "".join(f"{s.rev + ' ' + s.commit:>26}" for s in sides))
    for label in ("test.arg", "virt.init"):
        print(f"{'salt-run ' + label:40}" + "".join(f"{statistics.median(s.times[label]):>24.2f} s" for s in sides))
    ratios = [statistics.median(s.times["virt.init"]) / statistics.median(s.times["test.arg"]) for s in sides]
    print(f"{'virt.init / test.arg':40}" + "".join(f"{r:>25.2f}x" for r in ratios))
    print(f"\nvirt.init, {sides[1].rev} over {sides[0].rev}: "
          f"{statistics.median(sides[1].times['virt.init']) / statistics.median(sides[0].times['virt.init']):.2f}x")


if __name__ == "__main__":
    main()
