"""The target side's pre-flight: can this host take the VM? (Nothing is changed on this host.)"""

import os
import socket

from saltvirt.domain import vmops
from saltvirt.errors import VirtError, libvirt_message
from saltvirt.migration.common import MIB, PROBE_PREFIX, libvirt, parse_xml
from saltvirt.migration.facts import host_caps
from saltvirt.migration.storage import storage_plan
from saltvirt.storage import images


def observe_disks(disks, token=None):
    """What this host sees at the source's disk paths (see :func:`storage_plan`)."""
    seen = {}
    for disk in disks:
        path = disk.get("path")
        if not path:
            continue
        obs = {"probe": bool(token and disk.get("dir")
                            and os.path.exists(os.path.join(disk["dir"], PROBE_PREFIX + token))),
               "exists": os.path.exists(path)}
        if obs["exists"] and disk.get("type") == "file":
            obs["size"] = os.path.getsize(path)
        bases = []
        for base in disk.get("backing") or []:
            item = {"path": base["path"], "exists": os.path.isfile(base["path"])}
            if item["exists"]:
                item["size"] = os.path.getsize(base["path"])
                try:
                    item["format"] = images.info(base["path"])["format"]
                except VirtError as exc:
                    item["format"] = None
                    item["error"] = str(exc)
            bases.append(item)
        obs["bases"] = bases
        seen[disk["target"]] = obs
    return seen


def preflight(conn, facts, copy_storage=None, offline=False, unsafe_fs=()):
    """Can this host take the VM described by ``facts`` (from :func:`source_facts`)?

    Returns ``{"ok", "checks": [{check, ok, detail}], "storage": storage_plan(...)}``; nothing
    is changed on this host.
    """
    checks = []
    caps = host_caps(conn)
    _check_domain(conn, facts, caps, offline, checks)
    _check_capacity(conn, facts, offline, checks)
    _check_cpu(conn, facts, checks)
    _check_machine(conn, facts, checks)
    emulator = facts.get("emulator")
    _check(checks, "emulator", not emulator or os.path.exists(emulator),
           f"{emulator} {'present' if not emulator or os.path.exists(emulator) else 'missing'}")
    for nic in facts.get("interfaces") or []:
        _check_nic(conn, nic.get("type"), nic.get("source"), checks)

    token = (facts.get("probe") or {}).get("token")
    seen = observe_disks(facts["disks"], token)
    storage = storage_plan(facts["disks"], seen, copy_storage=copy_storage, offline=offline, unsafe_fs=unsafe_fs)
    _check(checks, "storage", not storage["errors"],
           "; ".join(storage["errors"]) or ", ".join(f"{d['target']}: {d['action']}" for d in storage["disks"]))
    _check_space(storage["create"], checks)
    return {"ok": all(c["ok"] for c in checks), "checks": checks, "storage": storage,
            "host_uuid": caps["host_uuid"]}


def _check_domain(conn, facts, caps, offline, checks):
    """Another host, no domain of that name or UUID here, a VM that can move."""
    name = facts["name"]
    _check(checks, "different host", caps["host_uuid"] != facts.get("host_uuid"),
           f"host uuid {caps['host_uuid']}" + (" is the source's: it is the same host"
                                               if caps["host_uuid"] == facts.get("host_uuid") else ""))
    clash = None
    for dom in conn.listAllDomains(0):
        if dom.name() == name or dom.UUIDString() == facts["uuid"]:
            clash = f"{dom.name()} ({dom.UUIDString()}, {vmops.state(dom)})"
    _check(checks, "name free", clash is None,
           f"a domain already exists here: {clash}" if clash else f"no domain named {name} here")
    _check(checks, "state", facts["active"] or offline,
           f"{name} is {facts['state']}" + ("" if facts["active"] or offline else
                                             ": a live migration needs it running (or offline=True)"))
    _check(checks, "host devices", not facts.get("hostdevs"),
           f"{facts.get('hostdevs')} passed-through host device(s) cannot migrate" if facts.get("hostdevs")
           else "none")


def _check_capacity(conn, facts, offline, checks):
    """Enough CPUs, and (for a live migration) memory both free and not claimed by running VMs."""
    node = vmops.node_info(conn)
    _check(checks, "vcpus", facts["vcpus"] <= node["cpus"],
           f"{facts['vcpus']} vCPU(s) needed, host has {node['cpus']}")
    available = _available_mib(conn)
    unclaimed = vmops.freemem(conn)
    _check(checks, "memory", offline or facts["memory_mib"] <= min(available, unclaimed),
           f"{facts['memory_mib']} MiB needed; {available} MiB available, {unclaimed} MiB not claimed by running VMs")


def _check_nic(conn, kind, source, checks):
    """The bridge, libvirt network or host device a NIC is attached to exists here."""
    if kind == "bridge":
        exists, bridge = _link(source)
        _check(checks, f"bridge {source}", exists and bridge is not False,
               f"bridge {source} " + ("does not exist here" if not exists else
                                      "is not a bridge here" if bridge is False else "exists here"))
    elif kind == "network":
        try:
            active = bool(conn.networkLookupByName(source).isActive())
        except libvirt.libvirtError:
            active = None
        _check(checks, f"network {source}", active,
               f"libvirt network {source} " + {True: "is active", False: "is not active",
                                               None: "does not exist"}[active])
    elif kind == "direct":
        present = _link(source)[0]
        _check(checks, f"device {source}", present,
               f"host device {source} {'exists' if present else 'does not exist'} here")


def _check(checks, name, ok, detail):
    checks.append({"check": name, "ok": bool(ok), "detail": detail})
    return ok


def _existing_parent(path):
    while path and not os.path.isdir(path):
        path = os.path.dirname(path)
    return path or "/"


def _link(name):
    """``(exists, is_bridge)`` of a network device in this network namespace.

    ``if_nametoindex`` asks the kernel in our own namespace; /sys/class/net may be the sysfs of
    another namespace (a hypervisor in a container), so it only decides bridge-ness when its
    ifindex agrees.
    """
    try:
        index = socket.if_nametoindex(name)
    except OSError:
        return False, False
    try:
        with open(f"/sys/class/net/{name}/ifindex") as fh:
            same = int(fh.read().strip()) == index
    except (OSError, ValueError):
        same = False
    return True, (os.path.isdir(f"/sys/class/net/{name}/bridge") if same else None)


def _available_mib(conn):
    """Free memory including page cache (what the kernel can hand to a new QEMU)."""
    try:
        stats = conn.getMemoryStats(libvirt.VIR_NODE_MEMORY_STATS_ALL_CELLS, 0)
        return (stats.get("free", 0) + stats.get("cached", 0) + stats.get("buffers", 0)) // 1024
    except libvirt.libvirtError:
        return conn.getFreeMemory() // MIB


def _check_cpu(conn, facts, checks):
    """The guest CPU must run here; host-passthrough needs the source's host CPU (or more)."""
    names = {0: "incompatible", 1: "identical", 2: "a superset"}
    try:
        if facts.get("cpu_mode") == "host-passthrough":
            result = conn.compareCPU(facts["host_cpu_xml"], 0)
            _check(checks, "cpu", result in (1, 2),
                   f"guest uses host-passthrough: this host's CPU is {names.get(result, 'unknown')} "
                   "compared with the source's")
        elif facts.get("cpu_xml") and facts.get("cpu_mode") in ("custom", "host-model"):
            result = conn.compareHypervisorCPU(facts.get("emulator"), facts.get("arch"), facts.get("machine"),
                                               facts.get("type"), facts["cpu_xml"], 0)
            _check(checks, "cpu", result in (1, 2),
                   f"guest CPU is {names.get(result, 'unknown')} for this hypervisor")
        else:
            _check(checks, "cpu", True, "guest uses the hypervisor's default CPU")
    except libvirt.libvirtError as exc:
        _check(checks, "cpu", False, f"CPU comparison failed: {libvirt_message(exc)}")


def _check_machine(conn, facts, checks):
    caps = parse_xml(conn.getCapabilities())
    machines, types = set(), set()
    for guest in caps.findall("guest"):
        arch = guest.find("arch")
        if arch is None or arch.get("name") != facts.get("arch"):
            continue
        for elem in arch.iter("machine"):
            machines.add((elem.text or "").strip())
            if elem.get("canonical"):
                machines.add(elem.get("canonical"))
        types.update(d.get("type") for d in arch.findall("domain"))
    machine, kind = facts.get("machine"), facts.get("type")
    _check(checks, "machine type", not machine or machine in machines,
           f"{facts.get('arch')} machine {machine} {'supported' if machine in machines else 'not supported'} here")
    _check(checks, "domain type", not kind or kind in types,
           f"domain type {kind} {'supported' if kind in types else 'not supported'} here")


def _check_space(create, checks):
    need = {}
    for item in create:
        where = _existing_parent(os.path.dirname(item["path"]))
        dev = os.stat(where).st_dev
        bytes_needed = item.get("size") if item["kind"] == "fetch" else item.get("allocation")
        if item["kind"] == "blank" and item.get("virtual_size"):
            bytes_needed = min(bytes_needed or 0, item["virtual_size"])
        entry = need.setdefault(dev, [where, 0])
        entry[1] += bytes_needed or 0
    for where, total in need.values():
        free = images.free_space_mib(where)
        total_mib = -(-total // MIB)  # rounded up: 900 KiB do not fit in 0 MiB
        _check(checks, f"space in {where}", total_mib <= free,
               f"about {total_mib} MiB needed for copied disks, {free} MiB free")
