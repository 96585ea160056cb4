"""Domain lifecycle and inventory over libvirt-python (names follow virsh)."""

import contextlib
import os
import time
import xml.etree.ElementTree as ET  # noqa: S405 (libvirt's own XML)

from saltvirt.domain import model as dommod
from saltvirt.errors import InvalidArgument, NotFound, VirtError
from saltvirt.errors import libvirt_message as _err
from saltvirt.storage import images

try:
    import libvirt
except ImportError:
    libvirt = None

# virDomainState -> virsh's words
STATES = {
    0: "no state",
    1: "running",
    2: "blocked",
    3: "paused",
    4: "shutdown",
    5: "shutoff",
    6: "crashed",
    7: "pmsuspended",
}


def lookup(conn, name):
    try:
        return conn.lookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            raise NotFound(f"no domain named {name!r} on this host") from exc
        raise VirtError(f"cannot look up domain {name!r}: {_err(exc)}") from exc


def secure_xml(dom, inactive=False):
    """The domain's XML with secrets (console passwords); ``inactive``: the persistent definition."""
    flags = libvirt.VIR_DOMAIN_XML_SECURE | (libvirt.VIR_DOMAIN_XML_INACTIVE if inactive else 0)
    try:
        return dom.XMLDesc(flags)
    except libvirt.libvirtError as exc:
        raise VirtError(f"cannot read the definition of {dom.name()}: {_err(exc)}") from exc


def exists(conn, name):
    try:
        lookup(conn, name)
    except NotFound:
        return False
    return True


def state(dom):
    return STATES.get(dom.state()[0], "unknown")


def define(conn, xml):
    try:
        return conn.defineXML(xml)
    except libvirt.libvirtError as exc:
        raise VirtError(f"libvirt refused the domain definition: {_err(exc)}") from exc


def _call(dom, action, func, *args):
    try:
        return func(*args)
    except libvirt.libvirtError as exc:
        raise VirtError(f"{action} {dom.name()} failed: {_err(exc)}") from exc


def start(dom):
    if dom.isActive():
        return False
    _call(dom, "start", dom.create)
    return True


def shutdown(dom, timeout=0):
    """Ask the guest to power off (ACPI); with ``timeout`` > 0 wait for it to stop.

    Returns ``"not running"``, ``"requested"`` (no timeout: the guest may still ignore the
    request) or ``"stopped"``.
    """
    if not dom.isActive():
        return "not running"
    _call(dom, "shutdown", dom.shutdown)
    if not timeout:
        return "requested"
    deadline = time.monotonic() + timeout
    while dom.isActive():
        if time.monotonic() > deadline:
            raise VirtError(f"{dom.name()} did not shut down within {timeout}s (virt.force_off pulls the plug)")
        time.sleep(0.5)
    return "stopped"


def destroy(dom):
    if not dom.isActive():
        return False
    _call(dom, "destroy", dom.destroy)
    return True


def reboot(dom):
    _require_active(dom, "reboot")
    _call(dom, "reboot", dom.reboot, 0)
    return True


def reset(dom):
    _require_active(dom, "reset")
    _call(dom, "reset", dom.reset, 0)
    return True


def suspend(dom):
    _require_active(dom, "pause")
    if dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED:
        return False
    _call(dom, "pause", dom.suspend)
    return True


def resume(dom):
    if dom.state()[0] != libvirt.VIR_DOMAIN_PAUSED:
        return False
    _call(dom, "resume", dom.resume)
    return True


def _require_active(dom, action):
    if not dom.isActive():
        raise InvalidArgument(f"cannot {action} {dom.name()}: it is not running")


def _undefine_flags():
    flags = 0
    for name in ("VIR_DOMAIN_UNDEFINE_MANAGED_SAVE", "VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA",
                 "VIR_DOMAIN_UNDEFINE_NVRAM"):
        flags |= getattr(libvirt, name, 0)
    return flags


def undefine(dom):
    try:
        dom.undefineFlags(_undefine_flags())
    except libvirt.libvirtError as exc:
        message = _err(exc)
        if "state change lock" in message and "Migrate" in message and not dom.isActive():
            # libvirt 9.0 keeps the migration job of a failed post-copy after the domain stopped.
            message += ("; a migration job libvirt kept after the domain stopped holds it: restart libvirtd "
                        "on this hypervisor, then purge again")
        raise VirtError(f"undefine {dom.name()} failed: {message}") from exc
    return True


def undefine_quietly(dom):
    with contextlib.suppress(libvirt.libvirtError):
        if dom.isActive():
            dom.destroy()
    with contextlib.suppress(libvirt.libvirtError):
        # A UEFI domain cannot be undefined without its variable store (NVRAM flag).
        dom.undefineFlags(_undefine_flags())


def destroy_quietly(dom):
    with contextlib.suppress(libvirt.libvirtError):
        dom.destroy()


def set_autostart(dom, enabled):
    _call(dom, "autostart", dom.setAutostart, 1 if enabled else 0)
    return bool(dom.autostart())


def setmem(dom, memory_mib, config=True, live=None):
    """Set the memory (MiB) of the persistent config and, if running, of the live guest."""
    kib = int(memory_mib) * 1024
    if kib <= 0:
        raise InvalidArgument("memory must be positive")
    flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG if config else 0
    active = dom.isActive()
    if not active:
        _call(dom, "setmem", dom.setMaxMemory, kib)
    elif live is not False:
        flags |= libvirt.VIR_DOMAIN_AFFECT_LIVE
    _call(dom, "setmem", dom.setMemoryFlags, kib, flags)
    return True


def setvcpus(dom, vcpus, config=True):
    vcpus = int(vcpus)
    if vcpus < 1:
        raise InvalidArgument("vcpus must be at least 1")
    if dom.isActive():
        raise InvalidArgument(f"{dom.name()} is running: change vCPUs while it is stopped")
    _call(dom, "setvcpus", dom.setVcpusFlags, vcpus,
          libvirt.VIR_DOMAIN_AFFECT_CONFIG | libvirt.VIR_DOMAIN_VCPU_MAXIMUM)
    _call(dom, "setvcpus", dom.setVcpusFlags, vcpus, libvirt.VIR_DOMAIN_AFFECT_CONFIG)
    return True


def model(dom, inactive=False):
    flags = libvirt.VIR_DOMAIN_XML_INACTIVE if inactive else 0
    return dommod.Domain.from_xml(dom.XMLDesc(flags))


def info(conn, name):
    """Everything about one domain: the model's inventory plus live state and disk sizes."""
    dom = lookup(conn, name)
    data = model(dom).to_info()
    data["state"] = state(dom)
    data["autostart"] = bool(dom.autostart())
    data["persistent"] = bool(dom.isPersistent())
    active = dom.isActive()
    for target, disk in data["disks"].items():
        disk["size"] = _disk_capacity(dom, target, disk)
        if not active and not disk["backing"] and disk["format"] == "qcow2" and disk.get("file"):
            # Only a running domain's XML carries <backingStore>; ask the image itself.
            disk["backing"] = images.backing_files(disk["file"])
    return data


def _disk_capacity(dom, target, disk):
    if not disk.get("file"):
        return None
    try:
        return dom.blockInfo(target)[0]
    except libvirt.libvirtError:
        return None


def list_domains(conn, active=None):
    flags = 0
    if active is True:
        flags = libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE
    elif active is False:
        flags = libvirt.VIR_CONNECT_LIST_DOMAINS_INACTIVE
    return sorted(d.name() for d in conn.listAllDomains(flags))


def node_info(conn):
    """Host facts the runner places VMs with (memory in MiB)."""
    model_name, memory_mib, cpus, mhz, nodes, sockets, cores, threads = conn.getInfo()
    return {
        "cpumodel": model_name,
        "phymemory": memory_mib,
        "cpus": cpus,
        "cpumhz": mhz,
        "numanodes": nodes,
        "cpusockets": sockets,
        "cpucores": cores,
        "cputhreads": threads,
        "hostname": conn.getHostname(),
        "uri": conn.getURI(),
        "libvirt_version": _version(conn.getLibVersion()),
        "hypervisor_version": _version(conn.getVersion()),
    }


def _version(number):
    return f"{number // 1000000}.{number // 1000 % 1000}.{number % 1000}"


def domain_usage(conn):
    """Per-domain vCPU and memory (MiB) claims, for placement and freemem/freecpu."""
    usage = []
    for dom in conn.listAllDomains(0):
        try:
            _state, max_kib, _cur, vcpus, _cpu_time = dom.info()
            usage.append({"name": dom.name(), "cpu": vcpus, "memory": max_kib // 1024, "state": state(dom)})
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                raise
            # gone since the listing (migrated away, undefined): it claims nothing here any more
    return usage


def freemem(conn, usage=None):
    """MiB of host memory not given to running domains (``usage``: :func:`domain_usage`, when known)."""
    total = conn.getInfo()[1]
    usage = domain_usage(conn) if usage is None else usage
    used = sum(d["memory"] for d in usage if d["state"] in dommod.CLAIMING_STATES)
    return total - used


def freecpu(conn, usage=None):
    """Host CPUs not given to running domains (may be negative when over-committed)."""
    cpus = conn.getInfo()[2]
    usage = domain_usage(conn) if usage is None else usage
    used = sum(d["cpu"] for d in usage if d["state"] in dommod.CLAIMING_STATES)
    return cpus - used


def owned_disks(data, vm_dir):
    """Disk files of a domain that live in its own directory (the ones virt.init created)."""
    vm_dir = os.path.realpath(vm_dir)
    owned = []
    for disk in data["disks"].values():
        path = disk.get("file")
        if path and os.path.realpath(path).startswith(vm_dir + os.sep):
            owned.append(path)
    return owned


def pool_targets(conn):
    """The target directories of this host's libvirt storage pools (directory-like pools)."""
    targets = []
    for pool in conn.listAllStoragePools(0):
        try:
            path = ET.fromstring(pool.XMLDesc(0)).findtext("./target/path")  # noqa: S314 (libvirt's XML)
        except (libvirt.libvirtError, ET.ParseError):
            continue
        if path and path.startswith("/") and not path.startswith("/dev"):
            targets.append(path)
    return targets


def detach_file_disk(dom, path):
    """Detach the disk backed by file ``path`` from ``dom``'s persistent definition and, if it
    runs and the guest lets go, from the running domain. Returns whether the definition had it."""
    real = os.path.realpath(path)
    found = None
    for disk in model(dom, inactive=True).disks:
        if disk.source and os.path.realpath(disk.source) == real:
            found = disk
    if found is None:
        return False
    holder = ET.Element("devices")
    found.to_element(holder)
    device = ET.tostring(holder[0], encoding="unicode")
    _call(dom, "detach the seed ISO from", dom.detachDeviceFlags, device, libvirt.VIR_DOMAIN_AFFECT_CONFIG)
    if dom.isActive():
        with contextlib.suppress(libvirt.libvirtError):
            dom.detachDeviceFlags(device, libvirt.VIR_DOMAIN_AFFECT_LIVE)
    return True


def definitions(conn, name=None):
    """``{vm: {xml, state, autostart}}``: the persistent definition (without console passwords) of
    every domain (or of ``name``), for the master's copy (``salt-run virt.remember``)."""
    names = [name] if name and exists(conn, name) else ([] if name else list_domains(conn))
    out = {}
    for vm in names:
        try:
            dom = lookup(conn, vm)
            if dom.isPersistent():
                out[vm] = {"xml": dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE), "state": state(dom),
                           "autostart": bool(dom.autostart())}
        except (NotFound, libvirt.libvirtError):
            continue  # gone since the listing
    return out
