"""Per-domain statistics and a few one-shot domain actions (the classic ``virt.vm_cputime``,
``vm_netstats``, ``vm_diskstats``, ``get_macs``, ``ctrl_alt_del``, ``migrate_start_postcopy``).

The XML readers are pure (they take the domain's XML); the counters ask libvirt.
"""

from saltvirt.domain import vmops
from saltvirt.domain.xmlview import DomainXml
from saltvirt.errors import VirtError
from saltvirt.errors import libvirt_message as _err

try:
    import libvirt
except ImportError:
    libvirt = None

NET_COUNTERS = ("rx_bytes", "rx_packets", "rx_errs", "rx_drop", "tx_bytes", "tx_packets", "tx_errs", "tx_drop")
DISK_COUNTERS = ("rd_req", "rd_bytes", "wr_req", "wr_bytes", "errs")

# Linux key codes of Left Ctrl, Left Alt and Delete (VIR_KEYCODE_SET_LINUX).
CTRL_ALT_DEL = (29, 56, 111)
KEY_HOLD_MS = 3


def macs(xml):
    """The MAC addresses of a domain's interfaces, in device order."""
    return [nic.mac for nic in DomainXml.parse(xml).interfaces if nic.mac]


def interface_devices(xml):
    """The host-side devices (``<target dev>``) of a running domain's interfaces.

    Interfaces without one (user-mode networking, or an inactive definition) have no counters.
    """
    return [nic.target for nic in DomainXml.parse(xml).interfaces if nic.target]


def disk_devices(xml):
    """The targets of a domain's disks that have a medium (an empty CD-ROM has no counters)."""
    found = []
    for disk in DomainXml.parse(xml).disks:
        has_source = disk.find("source") is not None and any(
            disk.find("source").get(attr) for attr in ("file", "dev", "name", "volume"))
        if disk.target and has_source:
            found.append(disk.target)
    return found


def cpu_percent(cputime_ns, host_cpus, vcpus):
    """The share of the host a domain's CPU time stands for, as the classic module computed it."""
    if not cputime_ns or not host_cpus or not vcpus:
        return 0
    return round(1.0e-7 * cputime_ns / host_cpus / vcpus)


def add_counters(names, rows):
    """Sum counter tuples (libvirt's order) into one ``{name: total}``."""
    totals = dict.fromkeys(names, 0)
    for row in rows:
        for name, value in zip(names, row, strict=False):
            totals[name] += int(value)
    return totals


def _ask(dom, what, func, *args):
    try:
        return func(*args)
    except libvirt.libvirtError as exc:
        raise VirtError(f"cannot {what} of {dom.name()}: {_err(exc)}") from exc


def cputime(dom, host_cpus):
    """``{cputime (ns), cputime_percent}`` of one domain."""
    raw = _ask(dom, "read the CPU time", dom.info)
    return {"cputime": int(raw[4]), "cputime_percent": cpu_percent(int(raw[4]), host_cpus, int(raw[3]))}


def _summed(dom, counters, devices_of, read):
    """``counters`` summed over the devices ``devices_of`` finds in the domain's XML, each read
    with ``read(device)``; zeros when the domain is not running (no counters to read)."""
    if not dom.isActive():
        return dict.fromkeys(counters, 0)
    devices = devices_of(_ask(dom, "read the definition", dom.XMLDesc, 0))
    return add_counters(counters, [_ask(dom, f"read the counters of {dev}", read, dev) for dev in devices])


def netstats(dom):
    """A domain's interface counters, summed over its interfaces (zeros when it has none)."""
    return _summed(dom, NET_COUNTERS, interface_devices, dom.interfaceStats)


def diskstats(dom):
    """A domain's block counters, summed over its disks (zeros when it is not running)."""
    return _summed(dom, DISK_COUNTERS, disk_devices, dom.blockStats)


def per_domain(conn, vm_, func, active_only=False):
    """``{name: func(dom)}`` for domain ``vm_`` (NotFound if it does not exist) or for all.

    A domain that vanishes between the listing and its turn (migrated away, undefined) is left out.
    """
    if vm_:
        return {vm_: func(vmops.lookup(conn, vm_))}
    result = {}
    for name in vmops.list_domains(conn, True if active_only else None):
        try:
            dom = vmops.lookup(conn, name)
            result[name] = func(dom)
        except VirtError:
            if vmops.exists(conn, name):
                raise
    return result


def host_cpus(conn):
    try:
        return int(conn.getInfo()[2])
    except libvirt.libvirtError as exc:
        raise VirtError(f"cannot read this host's CPU count: {_err(exc)}") from exc


def send_ctrl_alt_del(dom):
    """Press Ctrl+Alt+Del in the domain's console; True when libvirt took the keys."""
    vmops._require_active(dom, "send keys to")
    return _ask(dom, "send Ctrl+Alt+Del", dom.sendKey,
                libvirt.VIR_KEYCODE_SET_LINUX, KEY_HOLD_MS, list(CTRL_ALT_DEL), len(CTRL_ALT_DEL), 0) == 0


def start_postcopy(dom):
    """Switch the domain's running live migration (started with post-copy allowed) to post-copy."""
    _ask(dom, "switch the migration to post-copy", dom.migrateStartPostCopy, 0)
    return True


def loader(xml):
    """The domain's firmware loader: ``{path, <attributes>}``, ``path`` the string ``"None"``
    when it has none (as the classic ``virt.get_loader``)."""
    node = DomainXml.parse(xml).find("os/loader")
    if node is None:
        return {"path": "None"}
    return {"path": node.text, **node.attrib}
