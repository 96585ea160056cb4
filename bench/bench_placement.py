"""Benchmark saltvirt.placement.place(): 1,000 hypervisors carrying 10,000 VMs (seeded random).

Prints milliseconds per placement (best of several runs) for:

* raw host dicts, as the runner gathers them (parsing included: what a ``virt.init`` pays);
* prebuilt HostStates (per-host sums already computed), for each rank policy;
* with 200 in-flight reservations spread over the hosts.

Target: < 50 ms per placement from raw dicts. No assertions; run it and read the figures::

    .venv/bin/python bench/bench_placement.py
"""

import os
import random
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "_utils"))

from saltvirt.placement import HostState, Policy, Request, place  # noqa: E402

HOSTS = 1_000
VMS = 10_000
RESERVATIONS = 200
SEED = 3008
RUNS = 15
TARGET_MS = 50.0


def build_hosts(rng):
    hosts = []
    for i in range(HOSTS):
        cpus = rng.choice((16, 24, 32, 48, 64))
        memory_total = rng.choice((65536, 131072, 196608, 262144))
        hosts.append({
            "id": f"hypervisor{i:04d}",
            "cpus": cpus,
            "memory_total": memory_total,
            "disk_free": rng.randrange(50_000, 2_000_000),
            "vms": [],
            "bridges": ["br0"] + (["br1"] if rng.random() < 0.5 else []),
            "networks": ["default"],
            "up": rng.random() > 0.01,
        })
    for n in range(VMS):
        h = hosts[rng.randrange(HOSTS)]
        h["vms"].append({
            "name": f"vm{n:05d}",
            "cpu": rng.choice((1, 2, 2, 4, 8)),
            "memory": rng.choice((512, 1024, 2048, 4096, 8192, 16384)),
            "state": "shutoff" if rng.random() < 0.15 else "running",
        })
    for h in hosts:
        if rng.random() < 0.7:  # most hosts also report their own view of free memory
            used = sum(v["memory"] for v in h["vms"] if v["state"] == "running")
            h["memory_free"] = max(0, h["memory_total"] - used - rng.randrange(1024, 8192))
    return hosts


def build_reservations(rng, hosts):
    out = {}
    for n in range(RESERVATIONS):
        h = hosts[rng.randrange(HOSTS)]["id"]
        out.setdefault(h, []).append(
            {"name": f"inflight{n:04d}", "cpu": 2, "memory": 4096, "disk": 20480}
        )
    return out


def best_ms(fn, runs=RUNS):
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best * 1000.0


def main():
    rng = random.Random(SEED)
    hosts = build_hosts(rng)
    reservations = build_reservations(rng, hosts)
    request = Request("bench", cpu=2, memory_mib=4096, disk_mib=20480, bridges=("br1",))
    total_vms = sum(len(h["vms"]) for h in hosts)
    print(f"placement benchmark: {len(hosts)} hosts, {total_vms} VMs, "
          f"best of {RUNS} runs (python {sys.version.split()[0]})")

    states_ms = best_ms(lambda: [HostState.from_dict(h) for h in hosts])
    states = [HostState.from_dict(h) for h in hosts]
    print(f"  build HostStates from dicts           {states_ms:8.2f} ms")

    rows = []
    for label, hs, policy in [
        ("place(dicts), free_memory", hosts, Policy()),
        ("place(dicts), 200 reservations", hosts, Policy(reservations=reservations)),
        ("place(HostStates), free_memory", states, Policy()),
        ("place(HostStates), spread", states, Policy(rank="spread")),
        ("place(HostStates), pack", states, Policy(rank="pack")),
        ("place(HostStates), 200 reservations", states, Policy(reservations=reservations)),
    ]:
        result = place(hs, request, policy)
        ms = best_ms(lambda hs=hs, policy=policy: place(hs, request, policy))
        rows.append((label, ms))
        print(f"  {label:<37} {ms:8.2f} ms  -> {result.host} "
              f"({len(result.ranked)} fit, {len(result.excluded)} excluded)")

    worst = max(ms for _, ms in rows)
    verdict = "OK" if worst < TARGET_MS else "OVER TARGET"
    print(f"  worst case {worst:.2f} ms per placement (target < {TARGET_MS:g} ms): {verdict}")


if __name__ == "__main__":
    main()
