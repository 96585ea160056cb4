"""Live migration of a domain to another hypervisor, without ever losing the VM.

The pieces run where their files are: the source host describes the domain and its disks
(:func:`source_facts`) and finally migrates it (:func:`migrate`); the target host checks it can
take the VM (:func:`preflight`), pre-creates the disks that are not on shared storage
(:func:`prepare_disks`) and removes them again if the migration fails (:func:`cleanup`). The Salt
runner orchestrates the steps between the two minions.

Shared or not is detected, never guessed: the source drops a probe file next to each disk and
the target looks for it. A disk whose directory shows the probe is the same file on both hosts
(shared storage); any other disk is copied by QEMU during the migration (libvirt's
copy-storage), into a file the target pre-created with the same format and virtual size. A
qcow2 overlay is copied incrementally on top of its base image, which must then already be on
the target at the same path. Read-only disks (seed ISOs, install media) cannot be copied by
QEMU: the target downloads them from the source's libvirt (a storage stream over its TLS
connection) before the migration starts.

libvirt itself guarantees that a failed live migration leaves the domain running on the source;
this module adds the rest: nothing it created on the target survives a failure (a journal per
migration lists it) and files used by a defined domain are never removed.
"""

import contextlib
import json
import os
import secrets
import socket
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from saltvirt import connection
from saltvirt.domain import vmops
from saltvirt.errors import InvalidArgument, NotFound, VirtError, install_hint
from saltvirt.storage import images

try:
    import libvirt
except ImportError:
    libvirt = None

COPY_MODES = ("all", "inc")
PROBE_PREFIX = ".saltvirt-migrate-probe-"
MIB = 1024 * 1024

# Typed parameter names of virDomainMigrate3 (libvirt's VIR_MIGRATE_PARAM_* values).
PARAM_BANDWIDTH = "bandwidth"
PARAM_URI = "migrate_uri"
PARAM_DISKS = "migrate_disks"
PARAM_PARALLEL = "parallel.connections"

# virDomainRunningReason / virDomainPausedReason values we look for.
RUNNING_MIGRATED = 2
PAUSED_MIGRATION = 2
PAUSED_POSTCOPY = 12
PAUSED_POSTCOPY_FAILED = 13

# Filesystems that are shared between machines (libvirt checks their cache modes itself). A
# directory shared by two hosts on a local filesystem is one kernel's filesystem seen from two
# mount namespaces: its page cache is coherent, so libvirt's "unsafe" refusal does not apply and
# VIR_MIGRATE_UNSAFE is right. Any other filesystem is refused unless the operator names it in
# virt:migration:unsafe_fs.
LOCAL_FS = frozenset({"ext2", "ext3", "ext4", "xfs", "btrfs", "f2fs", "jfs", "tmpfs", "zfs"})
NETWORK_FS = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "gfs2", "ocfs2", "ceph", "glusterfs",
    "fuse.glusterfs", "beegfs", "gpfs", "lustre", "fuse.quobyte", "afs", "9p", "virtiofs",
})


class MigrationFailed(VirtError):
    """The migration did not happen. ``source_state`` is the domain's state on the source after it."""

    def __init__(self, message, source_state=None, phase=None):
        self.source_state = source_state
        self.phase = phase
        super().__init__(message)


def _err(exc):
    return exc.get_error_message() if hasattr(exc, "get_error_message") else str(exc)


# --------------------------------------------------------------------------------------------
# flags and parameters (pure)


@dataclass
class Plan:
    """How libvirt is asked to migrate: flag names (``VIR_MIGRATE_`` + name), typed params."""

    flags: list
    params: dict
    mode: str  # peer2peer | peer2peer+tls | tunnelled | direct | direct+tls
    peer2peer: bool
    copy_storage: object = None
    notes: list = field(default_factory=list)

    def flag_value(self):
        if libvirt is None:
            raise VirtError(f"libvirt-python is not installed; {install_hint('libvirt-python')}")
        value = 0
        for name in self.flags:
            value |= getattr(libvirt, f"VIR_MIGRATE_{name}")
        return value

    def to_dict(self):
        return {
            "flags": list(self.flags),
            "params": dict(self.params),
            "mode": self.mode,
            "copy_storage": self.copy_storage,
            "notes": list(self.notes),
        }


def _positive_int(value, what):
    if isinstance(value, bool):
        raise InvalidArgument(f"{what} must be a positive integer, not {value!r}")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise InvalidArgument(f"{what} must be a positive integer, not {value!r}") from None
    if number <= 0 or str(number) != str(value).strip():
        raise InvalidArgument(f"{what} must be a positive integer, not {value!r}")
    return number


def plan(*, live=True, offline=False, persistent=True, undefinesource=True, copy_storage=None,
         migrate_disks=None, max_bandwidth=None, postcopy=False, auto_converge=False,
         compressed=False, parallel_connections=None, tunnel=False, tls=False, unsafe=False,
         migration_uri=None, peer2peer=True):
    """Turn migration options into a :class:`Plan` (flag names and typed parameters).

    ``tunnel`` sends everything through the libvirt daemons' TLS connection (port 16514):
    peer-to-peer + tunnelled. libvirt 9.0 cannot combine that with copy-storage, so a tunnelled
    migration that copies disks uses peer-to-peer + TLS instead (QEMU's own TLS streams: the
    memory and the disks are still encrypted) and says so in ``notes``.
    """
    flags, params, notes = [], {}, []
    if copy_storage not in (None,) + COPY_MODES:
        raise InvalidArgument(f"copy_storage must be 'all', 'inc' or None, not {copy_storage!r}")
    if offline:
        if copy_storage:
            raise InvalidArgument(
                "an offline migration only moves the definition and cannot copy disks: start "
                "the VM first or put its disks on shared storage"
            )
        if postcopy:
            raise InvalidArgument("postcopy needs a live migration, not offline")
        if not persistent:
            raise InvalidArgument("an offline migration moves the persistent definition: persistent must be True")
        flags.append("OFFLINE")
    elif live:
        flags.append("LIVE")
    if persistent:
        flags.append("PERSIST_DEST")
    if undefinesource:
        flags.append("UNDEFINE_SOURCE")
    if copy_storage == "all":
        flags.append("NON_SHARED_DISK")
    elif copy_storage == "inc":
        flags.append("NON_SHARED_INC")

    if tunnel and copy_storage:
        notes.append(
            "tunnelled migration with copy-storage fails on libvirt 9.0: using peer-to-peer "
            "with TLS instead (memory and disk streams are encrypted by QEMU)"
        )
        tunnel, tls, peer2peer = False, True, True
    if tunnel:
        if migration_uri:
            raise InvalidArgument("migration_uri does not apply to a tunnelled migration")
        if parallel_connections:
            raise InvalidArgument("parallel connections cannot be tunnelled: use tls=True instead")
        if tls:
            notes.append("tunnelled: the data goes through libvirt's TLS connection (tls ignored)")
            tls = False
        peer2peer = True
        flags += ["PEER2PEER", "TUNNELLED"]
    elif peer2peer:
        flags.append("PEER2PEER")
    if tls and copy_storage and parallel_connections:
        raise InvalidArgument(
            "parallel connections with TLS and copied disks fail on libvirt 9.0 (the disk "
            "stream's TLS host name check): drop parallel_connections or use shared storage"
        )
    if tls:
        flags.append("TLS")
    if unsafe:
        flags.append("UNSAFE")
    if postcopy:
        flags.append("POSTCOPY")
    if auto_converge:
        flags.append("AUTO_CONVERGE")
    if compressed:
        flags.append("COMPRESSED")
    if parallel_connections is not None:
        flags.append("PARALLEL")
        params[PARAM_PARALLEL] = _positive_int(parallel_connections, "parallel_connections")
    if max_bandwidth is not None:
        params[PARAM_BANDWIDTH] = _positive_int(max_bandwidth, "max_bandwidth (MiB/s)")
    if migration_uri:
        params[PARAM_URI] = str(migration_uri)
    if migrate_disks:
        if not copy_storage:
            raise InvalidArgument("migrate_disks only applies when copying storage")
        params[PARAM_DISKS] = [str(d) for d in migrate_disks]

    if tunnel:
        mode = "tunnelled"
    else:
        mode = ("peer2peer" if peer2peer else "direct") + ("+tls" if tls else "")
    return Plan(flags=flags, params=params, mode=mode, peer2peer=peer2peer,
                copy_storage=copy_storage, notes=notes)


def dest_uri(target, transport="tls"):
    """The libvirt URI of a hypervisor: a full URI is kept, a host name becomes qemu+tls://host/system."""
    target = str(target or "").strip()
    if not target:
        raise InvalidArgument("no migration target given")
    if "://" in target:
        return target
    if ":" in target and not target.startswith("["):  # a bare IPv6 address
        target = f"[{target}]"
    return f"qemu+{transport}://{target}/system"


# --------------------------------------------------------------------------------------------
# job statistics (pure)


def _mib(value):
    return None if value is None else round(value / MIB, 1)


def _percent(total, remaining):
    if not total:
        return None
    return max(0.0, min(100.0, round(100.0 * (total - (remaining or 0)) / total, 1)))


def summarize_job(stats):
    """The progress of an active job as a flat dict (MiB, percent), from ``dom.jobStats()``."""
    stats = stats or {}
    memory_pct = _percent(stats.get("memory_total"), stats.get("memory_remaining"))
    disk_pct = _percent(stats.get("disk_total"), stats.get("disk_remaining"))
    if stats.get("disk_total") and (disk_pct or 0) < 100:
        phase = "disk"
    elif stats.get("memory_postcopy_requests"):
        phase = "postcopy"
    else:
        phase = "memory"
    return {
        "phase": phase,
        "percent": _percent(stats.get("data_total"), stats.get("data_remaining")),
        "memory_percent": memory_pct,
        "disk_percent": disk_pct,
        "memory_total_mib": _mib(stats.get("memory_total")),
        "memory_remaining_mib": _mib(stats.get("memory_remaining")),
        "disk_total_mib": _mib(stats.get("disk_total")),
        "disk_remaining_mib": _mib(stats.get("disk_remaining")),
        "bandwidth_mib_s": _mib(stats.get("memory_bps") or stats.get("disk_bps")),
        "dirty_rate_pages_s": stats.get("memory_dirty_rate"),
        "iteration": stats.get("memory_iteration"),
        "elapsed_s": None if stats.get("time_elapsed") is None else round(stats["time_elapsed"] / 1000, 1),
    }


def job_result(stats):
    """What a completed migration cost, from ``jobStats(COMPLETED)``: downtime, time, data."""
    stats = stats or {}
    if not stats or stats.get("type") in (None, 0):
        return {}
    return {
        "downtime_ms": stats.get("downtime"),
        "downtime_net_ms": stats.get("downtime_net"),
        "total_time_ms": stats.get("time_elapsed"),
        "setup_time_ms": stats.get("setup_time"),
        "memory_transferred_mib": _mib(stats.get("memory_processed")),
        "memory_total_mib": _mib(stats.get("memory_total")),
        "disk_transferred_mib": _mib(stats.get("disk_processed")),
        "disk_total_mib": _mib(stats.get("disk_total")),
        "memory_bandwidth_mib_s": _mib(stats.get("memory_bps")),
        "iterations": stats.get("memory_iteration"),
        "postcopy_requests": stats.get("memory_postcopy_requests"),
    }


# --------------------------------------------------------------------------------------------
# storage decisions (pure)


def storage_plan(disks, seen, copy_storage=None, offline=False, unsafe_fs=()):
    """Decide, per disk, how it gets to the target.

    ``disks``: the ``disks`` of :func:`source_facts`. ``seen``: ``{target_dev: observation}``
    made on the target by :func:`observe_disks` (``probe``: the source's probe file is visible
    there; ``exists``/``size``: the path on the target; ``bases``: the backing chain on the
    target). ``unsafe_fs``: filesystem types the operator allows VIR_MIGRATE_UNSAFE on besides
    :data:`LOCAL_FS`. Returns ``{"disks", "create", "copy_storage", "migrate_disks", "unsafe", "errors",
    "notes"}``. Actions: ``shared`` (same file on both), ``copy`` (pre-created, QEMU copies it),
    ``fetch`` (read-only: downloaded before), ``present`` (read-only, already there), ``skip``.
    """
    if copy_storage not in (None,) + COPY_MODES:
        raise InvalidArgument(f"copy_storage must be 'all', 'inc' or None, not {copy_storage!r}")
    out = {"disks": [], "create": [], "copy_storage": None, "migrate_disks": [], "unsafe": False,
           "errors": [], "notes": []}
    copies = []
    for disk in disks:
        dev, path = disk["target"], disk.get("path")
        obs = seen.get(dev) or {}
        entry = {"target": dev, "path": path, "readonly": disk.get("readonly", False)}
        out["disks"].append(entry)
        if not path:
            entry.update(action="skip", reason="no medium")
            continue
        if disk.get("type") == "network":
            entry.update(action="shared", reason="network disk")
            continue
        if disk.get("type") == "block":
            if obs.get("exists"):
                entry.update(action="shared", reason="block device present on the target")
            else:
                entry.update(action="error")
                out["errors"].append(f"disk {dev}: block device {path} does not exist on the target")
            continue
        if obs.get("probe"):
            entry.update(action="shared", reason="the target sees the source's probe file")
            fs_type = disk.get("fs_type")
            if disk.get("readonly") or offline or fs_type in NETWORK_FS:
                continue
            if fs_type in LOCAL_FS or fs_type in set(unsafe_fs or ()):
                out["unsafe"] = True
            else:
                entry["action"] = "error"
                out["errors"].append(
                    f"disk {dev}: {path} is shared on a {fs_type or 'unknown'} filesystem, which salt-virt "
                    "knows as neither networked nor local: migrating it needs VIR_MIGRATE_UNSAFE; if its "
                    f"page cache is coherent between the hosts, add {fs_type!r} to virt:migration:unsafe_fs "
                    "on the hypervisors, else copy the disk (copy_storage=all)"
                )
            continue
        if disk.get("readonly"):
            if obs.get("exists"):
                if obs.get("size") == disk.get("size"):
                    entry.update(action="present", reason="read-only, same size on the target")
                else:
                    entry.update(action="error")
                    out["errors"].append(
                        f"disk {dev}: {path} on the target differs from the source's "
                        f"({obs.get('size')} vs {disk.get('size')} bytes)"
                    )
                continue
            if offline:
                entry.update(action="error")
                out["errors"].append(f"disk {dev}: {path} is not on the target (offline migration copies no disks)")
                continue
            entry.update(action="fetch", reason="read-only: downloaded from the source first")
            out["create"].append({"target": dev, "path": path, "kind": "fetch",
                                  "format": disk.get("format"), "size": disk.get("size")})
            continue
        # A writable file the target does not share.
        if obs.get("exists"):
            entry.update(action="error")
            out["errors"].append(
                f"disk {dev}: {path} exists on the target but is not the same file (no shared "
                "storage there); refusing to overwrite it: remove it or migrate elsewhere"
            )
            continue
        if offline:
            entry.update(action="error")
            out["errors"].append(
                f"disk {dev}: {path} is not on shared storage; an offline migration cannot copy "
                "it (start the VM first)"
            )
            continue
        copies.append((disk, obs, entry))

    overlay_copy = False
    for disk, obs, entry in copies:
        dev, path = disk["target"], disk["path"]
        chain = disk.get("backing") or []
        create = {"target": dev, "path": path, "format": disk.get("format"),
                  "virtual_size": disk.get("virtual_size"), "allocation": disk.get("allocation")}
        if chain and copy_storage != "all":
            missing = [b["path"] for b, o in zip(chain, obs.get("bases") or [{}] * len(chain), strict=False)
                       if not o.get("exists")]
            different = [
                f"{b['path']} ({o.get('format')}, {o.get('size')} bytes on the target; "
                f"{b.get('format')}, {b.get('size')} bytes on the source)"
                for b, o in zip(chain, obs.get("bases") or [], strict=False)
                if o.get("exists") and (o.get("format"), o.get("size")) != (b.get("format"), b.get("size"))
            ]
            if different or (missing and len(chain) > 1):
                entry.update(action="error")
                if different:
                    out["errors"].append(
                        f"disk {dev}: base image on the target differs: {'; '.join(different)}"
                    )
                else:
                    out["errors"].append(
                        f"disk {dev}: its base images {', '.join(missing)} are not on the target; "
                        "copy them there (same paths) or pass copy_storage=all to copy the whole chain"
                    )
                continue
            if missing:
                # A base is read-only and shared by overlays: the target gets its own copy from the
                # source over libvirt's TLS stream, then the overlay goes on top of it.
                base = chain[0]
                fetch = {"target": dev, "path": base["path"], "kind": "fetch", "format": base.get("format"),
                         "size": base.get("size"), "mode": 0o444, "base": True}
                if not any(c.get("path") == base["path"] for c in out["create"]):
                    out["create"].append(fetch)
                out["notes"].append(f"disk {dev}: base image {base['path']} is fetched from the source first")
            overlay_copy = True
            create.update(kind="overlay", backing=chain[0]["path"], backing_format=chain[0].get("format"))
            entry.update(action="copy", reason="not shared: overlay copied on top of its base"
                         + (" (fetched from the source)" if missing else ""))
        else:
            create.update(kind="blank")
            if chain:
                create["allocation"] = sum(b.get("size") or 0 for b in chain) + (disk.get("allocation") or 0)
            entry.update(action="copy", reason="not shared: copied whole")
        out["create"].append(create)
        out["migrate_disks"].append(dev)

    if out["migrate_disks"]:
        out["copy_storage"] = copy_storage or ("inc" if overlay_copy else "all")
    elif copy_storage:
        out["notes"].append(f"copy_storage={copy_storage} ignored: no disk needs copying")
    if out["unsafe"]:
        out["notes"].append(
            "shared disks on a local filesystem (one kernel, several mount namespaces): "
            "migrating with VIR_MIGRATE_UNSAFE"
        )
    return out


# --------------------------------------------------------------------------------------------
# source side


def _parse(xml):
    return ET.fromstring(xml)  # noqa: S314  (libvirt's own XML; no external entities)


def _disk_elements(root):
    for elem in root.findall("./devices/disk"):
        target = elem.find("target")
        if target is None:
            continue
        src = elem.find("source")
        kind = elem.get("type", "file")
        path = None
        if src is not None:
            path = src.get("file") if kind == "file" else src.get("dev") if kind == "block" else src.get("name")
        driver = elem.find("driver")
        yield {
            "target": target.get("dev"),
            "type": kind,
            "device": elem.get("device", "disk"),
            "path": path,
            "format": driver.get("type", "raw") if driver is not None else "raw",
            "readonly": elem.find("readonly") is not None,
            "shareable": elem.find("shareable") is not None,
            "cache": driver.get("cache") if driver is not None else None,
        }


def fs_type(path, mountinfo="/proc/self/mountinfo"):
    """The filesystem type holding ``path`` in this mount namespace (longest mount-point match)."""
    path = os.path.realpath(path)
    best, best_type = "", None
    try:
        with open(mountinfo) as fh:
            for line in fh:
                left, _, right = line.partition(" - ")
                fields = left.split()
                if len(fields) < 5 or not right:
                    continue
                point = fields[4].replace("\\040", " ")
                if (path == point or path.startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
                    best, best_type = point, right.split()[0]
    except OSError:
        return None
    return best_type


def _disk_details(disk):
    """Add sizes and the backing chain of a file disk (qemu-img info -U works on a running disk)."""
    path = disk["path"]
    disk["dir"] = os.path.dirname(path)
    disk["fs_type"] = fs_type(disk["dir"])
    try:
        disk["size"] = os.path.getsize(path)
    except OSError as exc:
        raise VirtError(f"disk {disk['target']}: cannot read {path}: {exc}") from exc
    if disk["readonly"]:
        return disk
    details = images.info(path)
    disk["format"] = details["format"] or disk["format"]
    disk["virtual_size"] = details["virtual_size"]
    disk["allocation"] = details["actual_size"]
    disk["backing"] = []
    for item in details["backing_chain"]:
        name = item.get("filename")
        try:
            size = os.path.getsize(name)
        except (OSError, TypeError):
            size = None
        disk["backing"].append({"path": name, "format": item.get("format"), "size": size})
    return disk


def create_probes(dirs, token):
    """Drop an empty probe file in each directory; return the directories that got one."""
    made = []
    for directory in sorted(set(dirs)):
        path = os.path.join(directory, PROBE_PREFIX + token)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError:
            continue  # read-only or foreign directory: that disk just cannot be proven shared
        os.close(fd)
        made.append(directory)
    return made


def remove_probes(dirs, token):
    if not token or not all(c.isalnum() for c in str(token)):
        return []
    removed = []
    for directory in dirs or ():
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(directory, PROBE_PREFIX + str(token)))
            removed.append(directory)
    return removed


def _nic(elem):
    src = elem.find("source")
    attrs = src.attrib if src is not None else {}
    source = attrs.get("bridge") or attrs.get("network") or attrs.get("dev")
    return {"type": elem.get("type"), "source": source}


def _host_caps(conn):
    caps = _parse(conn.getCapabilities())
    cpu = caps.find("./host/cpu")
    return {
        "host_uuid": (caps.findtext("./host/uuid") or "").strip(),
        "host_cpu_xml": ET.tostring(cpu, encoding="unicode") if cpu is not None else None,
    }


def source_facts(conn, name, probe=True):
    """Everything the target needs to pre-flight and prepare: domain, CPU, NICs, disks.

    With ``probe`` a probe file is created next to every file disk (``facts["probe"]``); remove
    them with :func:`remove_probes` once the target has looked.
    """
    dom = vmops.lookup(conn, name)
    root = _parse(dom.XMLDesc(0))
    ostype = root.find("./os/type")
    cpu = root.find("cpu")
    state, reason = dom.state()
    facts = {
        "name": name,
        "uuid": dom.UUIDString(),
        "state": vmops.STATES.get(state, "unknown"),
        "reason": reason,
        "active": bool(dom.isActive()),
        "persistent": bool(dom.isPersistent()),
        "type": root.get("type"),
        "arch": ostype.get("arch") if ostype is not None else None,
        "machine": ostype.get("machine") if ostype is not None else None,
        "emulator": (root.findtext("./devices/emulator") or "").strip() or None,
        "vcpus": int(dom.info()[3]),
        "memory_mib": int(dom.maxMemory()) // 1024,
        "cpu_mode": (
            (cpu.get("mode") or ("custom" if cpu.find("model") is not None else None)) if cpu is not None else None
        ),
        "cpu_xml": ET.tostring(cpu, encoding="unicode") if cpu is not None else None,
        "interfaces": [_nic(elem) for elem in root.findall("./devices/interface")],
        "hostdevs": len(root.findall("./devices/hostdev")),
        "disks": [],
    }
    facts.update(_host_caps(conn))
    facts["hostname"] = conn.getHostname()
    for disk in _disk_elements(root):
        if disk["type"] == "file" and disk["path"]:
            _disk_details(disk)
        facts["disks"].append(disk)
    if probe:
        token = secrets.token_hex(8)
        dirs = [d["dir"] for d in facts["disks"] if d.get("dir")]
        facts["probe"] = {"token": token, "dirs": create_probes(dirs, token)}
    return facts


# --------------------------------------------------------------------------------------------
# target side: observation, pre-flight, preparation, cleanup


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


def preflight(conn, facts, copy_storage=None, offline=False, unsafe_fs=()):
    """Can this host take the VM described by ``facts`` (from :func:`source_facts`)?

    Returns ``{"ok", "checks": [{check, ok, detail}], "storage": storage_plan(...)}``; nothing
    is changed on this host.
    """
    checks = []
    name = facts["name"]
    caps = _host_caps(conn)
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

    node = vmops.node_info(conn)
    _check(checks, "vcpus", facts["vcpus"] <= node["cpus"],
           f"{facts['vcpus']} vCPU(s) needed, host has {node['cpus']}")
    available = _available_mib(conn)
    unclaimed = vmops.freemem(conn)
    _check(checks, "memory", offline or facts["memory_mib"] <= min(available, unclaimed),
           f"{facts['memory_mib']} MiB needed; {available} MiB available, {unclaimed} MiB not claimed by running VMs")

    _check_cpu(conn, facts, checks)
    _check_machine(conn, facts, checks)
    emulator = facts.get("emulator")
    _check(checks, "emulator", not emulator or os.path.exists(emulator),
           f"{emulator} {'present' if not emulator or os.path.exists(emulator) else 'missing'}")

    for nic in facts.get("interfaces") or []:
        kind, source = nic.get("type"), nic.get("source")
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

    token = (facts.get("probe") or {}).get("token")
    seen = observe_disks(facts["disks"], token)
    storage = storage_plan(facts["disks"], seen, copy_storage=copy_storage, offline=offline, unsafe_fs=unsafe_fs)
    _check(checks, "storage", not storage["errors"],
           "; ".join(storage["errors"]) or ", ".join(f"{d['target']}: {d['action']}" for d in storage["disks"]))
    _check_space(storage["create"], checks)
    return {"ok": all(c["ok"] for c in checks), "checks": checks, "storage": storage,
            "host_uuid": caps["host_uuid"]}


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
        _check(checks, "cpu", False, f"CPU comparison failed: {_err(exc)}")


def _check_machine(conn, facts, checks):
    caps = _parse(conn.getCapabilities())
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


def _journal_write(path, data):
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w") as fh:
        json.dump(data, fh)
    os.replace(tmp, path)


def journal_path(directory, token):
    if not token or not all(c.isalnum() for c in str(token)):
        raise InvalidArgument(f"bad migration token {token!r}")
    return os.path.join(directory, f"{token}.json")


def prepare_disks(create, journal, source_conn=None, name=None):
    """Create the target's disks of ``create`` (from :func:`storage_plan`), all or nothing.

    Every file and directory made is recorded in the ``journal`` file before the next step, so
    :func:`cleanup` can remove exactly them even if this process dies. Read-only disks
    (``kind: fetch``) are downloaded through ``source_conn``.
    """
    record = {"name": name, "created": [], "dirs": [], "time": time.time()}
    _journal_write(journal, record)
    try:
        for item in create:
            path = item["path"]
            if os.path.lexists(path):
                raise InvalidArgument(f"{path} already exists on this host; refusing to overwrite it")
            missing, directory = [], os.path.dirname(path)
            while not os.path.isdir(directory):
                missing.append(directory)
                directory = os.path.dirname(directory)
            for directory in reversed(missing):
                os.mkdir(directory, 0o755)  # QEMU's user must traverse to the disk
                record["dirs"].append(directory)
                _journal_write(journal, record)
            if item["kind"] == "overlay":
                images.clone(item["backing"], path, overlay=True, size=item.get("virtual_size"))
            elif item["kind"] == "blank":
                images.create_blank(path, item["virtual_size"], item.get("format") or "raw")
            elif item["kind"] == "fetch":
                if source_conn is None:
                    raise VirtError(f"{path} must be downloaded from the source, but no source connection was given")
                fetch_file(source_conn, path, path, mode=item.get("mode", 0o600))
                got = os.path.getsize(path)
                if item.get("size") is not None and got != item["size"]:
                    os.unlink(path)
                    raise VirtError(f"{path} fetched from the source has {got} bytes, the source's {item['size']}")
            else:
                raise InvalidArgument(f"unknown disk preparation {item['kind']!r}")
            record["created"].append(path)
            _journal_write(journal, record)
    except BaseException as exc:
        _remove_recorded(record)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(journal)
        if isinstance(exc, OSError):  # disk full, permissions...: say where, without a traceback
            raise VirtError(f"cannot prepare {item['path']} on this host: {exc.strerror or exc}") from exc
        raise
    return record


def fetch_file(source_conn, remote_path, dest, mode=0o600):
    """Download ``remote_path`` from the host of ``source_conn`` (libvirt storage stream) to ``dest``.

    The file is looked up as a storage volume; if no pool holds its directory, a transient
    directory pool is made for the download and destroyed after (that never deletes files).
    """
    directory, base = os.path.split(remote_path)
    pool, transient = None, False
    try:
        try:
            vol = source_conn.storageVolLookupByPath(remote_path)
        except libvirt.libvirtError:
            try:
                pool = source_conn.storagePoolLookupByTargetPath(directory)
                pool.refresh(0)
            except libvirt.libvirtError:
                xml = ET.Element("pool", type="dir")
                ET.SubElement(xml, "name").text = f"saltvirt-fetch-{secrets.token_hex(6)}"
                ET.SubElement(ET.SubElement(xml, "target"), "path").text = directory
                pool = source_conn.storagePoolCreateXML(ET.tostring(xml, encoding="unicode"), 0)
                transient = True
            vol = pool.storageVolLookupByName(base)

        def steps(tmp):
            stream = source_conn.newStream(0)
            with open(tmp, "wb") as fh:
                vol.download(stream, 0, 0, 0)
                stream.recvAll(lambda _st, data, handle: handle.write(data), fh)
            stream.finish()

        images._build(dest, steps, mode)  # pylint: disable=protected-access
    except libvirt.libvirtError as exc:
        raise VirtError(f"cannot download {remote_path} from the source: {_err(exc)}") from exc
    finally:
        if transient and pool is not None:
            with contextlib.suppress(libvirt.libvirtError):
                pool.destroy()
    return dest


def _remove_recorded(record, keep=()):
    removed, kept = [], []
    for path in reversed(record.get("created", [])):
        if path in keep:
            kept.append(path)
            continue
        try:
            os.unlink(path)
            removed.append(path)
        except FileNotFoundError:
            pass
    for directory in reversed(record.get("dirs", [])):
        with contextlib.suppress(OSError):
            os.rmdir(directory)  # only if empty: never a directory with foreign files
            removed.append(directory)
    return removed, kept


def files_in_use(conn, skip_uuid=None):
    """Every disk file (and backing file) of every domain defined or running on this host."""
    used = set()
    for dom in conn.listAllDomains(0):
        if skip_uuid and dom.UUIDString() == skip_uuid:
            continue
        for flags in (0, libvirt.VIR_DOMAIN_XML_INACTIVE):
            try:
                root = _parse(dom.XMLDesc(flags))
            except libvirt.libvirtError:
                continue
            for src in root.iter("source"):
                if src.get("file"):
                    used.add(os.path.realpath(src.get("file")))
    return used


def leftover_removable(dom):
    """``(True, state)`` if ``dom`` is only the target's unfinished copy of an incoming
    migration (shut off, or paused while migrating in); ``(False, why)`` when it is the copy
    that runs -- running, or paused in or after a post-copy switch-over -- and must be kept."""
    state, reason = dom.state()
    if state == libvirt.VIR_DOMAIN_SHUTOFF:
        return True, "shut off"
    if state == libvirt.VIR_DOMAIN_PAUSED and reason == libvirt.VIR_DOMAIN_PAUSED_MIGRATION:
        return True, "paused (incoming migration)"
    if state == libvirt.VIR_DOMAIN_PAUSED and reason in (PAUSED_POSTCOPY, PAUSED_POSTCOPY_FAILED):
        return False, ("paused after a post-copy switch-over: this copy holds the guest's state; recover it "
                       "(resume the migration, or virsh resume when the source is gone), never delete it")
    return False, f"{vmops.STATES.get(state, 'unknown')}: it runs here"


def remove_leftover(conn, name, uuid):
    """Destroy and undefine the target's copy of a failed incoming migration (same UUID only).

    The state is checked right before: a copy that runs (or holds a post-copy guest) is kept
    and the return says why -- a migration that completed, or switched over, since the caller
    read its status must never lose the VM.
    """
    try:
        dom = conn.lookupByUUIDString(uuid)
    except libvirt.libvirtError:
        return None
    if dom.name() != name:
        raise VirtError(f"domain {dom.name()} has {name}'s UUID {uuid}: not touching it")
    removable, state = leftover_removable(dom)
    if not removable:
        return f"kept: {state}"
    with contextlib.suppress(libvirt.libvirtError):
        if dom.isActive():
            dom.destroy()
    with contextlib.suppress(libvirt.libvirtError):
        if dom.isPersistent():
            vmops.undefine(dom)
    return state


def cleanup(conn, journal, name=None, uuid=None, remove_domain=False):
    """Undo a failed migration on the target: the leftover domain (if asked), the files we made.

    Files in the ``journal`` that a domain on this host uses are kept (and reported): they
    belong to a VM that did arrive. ``conn`` may be None when libvirtd is unreachable; then only
    files can be checked against nothing, so they are kept too.
    """
    result = {"domain": None, "removed": [], "kept": [], "journal": journal}
    try:
        with open(journal) as fh:
            record = json.load(fh)
    except FileNotFoundError:
        record = {"created": [], "dirs": []}
    if conn is None:
        result["kept"] = list(record.get("created", []))
        result["error"] = "libvirtd is unreachable: files kept until it can be checked"
        return result
    if remove_domain and uuid:
        result["domain"] = remove_leftover(conn, name, uuid)
    used = files_in_use(conn)
    keep = {p for p in record.get("created", []) if os.path.realpath(p) in used}
    result["removed"], result["kept"] = _remove_recorded(record, keep)
    if not keep:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(journal)
    return result


def prune_journals(directory, max_age=86400):
    """Forget journals of old migrations (their files either arrived or were cleaned up)."""
    now = time.time()
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(directory):
            if entry.name.endswith(".json") and now - entry.stat().st_mtime > max_age:
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)


def remove_stale(conn, name, paths, owned_dir):
    """After a successful copy-storage migration: delete the source's now-stale disk copies.

    Only files inside ``owned_dir`` (the VM's own directory that virt.init made) that no domain
    on this host uses are removed; anything else is reported as kept.
    """
    owned_dir = os.path.realpath(owned_dir)
    used = files_in_use(conn)
    removed, kept = [], []
    for path in paths or ():
        real = os.path.realpath(path)
        if not real.startswith(owned_dir + os.sep) or real in used:
            kept.append(path)
            continue
        try:
            os.unlink(real)
            removed.append(path)
        except FileNotFoundError:
            pass
    if os.path.isdir(owned_dir) and not os.listdir(owned_dir):
        with contextlib.suppress(OSError):
            os.rmdir(owned_dir)
    return {"removed": removed, "kept": kept}


def domain_status(conn, name):
    """Where a domain stands on this host: defined, active, state and reason, last completed job."""
    try:
        dom = vmops.lookup(conn, name)
    except NotFound:
        return {"name": name, "defined": False, "active": False, "state": None}
    state, reason = dom.state()
    status = {
        "name": name,
        "defined": True,
        "uuid": dom.UUIDString(),
        "active": bool(dom.isActive()),
        "persistent": bool(dom.isPersistent()),
        "state": vmops.STATES.get(state, "unknown"),
        "reason": reason,
        "migrated_in": state == libvirt.VIR_DOMAIN_RUNNING and reason == RUNNING_MIGRATED,
    }
    with contextlib.suppress(libvirt.libvirtError):
        flags = libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED | libvirt.VIR_DOMAIN_JOB_STATS_KEEP_COMPLETED
        status["job"] = job_result(dom.jobStats(flags))
    return status


# --------------------------------------------------------------------------------------------
# the migration


class _Watcher:
    """Polls the running job: progress, the switch to post-copy, the time limit."""

    def __init__(self, dom, progress, timeout, postcopy):
        self.dom, self.progress = dom, progress
        self.timeout, self.postcopy = timeout, postcopy
        self.last = None
        self.aborted = None
        self.switched = False
        self.started = time.monotonic()

    def poll(self):
        try:
            stats = self.dom.jobStats()
        except libvirt.libvirtError:
            return
        if stats.get("type") in (None, libvirt.VIR_DOMAIN_JOB_NONE):
            return
        self.last = summarize_job(stats)
        if self.progress is not None:
            # A failing progress sink must not break the migration.
            with contextlib.suppress(Exception):
                self.progress(dict(self.last))
        with contextlib.suppress(libvirt.libvirtError):
            if self.postcopy and not self.switched and (stats.get("memory_iteration") or 0) >= 2:
                # One full pass of memory is copied: let the guest run on the target now.
                self.dom.migrateStartPostCopy(0)
                self.switched = True
            elif self.timeout and not self.switched and not self.aborted \
                    and time.monotonic() - self.started > self.timeout:
                self.aborted = f"took longer than {self.timeout}s"
                self.dom.abortJob()


def _blocking(func, *args):
    """Run ``func(*args)`` in a thread (libvirt releases the GIL); return (thread, outcome)."""
    outcome = {}

    def _run():
        try:
            outcome["value"] = func(*args)
        except BaseException as exc:  # pylint: disable=broad-except
            outcome["error"] = exc

    thread = threading.Thread(target=_run, daemon=True)
    thread.start()
    return thread, outcome


def migrate(conn, name, dest_uri, *, live=True, offline=False, persistent=True, undefinesource=True,
            copy_storage=None, migrate_disks=None, max_bandwidth=None, max_downtime=None,
            postcopy=False, auto_converge=False, compressed=False, parallel_connections=None,
            tunnel=False, tls=False, unsafe=False, migration_uri=None, peer2peer=True,
            progress=None, interval=1.0, timeout=None, dest_conn=None):
    """Migrate domain ``name`` from ``conn`` to the libvirt at ``dest_uri``.

    Peer-to-peer by default (``migrateToURI3``: the source libvirtd drives the migration, so it
    survives this process); ``peer2peer=False`` uses ``migrate3`` over ``dest_conn``.
    ``progress(dict)`` is called every ``interval`` seconds with :func:`summarize_job`;
    ``timeout`` seconds aborts the job (the VM keeps running here). ``max_downtime`` in ms,
    ``max_bandwidth`` in MiB/s. On failure raises :class:`MigrationFailed` carrying the
    domain's state here afterwards.
    """
    dom = vmops.lookup(conn, name)
    uuid = dom.UUIDString()
    active = bool(dom.isActive())
    if not active and not offline:
        raise InvalidArgument(f"{name} is not running: a live migration needs it running (or offline=True)")
    the_plan = plan(live=live, offline=offline, persistent=persistent, undefinesource=undefinesource,
                    copy_storage=copy_storage, migrate_disks=migrate_disks, max_bandwidth=max_bandwidth,
                    postcopy=postcopy, auto_converge=auto_converge, compressed=compressed,
                    parallel_connections=parallel_connections, tunnel=tunnel, tls=tls, unsafe=unsafe,
                    migration_uri=migration_uri, peer2peer=peer2peer)
    if not the_plan.peer2peer and dest_conn is None:
        raise InvalidArgument("a direct (non peer-to-peer) migration needs a destination connection")
    if max_downtime is not None:
        try:
            dom.migrateSetMaxDowntime(_positive_int(max_downtime, "max_downtime (ms)"), 0)
        except libvirt.libvirtError as exc:
            raise VirtError(f"cannot set the maximum downtime of {name}: {_err(exc)}") from exc
    flags = the_plan.flag_value()
    watcher = _Watcher(dom, progress, timeout, postcopy)
    started = time.monotonic()
    # The migration blocks in a worker thread; this thread polls, so ``progress`` runs in the
    # caller's thread (Salt's loader context, for one, is per thread).
    if the_plan.peer2peer:
        thread, outcome = _blocking(dom.migrateToURI3, dest_uri, dict(the_plan.params), flags)
    else:
        thread, outcome = _blocking(dom.migrate3, dest_conn, dict(the_plan.params), flags)
    while thread.is_alive():
        thread.join(interval)
        if thread.is_alive() and active:
            watcher.poll()
    exc = outcome.get("error")
    if isinstance(exc, libvirt.libvirtError):
        message = _err(exc)
        if watcher.aborted:
            message = f"aborted: {watcher.aborted} ({message})"
        raise MigrationFailed(
            f"migration of {name} to {dest_uri} failed: {message}",
            source_state=_state_after(conn, uuid),
            phase="postcopy" if watcher.switched else "precopy",
        ) from exc
    if exc is not None:
        raise exc
    duration = time.monotonic() - started
    result = {
        "name": name,
        "uuid": uuid,
        "dest_uri": dest_uri,
        "duration_s": round(duration, 2),
        "postcopy_switched": watcher.switched,
        "last_progress": watcher.last,
        "job": {},
    }
    result.update(the_plan.to_dict())
    # Where the domain stands now, seen by both libvirts: callers verify the move with it
    # without asking the hosts again.
    result["source_status"] = dict(_state_after(conn, uuid), name=name)
    if dest_conn is not None:
        with contextlib.suppress(libvirt.libvirtError):
            result["target_status"] = domain_status(dest_conn, name)
            result["job"] = result["target_status"].get("job") or {}
    return result


#: Options of :func:`migrate` that :func:`migrate_in` passes through.
PULL_OPTIONS = ("live", "persistent", "undefinesource", "max_bandwidth", "max_downtime", "postcopy",
                "auto_converge", "compressed", "parallel_connections", "tunnel", "tls",
                "migration_uri", "peer2peer", "timeout")


def reach_source(uri):
    """Open the source's libvirt for a pull: ``(conn or None, pre-flight check)``."""
    try:
        conn = connection.connect(uri)
    except VirtError as exc:
        return None, {"check": "reaches the source", "ok": False, "detail": str(exc)}
    return conn, {"check": "reaches the source", "ok": True, "detail": f"reaches {uri}"}


def migrate_in(conn, facts, source_uri, dest_uri, journal, *, copy_storage=None, offline=False,
               progress=None, announce=None, unsafe_fs=(), **options):
    """The whole migration, run on the target: the VM is pulled, in one call.

    ``conn``: this host (the target); ``facts``: the source's :func:`source_facts`;
    ``source_uri``: the source's libvirt (:func:`reach_source`); ``dest_uri``: how the source
    reaches this host. Steps: :func:`preflight` here, the
    probe files this host sees removed (the others are the caller's), disks pre-created
    (:func:`prepare_disks`, journaled in ``journal``), then :func:`migrate` started on the
    source's libvirt, which drives it peer to peer (the same job as a push from the source).
    ``announce(step, **data)`` says which step starts (``prepare``, ``migrate``); ``options``:
    :data:`PULL_OPTIONS`.

    Returns a dict with ``checks``, ``storage``, ``probes_removed`` and then either
    ``refused: True`` (nothing changed), or the plan and :func:`migrate`'s result, or ``error``
    (with ``prepared``, ``phase``, ``source_state``): the caller decides the recovery.
    """
    unknown = sorted(set(options) - set(PULL_OPTIONS))
    if unknown:
        raise InvalidArgument(f"unknown migration option(s): {', '.join(unknown)}")
    report = preflight(conn, facts, copy_storage=copy_storage, offline=offline, unsafe_fs=unsafe_fs)
    probe = facts.get("probe") or {}
    out = {"refused": False, "checks": report["checks"], "storage": report["storage"],
           "probes_removed": remove_probes(probe.get("dirs"), probe.get("token"))}
    source_conn, reach = reach_source(source_uri)
    out["checks"].insert(0, reach)
    try:
        return _pull(conn, facts, source_conn, dest_uri, journal, out, offline, announce, progress, options)
    finally:
        if source_conn is not None:
            source_conn.close()


def _pull(conn, facts, source_conn, dest_uri, journal, out, offline, announce, progress, options):
    """:func:`migrate_in` once the checks are in ``out``: the plan, the disks, the migration."""
    storage = out["storage"]
    the_plan = None
    if all(c["ok"] for c in out["checks"]):
        try:
            the_plan = plan(offline=offline, copy_storage=storage["copy_storage"],
                            migrate_disks=storage["migrate_disks"], unsafe=storage["unsafe"],
                            **{k: v for k, v in options.items() if k not in ("max_downtime", "timeout")})
        except InvalidArgument as exc:
            out["checks"].append({"check": "options", "ok": False, "detail": str(exc)})
    if the_plan is None:
        out.update(refused=True, ok=False)
        return out
    out.update(ok=True, plan=the_plan.to_dict())
    prepared = []
    try:
        if storage["create"]:
            if announce:
                announce("prepare", disks=len(storage["create"]))
            prepared = prepare_disks(storage["create"], journal, source_conn, facts["name"])["created"]
        if announce:
            announce("migrate", mode=the_plan.mode, migrate_disks=list(storage["migrate_disks"]))
        result = migrate(source_conn, facts["name"], dest_uri, offline=offline,
                         copy_storage=storage["copy_storage"], migrate_disks=storage["migrate_disks"],
                         unsafe=storage["unsafe"], dest_conn=conn, progress=progress, **options)
    except MigrationFailed as exc:
        out.update(error=str(exc), phase=exc.phase, source_state=exc.source_state, prepared=prepared)
        return out
    except VirtError as exc:
        out.update(error=str(exc), prepared=prepared)
        return out
    out.update(result)
    out["prepared"] = prepared
    return out


def _state_after(conn, uuid):
    try:
        dom = conn.lookupByUUIDString(uuid)
        state, reason = dom.state()
    except libvirt.libvirtError:
        return {"defined": False}
    return {"defined": True, "state": vmops.STATES.get(state, "unknown"), "reason": reason,
            "active": bool(dom.isActive())}


def host_uuid(conn):
    return _host_caps(conn)["host_uuid"]
