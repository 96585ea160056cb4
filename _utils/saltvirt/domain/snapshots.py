"""libvirt snapshots of a domain (internal qcow2 snapshots: disks, and memory when running)."""

import re
import time
import xml.etree.ElementTree as ET

from saltvirt.domain import xmlview
from saltvirt.errors import InvalidArgument, VirtError

try:
    import libvirt
except ImportError:
    libvirt = None

_NAME_RE = re.compile(r"^[A-Za-z0-9_.+:-]{1,128}$")


def names(dom):
    """Names of the domain's snapshots, oldest first."""
    try:
        snaps = dom.listAllSnapshots(0)
    except libvirt.libvirtError as exc:
        raise VirtError(f"cannot list the snapshots of {dom.name()}: {exc.get_error_message()}") from exc
    return [s.getName() for s in sorted(snaps, key=_created)]


def _created(snap):
    return int(xmlview.parse(snap.getXMLDesc(0)).findtext("creationTime") or 0), snap.getName()


def default_name(domain, suffix=None, now=None):
    """``<domain>-<YYYYmmdd-HHMMSS>[-<suffix>]``, the classic Salt Virt snapshot name."""
    name = f"{domain}-{time.strftime('%Y%m%d-%H%M%S', time.localtime(now))}"
    return f"{name}-{suffix}" if suffix else name


def create(dom, name, description=None):
    """Take snapshot ``name`` of ``dom``: its qcow2 disks, plus memory when it runs.

    Read-only disks (a seed ISO) are left out by libvirt. A writable raw disk cannot hold an
    internal snapshot: libvirt refuses, and that error is raised as it is.
    """
    if not _NAME_RE.match(str(name)):
        raise InvalidArgument(f"snapshot name {name!r}: use letters, digits and _.+:- (at most 128)")
    if name == dom.name():
        raise InvalidArgument(f"a snapshot cannot be named like its domain ({name})")
    if name in names(dom):
        raise InvalidArgument(f"{dom.name()} already has a snapshot named {name}")
    root = ET.Element("domainsnapshot")
    ET.SubElement(root, "name").text = name
    if description:
        ET.SubElement(root, "description").text = str(description)
    try:
        dom.snapshotCreateXML(ET.tostring(root, encoding="unicode"), 0)
    except libvirt.libvirtError as exc:
        raise VirtError(f"snapshot {name} of {dom.name()} failed: {exc.get_error_message()}") from exc
    return name


def _lookup(dom, name):
    try:
        return dom.snapshotLookupByName(name, 0)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT:
            raise InvalidArgument(f"{dom.name()} has no snapshot named {name!r} "
                                  f"(it has: {', '.join(names(dom)) or 'none'})") from exc
        raise VirtError(f"cannot look up snapshot {name} of {dom.name()}: {exc.get_error_message()}") from exc


def describe(snap):
    """The classic description of a snapshot: ``{name, created, running, current}``
    (``created`` as local ``YYYY-mm-dd HH:MM:SS``)."""
    root = xmlview.parse(snap.getXMLDesc(0))
    created = int(root.findtext("creationTime") or 0)
    return {
        "name": snap.getName(),
        "created": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(created)),
        "running": root.findtext("state") == "running",
        "current": bool(snap.isCurrent(0)),
    }


def _all(dom):
    """The domain's snapshot objects, oldest first."""
    try:
        return sorted(dom.listAllSnapshots(0), key=_created)
    except libvirt.libvirtError as exc:
        raise VirtError(f"cannot list the snapshots of {dom.name()}: {exc.get_error_message()}") from exc


def _current(snaps):
    return next((s for s in snaps if s.isCurrent(0)), None)


def _parent_name(snap):
    return xmlview.parse(snap.getXMLDesc(0)).findtext("parent/name")


def _target(dom, snaps, name):
    """The snapshot to revert to: ``name``, or without it the one the current snapshot was
    taken after (its parent), as the classic function did."""
    if not snaps:
        raise InvalidArgument(f"{dom.name()} has no snapshot to revert to")
    if name:
        return _lookup(dom, name)
    current = _current(snaps)
    parent = _parent_name(current) if current is not None else None
    if not parent:
        raise InvalidArgument(
            f"{dom.name()}: no snapshot before the current one ({current.getName() if current else 'none'}) "
            "to revert to; name the snapshot (vm_snapshot=...)")
    return _lookup(dom, parent)


def revert(dom, name=None, cleanup=False, test=False):
    """Revert ``dom`` to snapshot ``name`` (default: the one before the current snapshot).

    The disks (and, for a snapshot of a running domain, the memory and the running state)
    come back as they were. ``cleanup`` deletes the snapshots taken after it (newer, or
    descendants). Returns ``{reverted, deleted}`` (``deleted`` is ``"N/A"`` without cleanup);
    ``test``: what would be done, doing nothing.
    """
    snaps = _all(dom)
    snap = _target(dom, snaps, name)
    after = _created(snap)
    descendants = {s.getName() for s in snap.listAllChildren(libvirt.VIR_DOMAIN_SNAPSHOT_LIST_DESCENDANTS)}
    newer = [s for s in snaps if s.getName() != snap.getName()
             and (_created(s) > after or s.getName() in descendants)] if cleanup else []
    result = {"reverted": snap.getName(), "deleted": [s.getName() for s in newer] if cleanup else "N/A"}
    if test:
        return result
    try:
        dom.revertToSnapshot(snap, 0)
    except libvirt.libvirtError as exc:
        raise VirtError(f"reverting {dom.name()} to snapshot {snap.getName()} failed: "
                        f"{exc.get_error_message()}") from exc
    for item in reversed(newer):
        _delete(dom, item)
    return result


def _delete(dom, snap):
    try:
        snap.delete(0)
    except libvirt.libvirtError as exc:
        raise VirtError(f"deleting snapshot {snap.getName()} of {dom.name()} failed: "
                        f"{exc.get_error_message()}") from exc


def delete(dom, wanted=(), everything=False):
    """Delete the snapshots ``wanted`` of ``dom`` (all of them with ``everything``).

    Every name is checked first: an unknown one deletes nothing. Returns the classic
    ``{available: {domain: [descriptions] or "N/A"}, deleted: {name: description}}``.
    """
    snaps = _all(dom)
    if not wanted and not everything:
        raise InvalidArgument(f"name the snapshots of {dom.name()} to delete, or pass all=True "
                              f"(it has: {', '.join(s.getName() for s in snaps) or 'none'})")
    have = {s.getName(): s for s in snaps}
    unknown = [n for n in wanted if n not in have]
    if unknown:
        raise InvalidArgument(f"{dom.name()} has no snapshot named {', '.join(map(repr, unknown))}: "
                              f"nothing deleted (it has: {', '.join(have) or 'none'})")
    chosen = snaps if everything else [s for s in snaps if s.getName() in set(wanted)]
    deleted = {}
    for snap in reversed(chosen):  # newest first: children before their parents
        deleted[snap.getName()] = describe(snap)
        _delete(dom, snap)
    left = [describe(s) for s in _all(dom)]
    return {"available": {dom.name(): left or "N/A"}, "deleted": deleted}
