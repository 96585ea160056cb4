"""A caller's storage volume XML (the classic ``virt.define_vol_xml_str`` / ``define_vol_xml_path``),
checked before libvirt sees it.

Callers granted only ``virt.*`` are not trusted, so a volume definition gets the limits of
:func:`saltvirt.storage.volumes.define` and no more:

* the pool must exist, be running and pass the operator's pool policy (``virt:pools:*``): a
  caller fills only pools it could have defined;
* the volume name is a file name (no ``/``, no ``..``);
* a ``<target><path>`` must lie in the pool's own directory (libvirt names the file after the
  volume in most pools, but the document is not trusted to say so);
* a ``<backingStore><path>`` is read by QEMU: it must lie under the image roots
  (:meth:`saltvirt.storage.paths.Roots.image`, symlinks followed; the resolved path is what
  libvirt gets), and its ``<format>`` is required (never probed, as ``volume_define``);
* ``<permissions>`` take what ``volume_define``'s ``permissions`` takes;
* only the elements of libvirt's volume schema that describe a new volume (and the read-only
  ones ``virsh vol-dumpxml`` prints, so its output can be fed back) are accepted; anything
  else is refused by name: ``<encryption>`` (it names a host secret), ``<source>`` extents
  (host devices), other namespaces, DOCTYPE and entities.

The document libvirt receives is the checked one, written back from the parsed tree. All
problems are reported at once; for a file (``quote=False``) no message quotes its content.
"""

import os
import xml.etree.ElementTree as ET  # noqa: S405 (parsed without entities: refused before)

from saltvirt.domain import definexml, xmlpolicy, xmlview
from saltvirt.domain.xmlpolicy import Problem
from saltvirt.errors import AlreadyExists, InvalidArgument, VirtError
from saltvirt.errors import libvirt_message as _err
from saltvirt.storage import paths, pools, poolxml
from saltvirt.storage.volumes import VOLUME_TYPES

try:
    import libvirt
except ImportError:
    libvirt = None

_UNIT = ("unit",)
_TIMES = ("atime", "mtime", "ctime", "btime")
#: Element path -> the attributes it may carry.
ELEMENTS = {
    "volume": ("type",),
    "volume/name": (), "volume/key": (),
    "volume/capacity": _UNIT, "volume/allocation": _UNIT, "volume/physical": _UNIT,
    "volume/source": (),
    "volume/target": (), "volume/target/path": (), "volume/target/format": ("type",),
    "volume/target/permissions": (), "volume/target/compat": (), "volume/target/nocow": (),
    "volume/target/clusterSize": _UNIT, "volume/target/features": (),
    "volume/target/features/lazy_refcounts": (), "volume/target/features/extended_l2": (),
    "volume/target/timestamps": (),
    "volume/backingStore": (), "volume/backingStore/path": (), "volume/backingStore/format": ("type",),
    **{f"volume/target/permissions/{key}": () for key in poolxml.PERMISSION_KEYS},
    **{f"volume/target/timestamps/{key}": () for key in _TIMES},
}
#: Elements refused with their own reason.
REFUSED = {
    "volume/target/encryption": "volume encryption uses a libvirt secret of the host: not accepted from "
                                "callers (the operator creates encrypted volumes)",
    "volume/source": "a volume's <source> lists host device extents: leave it empty",
}


class Refused(xmlpolicy.Refused):
    """The volume XML was refused (every problem at once)."""

    head = "volume XML refused, nothing created: "


def _local(tag):
    return tag if isinstance(tag, str) and not tag.startswith("{") else None


def _walk(elem, where, problems):
    """Every element against :data:`ELEMENTS` / :data:`REFUSED`."""
    for attr in elem.attrib:
        if attr not in ELEMENTS.get(where, ()):
            problems.append(Problem(f"<{where}> attribute", attr, "not accepted in a volume definition"))
    seen = set()
    for child in elem:
        tag = _local(child.tag)
        path = f"{where}/{tag}" if tag else None
        if path in seen:  # every element of a volume is single: which copy libvirt reads is not ours to guess
            problems.append(Problem(f"<{path}>", "", "given twice: give it once"))
        seen.add(path)
        if path in REFUSED and (path != "volume/source" or len(child)):
            problems.append(Problem(f"<{path}>", "", REFUSED[path]))
        elif path not in ELEMENTS:
            problems.append(Problem(f"<{where}> child", str(child.tag), "not accepted in a volume definition "
                                    "(see docs/storage.rst for the elements accepted)"))
        else:
            _walk(child, path, problems)


def _text(root, path):
    return (root.findtext(path) or "").strip()


def _check_target(root, found, problems):
    target = _text(root, "target/path")
    if not target:
        return
    where = found.target if found.ptype in paths.DIRECTORY_POOLS else None
    if not where or not target.startswith("/") or not paths.is_under(os.path.realpath(target), where):
        problems.append(Problem("<target><path>", target, "must lie in the pool's own directory "
                                f"({found.target or 'this pool has none'}); or leave it out (libvirt names it)"))


def _check_permissions(root, name, problems):
    node = root.find("target/permissions")
    if node is None:
        return
    try:
        poolxml._permissions(name, {child.tag: (child.text or "").strip() for child in node})  # noqa: SLF001
    except InvalidArgument:
        problems.append(Problem("<target><permissions>", "", "mode is an octal mode up to 0777, owner and "
                                "group numeric ids"))


def _check_backing(root, roots, problems):
    node = root.find("backingStore")
    if node is None:
        return
    path_elem = node.find("path")
    fmt = node.find("format")
    if path_elem is None or not (path_elem.text or "").strip():
        problems.append(Problem("<backingStore>", "", "needs a <path> (under the image roots)"))
    else:
        path = path_elem.text.strip()
        try:
            path_elem.text = roots.image(path, "backingStore path")
        except InvalidArgument:
            problems.append(Problem("<backingStore><path>", path, "must lie under the image roots "
                                    "(virt:image_roots, a pool's directory, <virt:images>/base)"))
    if fmt is None or not fmt.get("type"):
        problems.append(Problem("<backingStore>", "", "needs <format type='...'/> (the format is never guessed)"))


def check(xml, found, roots, quote=True):
    """Check volume ``xml`` for pool ``found`` (its :class:`~saltvirt.storage.poolxml.PoolXml`);
    returns ``(name, document for libvirt)`` or raises :class:`Refused` / InvalidArgument."""
    if not isinstance(xml, str) or not xml.strip():
        raise InvalidArgument("the volume XML must be a non-empty string")
    if "<!DOCTYPE" in xml or "<!ENTITY" in xml:
        raise InvalidArgument("a volume definition has no DOCTYPE or entities: refused")
    try:
        root = xmlview.parse(xml, "volume")
    except InvalidArgument as exc:
        raise InvalidArgument(str(exc) if quote else "the file is not a libvirt volume definition (details not "
                              "shown: they would quote the file)") from None
    problems = []
    _walk(root, "volume", problems)
    name = _text(root, "name")
    try:
        paths.validate_volume_name(name)
    except InvalidArgument:
        problems.append(Problem("<name>", name, "a volume name is a file name: letters, digits and _.+- "
                                "(starting with a letter or digit), no '/', no '..'"))
    if root.get("type") not in (None, *VOLUME_TYPES):
        problems.append(Problem("<volume> type", root.get("type"), f"must be one of {', '.join(VOLUME_TYPES)}"))
    _check_target(root, found, problems)
    _check_permissions(root, name, problems)
    _check_backing(root, roots, problems)
    if problems:
        raise Refused(problems, quote)
    return name, ET.tostring(root, encoding="unicode")


def define(conn, pool_name, xml, *, policy, roots, quote=True, where=None):
    """Create the volume of ``xml`` in pool ``pool_name`` once :func:`check` accepts it. True.

    ``quote=False`` (a file's content, named ``where``): no message quotes the document."""
    pool, found = pools.checked(conn, pool_name, policy)
    with pools.libvirt_errors(f"storage pool {pool_name}"):
        active = pool.isActive()
    if not active:
        raise InvalidArgument(f"storage pool {pool_name} is not running: start it (virt.pool_start {pool_name})")
    name, document = check(xml, found, roots, quote=quote)
    with pools.libvirt_errors(f"storage pool {pool_name}"):
        if name in pool.listVolumes():
            shown = name if quote else "of that name"
            raise AlreadyExists(f"a volume {shown} is already in storage pool {pool_name}")
    try:
        pool.createXML(document, 0)
    except libvirt.libvirtError as exc:
        if quote:
            raise VirtError(f"libvirt refused volume {pool_name}/{name}: {_err(exc)}") from exc
        raise VirtError(f"libvirt refused the volume of {where} in storage pool {pool_name} (its message is not "
                        "shown: it may quote the file; try virt.define_vol_xml_str with the file's content)") from None
    return True


def define_file(conn, pool_name, path, *, policy, roots):
    """:func:`define` on the content of file ``path`` (read as ``virt.define_xml_path`` reads
    its file: :func:`saltvirt.domain.definexml.read`); no error quotes the file."""
    return define(conn, pool_name, definexml.read(path, roots, "volume XML file"), policy=policy, roots=roots,
                  quote=False, where=path)
