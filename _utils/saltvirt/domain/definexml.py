"""Defining or starting a domain from a caller's XML (the classic ``virt.define_xml_*`` and
``virt.create_xml_*``), after :mod:`saltvirt.domain.xmlpolicy` has checked it."""

import os
import stat

from saltvirt.domain import vmops, xmlpolicy
from saltvirt.errors import InvalidArgument, VirtError
from saltvirt.errors import libvirt_message as _err
from saltvirt.host import capabilities as hostcaps
from saltvirt.storage import bases, images

try:
    import libvirt
except ImportError:
    libvirt = None

MAX_XML_BYTES = 1024 * 1024


def policy(conn, settings):
    """This hypervisor's :class:`xmlpolicy.Policy` (roots, emulators, ``virt:domain_xml``)."""
    roots = settings.roots(vmops.pool_targets(conn))
    emulators = sorted({emu for _a, _t, emu in hostcaps.guest_domains(hostcaps.capabilities(conn)) if emu})
    return xmlpolicy.Policy.from_config(settings.get("domain_xml", {}), roots, emulators, settings.serial_log)


def _volume_path(conn):
    def resolve(pool, volume):
        try:
            return conn.storagePoolLookupByName(pool).storageVolLookupByName(volume).path()
        except libvirt.libvirtError as exc:
            raise InvalidArgument(f"no volume {volume} in pool {pool}: {_err(exc)}") from exc
    return resolve


def _backing_of(path, fmt=None):
    """The backing file the qcow2 header of ``path`` names (None without one, or for a raw
    file when ``fmt`` is not given); protocol and ``json:`` names and external data files are
    refused."""
    if not os.path.isfile(path):
        return None  # nothing to read now (libvirt refuses to start it without the file)
    if fmt is None and images.detect_format(path) != "qcow2":
        return None
    header = images.header(path, "qcow2")
    specific = (header.get("format-specific") or {}).get("data") or {}
    if specific.get("data-file"):
        raise InvalidArgument(f"{path} keeps its data in an external file: refused")
    backing = header.get("backing-filename")
    if backing and (backing.startswith("json:") or ("://" in backing) or ":" in backing.split("/", 1)[0]):
        raise InvalidArgument(f"{path} names a backing file that is not a local path: refused")
    return backing


def check(conn, settings, xml, quote=True):
    """Check ``xml`` for this hypervisor; returns the domain's name. Nothing is defined."""
    pol = policy(conn, settings)
    checked = xmlpolicy.check(xml, pol, _volume_path(conn), quote=quote)
    try:
        xmlpolicy.check_disk_files(checked, bases.domain_disks(conn) if checked.disks else {},
                                   _backing_of, pol, quote=quote)
    except VirtError as exc:
        if quote or isinstance(exc, xmlpolicy.Refused):
            raise
        raise InvalidArgument("a disk image of the domain XML was refused (details not shown: "
                              "they would quote the file)") from None
    return checked.name


def apply(conn, settings, xml, transient=False, quote=True, where=None):
    """Check ``xml`` and define it (``transient``: start it without defining it). True."""
    name = check(conn, settings, xml, quote=quote)
    try:
        if transient:
            conn.createXML(xml, 0)
        else:
            conn.defineXML(xml)
    except libvirt.libvirtError as exc:
        what = "start" if transient else "definition"
        if quote:
            raise VirtError(f"libvirt refused the {what} of domain {name}: {_err(exc)}") from exc
        raise VirtError(f"libvirt refused the domain {what} in {where} (its message is not shown: it "
                        "may quote the file; try virt.define_xml_str with the file's content)") from None
    return True


def read(path, roots, what="domain XML file"):
    """The content of XML file ``path``: under the roots (attach, image roots, base), a regular
    file of at most 1 MiB. Errors never quote the file (``what`` names it in them)."""
    real = roots.readable(path, what)
    try:
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        raise InvalidArgument(f"cannot open {what} {path}: {exc.strerror}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):  # checked before fdopen, which fails on a directory
        os.close(fd)
        raise InvalidArgument(f"{what} {path} is not a regular file")
    with os.fdopen(fd, "rb") as handle:
        if info.st_size > MAX_XML_BYTES:
            raise InvalidArgument(f"{what} {path} is larger than {MAX_XML_BYTES} bytes")
        data = handle.read(MAX_XML_BYTES + 1)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidArgument(f"{what} {path} is not UTF-8 text") from None


def apply_file(conn, settings, path, transient=False):
    """:func:`apply` on the content of file ``path`` (see :func:`read`), errors not quoting it."""
    roots = settings.roots(vmops.pool_targets(conn))
    return apply(conn, settings, read(path, roots), transient=transient, quote=False, where=path)
