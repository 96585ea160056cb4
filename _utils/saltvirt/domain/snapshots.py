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
