"""saltvirt.placement (filters, ranks, reasons) and saltvirt.placement.reservations (locked, concurrent)."""

import json
import multiprocessing
import os
import time

import pytest

from saltvirt import fileio
from saltvirt import placement as placement_mod
from saltvirt.errors import InvalidArgument, VirtError
from saltvirt.placement import (
    HostState,
    NoHostFits,
    Placement,
    Policy,
    Request,
    fits_nowhere_message,
    place,
)
from saltvirt.placement import reservations as reservations_mod
from saltvirt.placement.reservations import Reservations, place_and_reserve


def vm(name, cpu=1, memory=1024, state="running"):
    return {"name": name, "cpu": cpu, "memory": memory, "state": state}


def host(hid, cpus=8, memory_total=16384, disk_free=100_000, vms=(), bridges=("br0",), **extra):
    record = {
        "id": hid,
        "cpus": cpus,
        "memory_total": memory_total,
        "disk_free": disk_free,
        "vms": list(vms),
        "bridges": list(bridges),
        "networks": ["default"],
        "up": True,
    }
    record.update(extra)
    return record


REQ = Request("new", cpu=2, memory_mib=2048)


# ------------------------------------------------------------------------------ happy path


def test_places_on_the_only_host_and_explains():
    result = place([host("hypervisor1")], REQ)
    assert isinstance(result, Placement)
    assert result.host == "hypervisor1"
    assert result.require() == "hypervisor1"
    assert result  # truthy when placed
    assert result.excluded == {}
    # 16384 - 256 reserve - 2048 request
    assert result.ranked == [("hypervisor1", 14080)]
    explained = result.explain()
    json.dumps(explained)  # JSON-friendly
    assert explained["host"] == "hypervisor1"
    assert explained["vm"] == "new"
    assert explained["ranked"][0] == {
        "host": "hypervisor1",
        "score": 14080,
        "free_memory_mib": 14080,
        "vcpus_left": 30.0,
        "disk_free_mib": 100_000,
        "vms": 0,
    }
    assert explained["message"] is None


def test_accepts_host_states_and_minion_mapping():
    states = [HostState.from_dict(host("a")), HostState.from_dict(host("b", memory_total=32768))]
    assert place(states, REQ).host == "b"
    mapping = {"a": host("a"), "b": {k: v for k, v in host("b").items() if k != "id"}}
    result = place(mapping, REQ)
    assert set(dict(result.ranked)) == {"a", "b"}


def test_request_and_policy_as_mappings():
    result = place(
        [host("a"), host("b", vms=[vm("x")])],
        {"name": "new", "cpu": 1, "memory": 512, "disk": 10},
        {"rank": "spread"},
    )
    assert result.host == "a"
    assert result.request == Request("new", 1, 512, 10)
    assert result.policy.rank == "spread"


# ------------------------------------------------------------------------------ filters


def test_memory_filter_reason_counts_vms_and_reservations():
    h = host("hypervisor1", memory_total=8192,
             vms=[vm("a", memory=2000), vm("b", memory=2000), vm("c", memory=2000)])
    policy = Policy(reservations={"hypervisor1": [{"name": "r1", "cpu": 1, "memory": 400,
                                                   "disk": 0}]})
    result = place([h], REQ, policy)
    assert result.host is None
    # 8192 - 256 - 3*2000 - 400 = 1536
    assert result.excluded["hypervisor1"] == (
        "hypervisor1: needs 2048 MiB memory, 1536 MiB free after 3 VMs and 1 reservation "
        "(of 8192 MiB, 256 MiB kept for the host)"
    )
    assert result.limits["hypervisor1"] == ("memory",)


def test_memory_exact_fit_is_allowed():
    h = host("h", memory_total=2048 + 256 + 1000, vms=[vm("a", memory=1000)])
    assert place([h], REQ).host == "h"
    h = host("h", memory_total=2048 + 256 + 1000 - 1, vms=[vm("a", memory=1000)])
    assert place([h], REQ).excluded["h"].startswith("h: needs 2048 MiB memory, 2047 MiB free")


def test_memory_overcommitted_host_says_so():
    h = host("h", memory_total=4096, vms=[vm("a", memory=5000)])
    reason = place([h], REQ).excluded["h"]
    assert "none free (over-committed by 1160 MiB) after 1 VM" in reason


def test_memory_reported_by_host_is_used_when_lower():
    h = host("h", memory_total=16384, memory_free=2000, vms=[vm("a", memory=1024)])
    result = place([h], REQ)
    assert result.excluded["h"] == (
        "h: needs 2048 MiB memory, 1744 MiB free by the host's own count "
        "(2000 MiB reported free, less 256 MiB kept for the host)"
    )
    # reservations are subtracted from the host's view too
    h = host("h", memory_total=16384, memory_free=5000)
    policy = Policy(reservations={"h": [{"name": "r", "cpu": 1, "memory": 3000, "disk": 0}]})
    reason = place([h], REQ, policy).excluded["h"]
    assert "1744 MiB free by the host's own count" in reason
    assert "less 256 MiB kept for the host and 3000 MiB for 1 reservation" in reason


def test_memory_reported_by_host_ignored_when_higher():
    # bookkeeping (shut-off VM counted) is stricter than what the host sees as free
    h = host("h", memory_total=8192, memory_free=8000, vms=[vm("a", memory=6000, state="shutoff")])
    reason = place([h], REQ).excluded["h"]
    assert reason == ("h: needs 2048 MiB memory, 1936 MiB free after 1 VM "
                      "(of 8192 MiB, 256 MiB kept for the host)")
    result = place([host("h", memory_free=10_000)], REQ)
    assert result.ranked == [("h", 10_000 - 256 - 2048)]


def test_memory_ratio_overcommits_memory():
    h = host("h", memory_total=4096, vms=[vm("a", memory=3000)])
    assert place([h], REQ).host is None
    result = place([h], REQ, Policy(memory_ratio=1.5))
    assert result.host == "h"
    assert result.ranked == [("h", 6144 - 256 - 3000 - 2048)]
    reason = place([h], Request("big", 1, 4000), Policy(memory_ratio=1.5)).excluded["h"]
    assert "(of 4096 MiB x 1.5, 256 MiB kept for the host)" in reason


def test_reserve_memory_is_configurable():
    h = host("h", memory_total=2048)
    assert place([h], REQ).host is None
    assert place([h], REQ, Policy(reserve_memory_mib=0)).host == "h"


def test_vcpu_filter_reason_and_exact_fit():
    h = host("hypervisor1", cpus=2, vms=[vm("a", cpu=4), vm("b", cpu=2)])
    result = place([h], Request("new", cpu=4, memory_mib=512))
    assert result.excluded["hypervisor1"] == (
        "hypervisor1: needs 4 vCPUs, 2 of 8 left (2 CPUs x 4) after 2 VMs"
    )
    assert result.limits["hypervisor1"] == ("vcpu",)
    assert place([h], Request("new", cpu=2, memory_mib=512)).host == "hypervisor1"
    # a tighter ratio, with a reservation
    policy = Policy(cpu_ratio=1.0, reservations={"hypervisor1": [{"name": "r", "cpu": 1}]})
    h = host("hypervisor1", cpus=4, vms=[vm("a", cpu=2)])
    reason = place([h], Request("new", cpu=2, memory_mib=512), policy).excluded["hypervisor1"]
    assert reason == "hypervisor1: needs 2 vCPUs, 1 of 4 left (4 CPUs x 1) after 1 VM and " \
                     "1 reservation"


def test_disk_filter():
    h = host("hypervisor1", disk_free=5120)
    req = Request("new", 1, 512, disk_mib=10240)
    assert place([h], req).excluded["hypervisor1"] == (
        "hypervisor1: needs 10240 MiB disk, 5120 MiB free in the images dir"
    )
    policy = Policy(reservations={"hypervisor1": [{"name": "r", "cpu": 1, "memory": 1,
                                                   "disk": 5000}]})
    req = Request("new", 1, 512, disk_mib=1000)
    assert place([h], req, policy).excluded["hypervisor1"] == (
        "hypervisor1: needs 1000 MiB disk, 120 MiB free in the images dir after 1 reservation"
    )
    assert place([h], Request("new", 1, 512, disk_mib=5120)).host == "hypervisor1"


def test_disk_not_reported():
    h = host("h")
    del h["disk_free"]
    assert place([h], Request("new", 1, 512)).host == "h"
    reason = place([h], Request("new", 1, 512, disk_mib=1)).excluded["h"]
    assert reason == "h: needs 1 MiB disk, free space in the images dir not reported"


def test_bridge_filter():
    hosts = [host("a", bridges=["br0"]), host("b", bridges=["br0", "br1"])]
    req = Request("new", 1, 512, bridges=("br0", "br1"))
    result = place(hosts, req)
    assert result.host == "b"
    assert result.excluded == {"a": "a: needs bridge br1, not on this host (has: br0)"}
    assert result.limits == {"a": ("bridge",)}
    bare = place([host("c", bridges=[])], Request("new", 1, 512, bridges="br0"))
    assert bare.excluded["c"] == "c: needs bridge br0, not on this host (has: none)"


def test_down_hosts():
    hosts = [{"id": "a", "up": False}, host("b")]
    result = place(hosts, REQ)
    assert result.host == "b"
    assert result.excluded == {"a": "a: down (not answering)"}
    assert result.limits == {"a": ("down",)}
    # Salt's "did not answer" string in a {minion: return} mapping
    result = place({"a": "Minion did not return. [No response]", "b": host("b")}, REQ)
    assert result.host == "b"
    assert result.excluded["a"].startswith("a: down (did not answer: ")
    assert result.limits["a"] == ("down",)


def test_exclude_by_request():
    hosts = [host("a", memory_total=65536), host("b")]
    result = place(hosts, Request("mig", 1, 512, exclude=["a"]))
    assert result.host == "b"
    assert result.excluded == {"a": "a: excluded by request"}
    assert result.limits == {"a": ("excluded",)}
    result = place(hosts, Request("mig", 1, 512, exclude="b"))  # a bare string is one name
    assert result.host == "a"


def test_cordoned_hosts_take_nothing_and_say_why():
    hosts = [host("a", memory_total=65536, cordoned="drain (since 2026-12-01 00:40:44 UTC)"), host("b")]
    result = place(hosts, REQ)
    assert result.host == "b"
    assert result.excluded == {"a": "a: cordoned: drain (since 2026-12-01 00:40:44 UTC) "
                                    "(salt-run virt.uncordon a lifts it)"}
    assert result.limits == {"a": ("cordoned",)}
    # the only host cordoned: nothing fits, and the message names the cordon
    result = place([hosts[0]], REQ)
    assert result.host is None and "cordoned on a" in fits_nowhere_message(result)
    # no cordon (None or missing) is no filter
    assert place([host("a", cordoned=None)], REQ).host == "a"


def test_unusable_record_excludes_that_host_only():
    bad = host("a")
    bad["memory_total"] = "lots"
    result = place([bad, host("b")], REQ)
    assert result.host == "b"
    assert result.limits["a"] == ("record",)
    assert result.excluded["a"].startswith("a: unusable host record: a: memory_total must be")
    bad_vm = host("c", vms=[{"name": "x", "cpu": 1}])
    result = place([bad_vm], REQ)
    assert "VM 'x': memory missing" in result.excluded["c"]
    with pytest.raises(InvalidArgument, match="without a usable id"):
        place([{"cpus": 4}], REQ)


def test_duplicate_host_ids_rejected():
    with pytest.raises(InvalidArgument, match="listed more than once"):
        place([host("a"), host("a")], REQ)


def test_all_failed_limits_in_one_reason():
    h = host("h", cpus=1, memory_total=1024, disk_free=10, bridges=[])
    result = place([h], Request("new", 8, 4096, disk_mib=100, bridges=["br9"]))
    assert result.limits["h"] == ("memory", "vcpu", "disk", "bridge")
    reason = result.excluded["h"]
    assert reason.startswith("h: needs 4096 MiB memory, 768 MiB free after 0 VMs")
    assert reason.count("; ") == 3
    assert reason.count("h: ") == 1


def test_shutoff_vms_counted_unless_policy_says_not():
    h = host("h", cpus=8, memory_total=4096,
             vms=[vm("on", cpu=1, memory=1024), vm("off", cpu=3, memory=1024, state="shutoff")])
    result = place([h], REQ)
    assert result.limits["h"] == ("memory",)
    assert "after 2 VMs" in result.excluded["h"]
    relaxed = place([h], REQ, Policy(count_shutoff=False))
    assert relaxed.host == "h"
    assert relaxed.ranked == [("h", 4096 - 256 - 1024 - 2048)]
    assert relaxed.fits["h"].vms == 1
    # vCPUs of a stopped VM claim the over-commit budget too (1 CPU x 4 = 4 vCPUs)
    h = host("h", cpus=1, vms=[vm("on", cpu=1), vm("off", cpu=3, state="shutoff")])
    req = Request("new", cpu=1, memory_mib=100)
    assert place([h], req).limits["h"] == ("vcpu",)
    assert place([h], req, Policy(count_shutoff=False)).host == "h"


def test_reservations_counted_like_vms():
    hosts = [host("a", memory_total=8192), host("b", memory_total=6144)]
    assert place(hosts, REQ).host == "a"
    policy = Policy(reservations={"a": [{"name": "r1", "cpu": 2, "memory": 4096, "disk": 0}]})
    result = place(hosts, REQ, policy)
    assert result.host == "b"
    assert result.fits["a"].vms == 1
    assert result.ranked == [("b", 6144 - 256 - 2048), ("a", 8192 - 256 - 4096 - 2048)]


def test_reservation_not_double_counted_once_vm_is_defined():
    h = host("a", memory_total=4096, vms=[vm("r1", memory=1500)])
    policy = Policy(reservations={"a": [{"name": "r1", "cpu": 1, "memory": 1500, "disk": 0}]})
    result = place([h], REQ, policy)
    assert result.host == "a"
    assert result.fits["a"].vms == 1
    # a reservation for the very VM being placed does not count against it
    policy = Policy(reservations={"a": [{"name": "new", "cpu": 1, "memory": 3000, "disk": 0}]})
    assert place([host("a", memory_total=4096)], REQ, policy).host == "a"


def test_reservations_for_unknown_hosts_ignored_and_bad_ones_rejected():
    policy = Policy(reservations={"zzz": [{"name": "x", "cpu": 1, "memory": 99999}]})
    assert place([host("a")], REQ, policy).host == "a"
    with pytest.raises(InvalidArgument, match="reservation 'x': memory must be"):
        place([host("a")], REQ, Policy(reservations={"a": [{"name": "x", "memory": -1}]}))


# ------------------------------------------------------------------------------ ranking


def test_rank_free_memory_default():
    hosts = [host("a", memory_total=8192), host("b", memory_total=32768),
             host("c", memory_total=16384, vms=[vm("x", memory=4096)])]
    result = place(hosts, REQ)
    assert result.host == "b"
    assert [h for h, _ in result.ranked] == ["b", "c", "a"]
    assert result.ranked[0] == ("b", 32768 - 256 - 2048)


def test_rank_spread_fewest_vms_then_free_memory():
    hosts = [
        host("a", memory_total=65536, vms=[vm("x"), vm("y")]),
        host("b", memory_total=8192, vms=[vm("z")]),
        host("c", memory_total=16384, vms=[vm("w")]),
        host("d", memory_total=4096),
    ]
    result = place(hosts, REQ, Policy(rank="spread"))
    assert [h for h, _ in result.ranked] == ["d", "c", "b", "a"]
    assert result.ranked == [("d", 0), ("c", 1), ("b", 1), ("a", 2)]
    # reservations count as VMs for spreading
    policy = Policy(rank="spread", reservations={"d": [{"name": "r", "cpu": 1, "memory": 1},
                                                       {"name": "s", "cpu": 1, "memory": 1}]})
    # d now has 2 (reserved) like a, and a has more free memory
    assert [h for h, _ in place(hosts, REQ, policy).ranked] == ["c", "b", "a", "d"]


def test_rank_pack_least_free_memory_that_fits():
    hosts = [
        host("a", memory_total=65536),
        host("b", memory_total=4096),  # 4096-256-2048 = 1792 left
        host("c", memory_total=2048),  # does not fit
        host("d", memory_total=8192),
    ]
    result = place(hosts, REQ, Policy(rank="pack"))
    assert result.host == "b"
    assert [h for h, _ in result.ranked] == ["b", "d", "a"]
    assert "c" in result.excluded


@pytest.mark.parametrize("rank", ["free_memory", "spread", "pack"])
def test_ties_broken_by_host_id(rank):
    hosts = [host(h) for h in ("hv3", "hv1", "hv2")]
    result = place(hosts, REQ, Policy(rank=rank))
    assert [h for h, _ in result.ranked] == ["hv1", "hv2", "hv3"]
    assert result.host == "hv1"
    # input order does not matter
    assert place(list(reversed(hosts)), REQ, Policy(rank=rank)).ranked == result.ranked


def test_explain_top_limits_ranked_list():
    hosts = [host(f"h{i:02d}", memory_total=8192 + i) for i in range(30)]
    explained = place(hosts, REQ).explain()
    assert len(explained["ranked"]) == 10
    assert explained["candidates"] == 30
    assert explained["ranked"][0]["host"] == "h29"
    assert len(place(hosts, REQ).explain(top=None)["ranked"]) == 30


# ------------------------------------------------------------------------------ nothing fits


def test_no_host_fits_message_and_exception():
    hosts = [
        host("hypervisor1", memory_total=2048),
        host("hypervisor2", cpus=1, vms=[vm("a", cpu=4)]),
        {"id": "hypervisor3", "up": False},
    ]
    result = place(hosts, REQ)
    assert result.host is None
    assert not result
    message = fits_nowhere_message(result, REQ)
    first, *details = message.splitlines()
    assert first == (
        "no hypervisor can take new (2 vCPUs, 2048 MiB memory): down on hypervisor3; "
        "not enough memory on hypervisor1; vCPU over-commit on hypervisor2"
    )
    assert details == [result.excluded[h] for h in ("hypervisor1", "hypervisor2", "hypervisor3")]
    with pytest.raises(NoHostFits) as info:
        result.require()
    assert isinstance(info.value, InvalidArgument)
    assert str(info.value) == message
    assert info.value.excluded == result.excluded
    assert info.value.limits["hypervisor2"] == ("vcpu",)
    assert result.explain()["message"] == message


def test_no_hosts_at_all():
    result = place([], REQ)
    assert result.host is None
    assert "no hosts known" in fits_nowhere_message(result)


def test_long_failure_lists_are_truncated_in_the_message():
    hosts = [host(f"h{i:03d}", memory_total=1024) for i in range(50)]
    message = fits_nowhere_message(place(hosts, REQ))
    assert "not enough memory on h000, h001" in message
    assert "and 42 more" in message
    assert message.splitlines()[-1] == "... and 30 more hosts excluded"


# ------------------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(name="", cpu=1, memory_mib=1), "VM name must be a non-empty string"),
        (dict(name="v", cpu=0, memory_mib=1), "v: cpu must be a whole number of vCPUs >= 1, got 0"),
        (dict(name="v", cpu=1.5, memory_mib=1), "cpu must be a whole number"),
        (dict(name="v", cpu=True, memory_mib=1), "cpu must be a whole number"),
        (dict(name="v", cpu="2", memory_mib=1), "cpu must be a whole number"),
        (dict(name="v", cpu=1, memory_mib=0), "v: memory must be a whole number of MiB > 0, got 0"),
        (dict(name="v", cpu=1, memory_mib=-5), "memory must be a whole number of MiB > 0"),
        (dict(name="v", cpu=1, memory_mib=None), "memory must be a whole number of MiB > 0"),
        (dict(name="v", cpu=1, memory_mib=1, disk_mib=-1), "disk must be a whole number"),
        (dict(name="v", cpu=1, memory_mib=1, bridges=[""]), "bridges must be a list"),
    ],
)
def test_bad_requests(kwargs, match):
    with pytest.raises(InvalidArgument, match=match):
        Request(**kwargs)


def test_bad_request_mapping():
    with pytest.raises(InvalidArgument, match="memory must be"):
        place([host("a")], {"name": "v", "cpu": 1})
    with pytest.raises(InvalidArgument, match="must be a mapping"):
        Request.from_dict(["v", 1, 1])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(rank="random"), "rank must be one of free_memory, spread, pack"),
        (dict(cpu_ratio=0), "cpu_ratio must be a number > 0"),
        (dict(memory_ratio=-1), "memory_ratio must be a number > 0"),
        (dict(reserve_memory_mib=-1), "reserve_memory_mib must be"),
        (dict(reservations=[]), "reservations must be a mapping"),
    ],
)
def test_bad_policies(kwargs, match):
    with pytest.raises(InvalidArgument, match=match):
        Policy(**kwargs)


def test_policy_from_dict_rejects_unknown_keys():
    assert Policy.from_dict({"rank": "pack", "cpu_ratio": 2}) == Policy(rank="pack", cpu_ratio=2)
    assert Policy.from_dict(None) == Policy()
    with pytest.raises(InvalidArgument, match="unknown placement policy key.*cpu_ration"):
        Policy.from_dict({"cpu_ration": 2})


def test_host_state_sums_precomputed():
    state = HostState.from_dict(host("h", vms=[vm("a", 2, 1000), vm("b", 3, 500, "shutoff")]))
    assert state.vm_count == (2, 1)
    assert state.vcpu_sum == (5, 2)
    assert state.memory_sum == (1500, 1000)
    assert state.vm_names == {"a", "b"}
    assert HostState.from_dict({"id": "x", "up": False}).up is False
    with pytest.raises(InvalidArgument, match="cpus must be >= 1"):
        HostState.from_dict(host("h", cpus=0))


# ------------------------------------------------------------------------------ reservations


class FakeClock:
    def __init__(self, now=1_000_000.0):
        self.now = now

    def __call__(self):
        return self.now


def test_reserve_release_and_listing(tmp_path):
    book = Reservations(tmp_path / "res")
    entry = book.reserve("a", "vm1", 2, 2048, 100)
    assert entry["host"] == "a" and entry["memory"] == 2048
    book.reserve("b", "vm2", 1, 512)
    assert book.by_host() == {
        "a": [dict(entry)],
        "b": [book.entries()[1]],
    }
    with pytest.raises(InvalidArgument, match="vm1 is already being created on a"):
        book.reserve("b", "vm1", 1, 1)
    assert book.release("vm1") is True
    assert book.release("vm1") is False
    assert [e["name"] for e in book.entries()] == ["vm2"]
    on_disk = json.loads((tmp_path / "res" / "reservations.json").read_text())
    assert on_disk["version"] == 1
    assert [e["name"] for e in on_disk["reservations"]] == ["vm2"]


def test_reservations_expire(tmp_path):
    clock = FakeClock()
    book = Reservations(tmp_path, ttl=900, clock=clock)
    book.reserve("a", "old", 1, 1)
    clock.now += 600
    book.reserve("a", "newer", 1, 1)
    clock.now += 301
    assert [e["name"] for e in book.entries()] == ["newer"]
    # the expired one is gone from the file, and its name is free again
    book.reserve("a", "old", 1, 1)


def _reserve_in_child(directory, name, owned, ready):
    book = Reservations(directory)
    book.place_and_reserve([host("a")], Request(name, 1, 512), owned=owned)
    ready.set()


def test_owned_reservations_end_with_their_process(tmp_path):
    """A migration's reservation (owned) goes when its runner is killed; an init's stays
    (virt.reconcile needs it) until it expires."""
    ctx = multiprocessing.get_context("fork")
    for name, owned in (("mig@migrate-1", True), ("init-vm", False)):
        ready = ctx.Event()
        child = ctx.Process(target=_reserve_in_child, args=(tmp_path, name, owned, ready))
        child.start()
        assert ready.wait(10)
        child.join()
    book = Reservations(tmp_path)
    assert [e["name"] for e in book.entries()] == ["init-vm"]
    # while its process runs, an owned reservation counts like any other
    book.place_and_reserve([host("a")], Request("mine@migrate-2", 1, 512), owned=True)
    assert sorted(e["name"] for e in book.entries()) == ["init-vm", "mine@migrate-2"]


def test_finish_keeps_entry_only_for_linger(tmp_path):
    clock = FakeClock()
    book = Reservations(tmp_path, clock=clock)
    book.reserve("a", "vm1", 1, 1)
    assert book.finish("vm1", linger=60) is True
    clock.now += 59
    assert [e["name"] for e in book.entries()] == ["vm1"]
    clock.now += 2
    assert book.entries() == []
    assert book.finish("vm1") is False


def test_hold_releases_on_error_and_finishes_on_success(tmp_path):
    clock = FakeClock()
    book = Reservations(tmp_path, clock=clock)
    with pytest.raises(RuntimeError):
        with book.hold("a", "vm1", 1, 1):
            assert [e["name"] for e in book.entries()] == ["vm1"]
            raise RuntimeError("define failed")
    assert book.entries() == []
    with book.hold("a", "vm1", 1, 1, linger=30):
        pass
    (entry,) = book.entries()
    assert entry["expires"] == clock.now + 30


def test_corrupt_file_is_reported(tmp_path):
    (tmp_path / "reservations.json").write_text("{not json")
    with pytest.raises(VirtError, match="cannot read reservations file"):
        Reservations(tmp_path).entries()
    (tmp_path / "reservations.json").write_text("[]")
    with pytest.raises(VirtError, match="not in the expected format"):
        Reservations(tmp_path).entries()


def test_place_and_reserve_records_and_counts(tmp_path):
    hosts = [host("a", memory_total=4096), host("b", memory_total=4096 + 100)]
    first = place_and_reserve(tmp_path, hosts, REQ)
    assert first.host == "b"
    (entry,) = Reservations(tmp_path).entries()
    assert (entry["host"], entry["name"], entry["cpu"], entry["memory"], entry["disk"]) == (
        "b", "new", 2, 2048, 0)
    second = place_and_reserve(tmp_path, hosts, Request("new2", 2, 2048))
    assert second.host == "a"
    with pytest.raises(NoHostFits) as info:
        place_and_reserve(tmp_path, hosts, Request("new3", 2, 2048))
    assert "after 0 VMs and 1 reservation" in info.value.excluded["a"]
    assert len(Reservations(tmp_path).entries()) == 2  # nothing recorded for the failure
    with pytest.raises(InvalidArgument, match="new is already being created on b"):
        place_and_reserve(tmp_path, hosts, REQ)


def test_place_and_reserve_merges_policy_reservations(tmp_path):
    hosts = [host("a", memory_total=4096)]
    policy = Policy(reservations={"a": [{"name": "elsewhere", "cpu": 1, "memory": 2000}]})
    with pytest.raises(NoHostFits):
        place_and_reserve(tmp_path, hosts, REQ, policy)


def test_placed_context_manager(tmp_path):
    clock = FakeClock()
    book = Reservations(tmp_path, clock=clock)
    hosts = [host("a", memory_total=4096)]
    with pytest.raises(RuntimeError):
        with book.placed(hosts, REQ) as result:
            assert result.host == "a"
            raise RuntimeError("boom")
    assert book.entries() == []
    with book.placed(hosts, REQ, linger=10) as result:
        assert result.host == "a"
    assert book.entries()[0]["expires"] == clock.now + 10


# ------------------------------------------------------------------------------ concurrency

WORKERS = 20


def _slow_place(*args, **kwargs):
    # widen the read-place-write window so that a missing lock would surely be caught
    result = placement_mod.place(*args, **kwargs)
    time.sleep(0.02)
    return result


def _worker(directory, hosts, index, barrier, results):
    barrier.wait(timeout=30)
    try:
        result = place_and_reserve(directory, hosts, Request(f"vm{index:02d}", 1, 1024))
        results.put((index, result.host, None))
    except NoHostFits:
        results.put((index, None, "NoHostFits"))
    except Exception as exc:  # pragma: no cover - reported by the assertion below
        results.put((index, None, f"{type(exc).__name__}: {exc}"))


def _race(directory, hosts):
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(WORKERS)
    results = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(directory, hosts, i, barrier, results))
             for i in range(WORKERS)]
    for proc in procs:
        proc.start()
    outcomes = [results.get(timeout=60) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)
    return outcomes


def _room_for_five():
    # 1024 MiB VMs: "a" fits 3 (3*1024 + 256 <= 3400 < 4*1024 + 256), "b" fits 2, "c" fits none
    return [
        host("a", memory_total=3400),
        host("b", memory_total=2400),
        host("c", memory_total=1200),
        {"id": "d", "up": False},
    ]


def test_concurrent_place_and_reserve_never_overcommits(tmp_path, monkeypatch):
    monkeypatch.setattr(reservations_mod, "place", _slow_place)
    outcomes = _race(str(tmp_path), _room_for_five())
    errors = [o for o in outcomes if o[2] not in (None, "NoHostFits")]
    assert errors == []
    placed = [o for o in outcomes if o[1] is not None]
    refused = [o for o in outcomes if o[2] == "NoHostFits"]
    assert len(placed) == 5
    assert len(refused) == WORKERS - 5
    per_host = {}
    for _, hid, _ in placed:
        per_host[hid] = per_host.get(hid, 0) + 1
    assert per_host == {"a": 3, "b": 2}
    entries = Reservations(str(tmp_path)).entries()
    assert sorted(e["name"] for e in entries) == sorted(f"vm{i:02d}" for i, _, _ in placed)


def test_concurrency_test_would_catch_a_missing_lock(tmp_path, monkeypatch):
    """Control: with the lock disabled the same race over-commits, so the test above means it."""
    import contextlib

    monkeypatch.setattr(reservations_mod, "place", _slow_place)
    monkeypatch.setattr(Reservations, "_lock", lambda self: contextlib.nullcontext())
    outcomes = _race(str(tmp_path), _room_for_five())
    assert len([o for o in outcomes if o[1] is not None]) > 5


def test_reservations_lock_timeout_is_a_clear_error(tmp_path):
    book = Reservations(tmp_path / "res", lock_timeout=0.2)
    os.makedirs(book.directory, exist_ok=True)
    with fileio.locked(book.lock_path):
        with pytest.raises(VirtError, match="could not lock .* within 0.2s"):
            book.reserve("a", "vm1", 1, 512)
    assert book.reserve("a", "vm1", 1, 512)["host"] == "a"
