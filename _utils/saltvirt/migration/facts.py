"""The source side of a migration: the domain's facts, its disks, probe files; hosts and URIs."""

import contextlib
import os
import secrets
import xml.etree.ElementTree as ET

from saltvirt.domain import vmops
from saltvirt.domain.xmlview import DomainXml
from saltvirt.errors import InvalidArgument, VirtError
from saltvirt.migration.common import PROBE_PREFIX, is_token, parse_xml
from saltvirt.storage import images


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


def _disk_facts(view):
    for disk in view.disks:
        if not disk.target:
            continue
        kind = disk.type
        yield {
            "target": disk.target,
            "type": kind,
            "device": disk.device,
            "path": disk.source_file if kind == "file" else disk.source_dev if kind == "block" else disk.source_name,
            "format": disk.format or "raw",
            "readonly": disk.readonly,
            "shareable": disk.shareable,
            "cache": disk.cache,
        }


#: The pseudo disk target of a UEFI VM's variable store in the facts and the storage plan.
NVRAM_TARGET = "nvram"


def _nvram_facts(view):
    """A UEFI VM's own variable store as a pseudo disk (``nvram: True``), or None.

    libvirt 9.0 migrates the firmware code, never the store: on storage the target does not
    share, the store must be carried like a read-only disk. A store that does not exist yet (a
    VM never started) has nothing to carry: libvirt makes it from its template on first start.
    """
    elem = view.find("os/nvram")
    path = (elem.text or "").strip() if elem is not None else ""
    if not path.startswith("/") or not os.path.isfile(path):
        return None
    return {"target": NVRAM_TARGET, "type": "file", "device": "nvram", "path": path, "format": "raw",
            "readonly": False, "shareable": False, "cache": None, "nvram": True,
            "dir": os.path.dirname(path), "fs_type": fs_type(os.path.dirname(path)),
            "size": os.path.getsize(path)}


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
    if not is_token(token):
        return []
    removed = []
    for directory in dirs or ():
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(directory, PROBE_PREFIX + str(token)))
            removed.append(directory)
    return removed


def _nic(nic):
    src = nic.find("source")
    attrs = src.attrib if src is not None else {}
    return {"type": nic.type, "source": attrs.get("bridge") or attrs.get("network") or attrs.get("dev")}


def host_caps(conn):
    caps = parse_xml(conn.getCapabilities())
    cpu = caps.find("./host/cpu")
    return {
        "host_uuid": (caps.findtext("./host/uuid") or "").strip(),
        "host_cpu_xml": ET.tostring(cpu, encoding="unicode") if cpu is not None else None,
    }


def host_uuid(conn):
    return host_caps(conn)["host_uuid"]


def source_facts(conn, name, probe=True):
    """Everything the target needs to pre-flight and prepare: domain, CPU, NICs, disks.

    With ``probe`` a probe file is created next to every file disk (``facts["probe"]``); remove
    them with :func:`remove_probes` once the target has looked.
    """
    dom = vmops.lookup(conn, name)
    view = DomainXml.parse(dom.XMLDesc(0))
    cpu = view.find("cpu")
    state, reason = dom.state()
    facts = {
        "name": name,
        "uuid": dom.UUIDString(),
        "state": vmops.STATES.get(state, "unknown"),
        "reason": reason,
        "active": bool(dom.isActive()),
        "persistent": bool(dom.isPersistent()),
        "type": view.type,
        "arch": view.arch,
        "machine": view.machine,
        "emulator": view.emulator,
        "vcpus": int(dom.info()[3]),
        "memory_mib": int(dom.maxMemory()) // 1024,
        "cpu_mode": view.cpu_mode,
        "cpu_xml": ET.tostring(cpu, encoding="unicode") if cpu is not None else None,
        "interfaces": [_nic(nic) for nic in view.interfaces],
        "hostdevs": len(view.device_elements("hostdev")),
        "disks": [],
    }
    facts.update(host_caps(conn))
    facts["hostname"] = conn.getHostname()
    for disk in _disk_facts(view):
        if disk["type"] == "file" and disk["path"]:
            _disk_details(disk)
        facts["disks"].append(disk)
    nvram = _nvram_facts(view)
    if nvram:
        facts["disks"].append(nvram)
    if probe:
        token = secrets.token_hex(8)
        dirs = [d["dir"] for d in facts["disks"] if d.get("dir")]
        facts["probe"] = {"token": token, "dirs": create_probes(dirs, token)}
    return facts
