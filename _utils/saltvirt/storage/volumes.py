"""libvirt calls on storage volumes: define, upload, resize, delete, inventory (the classic
``virt.volume_*`` API).

Volumes are made, filled and removed only in pools the operator's
:class:`~saltvirt.storage.paths.PoolPolicy` allows; volume names are file names (no path, no
``..``); an uploaded file and a backing store must be under the hypervisor's roots
(:class:`~saltvirt.storage.paths.Roots`), and an uploaded image is inspected like any image from
a caller (no backing file, no external data file).
"""

import contextlib
import os
import xml.etree.ElementTree as ET  # noqa: S405 (libvirt's own XML, or ours)

from saltvirt import cmd, connection
from saltvirt.connection import libvirt
from saltvirt.domain.xmlview import DomainXml
from saltvirt.errors import AlreadyExists, InvalidArgument
from saltvirt.storage import images, paths, pools, poolxml

VOLUME_TYPES = ("file", "block", "dir", "network", "netdir", "ploop")
MIB = 1024 * 1024


def lookup(pool, pool_name, name):
    paths.validate_volume_name(name)
    return connection.lookup(pool.storageVolLookupByName, name, libvirt.VIR_ERR_NO_STORAGE_VOL,
                             f"volume {name} is not in storage pool {pool_name} (virt.pool_list_volumes "
                             "lists them)", f"volume {pool_name}/{name}")


def _mib(value, what):
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = -1
    if isinstance(value, bool) or number < 0:
        raise InvalidArgument(f"{what}={value!r} must be a whole number of MiB")
    return number


def volume_xml(name, size, allocation=0, fmt=None, vtype=None, permissions=None, backing_store=None,
               nocow=False):
    """The ``<volume>`` of the classic ``virt.volume_define`` arguments (sizes in MiB)."""
    paths.validate_volume_name(name)
    if vtype is not None and vtype not in VOLUME_TYPES:
        raise InvalidArgument(f"volume {name}: type={vtype!r} must be one of {', '.join(VOLUME_TYPES)} (or None)")
    vol = ET.Element("volume", {"type": vtype} if vtype else {})
    ET.SubElement(vol, "name").text = name
    ET.SubElement(vol, "capacity", unit="KiB").text = str(_mib(size, "size") * 1024)
    ET.SubElement(vol, "allocation", unit="KiB").text = str(_mib(allocation, "allocation") * 1024)
    target = ET.SubElement(vol, "target")
    if fmt:
        ET.SubElement(target, "format", type=str(fmt))
    perms = poolxml._permissions(name, permissions)  # pylint: disable=protected-access
    if perms:
        node = ET.SubElement(target, "permissions")
        for key in poolxml.PERMISSION_KEYS:
            if key in perms:
                ET.SubElement(node, key).text = perms[key]
    if nocow:
        ET.SubElement(target, "nocow")
    if backing_store:
        if not isinstance(backing_store, dict) or set(backing_store) != {"path", "format"}:
            raise InvalidArgument(f"volume {name}: backing_store must be {{path: ..., format: ...}} (the format "
                                  "is never guessed)")
        backing = ET.SubElement(vol, "backingStore")
        ET.SubElement(backing, "path").text = backing_store["path"]
        ET.SubElement(backing, "format", type=str(backing_store["format"]))
    return ET.tostring(vol, encoding="unicode")


def define(conn, pool_name, name, size, allocation=0, fmt=None, vtype=None, permissions=None,
           backing_store=None, nocow=False, *, policy, roots):
    """Create volume ``name`` in pool ``pool_name`` (``size``/``allocation`` in MiB; a logical
    pool's volumes are allocated whole, as classic). Returns True."""
    pool, found = pools.checked(conn, pool_name, policy)
    if backing_store and isinstance(backing_store, dict) and backing_store.get("path"):
        backing_store = dict(backing_store, path=roots.image(backing_store["path"], f"volume {name}: backing_store"))
    if found.ptype == "logical":
        allocation = size
    document = volume_xml(name, size, allocation, fmt, vtype, permissions, backing_store, nocow)
    with pools.libvirt_errors(f"storage pool {pool_name}"):
        if name in pool.listVolumes():
            raise AlreadyExists(f"volume {name} is already in storage pool {pool_name}")
    with pools.libvirt_errors(f"creating volume {pool_name}/{name}"):
        pool.createXML(document, 0)
    return True


def _hole_or_data(fd):
    """``[in_data, length]`` of the section at ``fd``'s position (libvirt's sparse stream)."""
    here = os.lseek(fd, 0, os.SEEK_CUR)
    end = os.fstat(fd).st_size
    if here >= end:
        return [False, 0]  # the end: nothing more to send
    try:
        data = os.lseek(fd, here, os.SEEK_DATA)
    except OSError:  # ENXIO: only a hole up to the end
        data = end
    if data > here:
        section = [False, data - here]
    else:
        section = [True, os.lseek(fd, here, os.SEEK_HOLE) - here]
    os.lseek(fd, here, os.SEEK_SET)
    return section


def send_file(conn, vol, path, offset=0, length=0, sparse=False):
    """Write the file ``path`` into volume ``vol`` over libvirt's upload stream."""
    stream = conn.newStream(0)
    fd = os.open(path, os.O_RDONLY)
    try:
        vol.upload(stream, offset, length, libvirt.VIR_STORAGE_VOL_UPLOAD_SPARSE_STREAM if sparse else 0)
        try:
            if sparse:
                stream.sparseSendAll(lambda _s, nbytes, f: os.read(f, nbytes), lambda _s, f: _hole_or_data(f),
                                     lambda _s, skip, f: os.lseek(f, skip, os.SEEK_CUR), fd)
            else:
                stream.sendAll(lambda _s, nbytes, f: os.read(f, nbytes), fd)
            stream.finish()
        except BaseException:
            stream.abort()
            raise
    finally:
        os.close(fd)


def upload(conn, pool_name, name, file, offset=0, length=0, sparse=False, *, policy, roots, image_policy):
    """Write ``file`` (under the hypervisor's roots; inspected as an untrusted image) into volume
    ``pool_name/name``. Returns True."""
    pool, _found = pools.checked(conn, pool_name, policy)
    vol = lookup(pool, pool_name, name)
    path = roots.image(file, "volume_upload file")
    images.inspect_untrusted(path, image_policy["allow_backing"], image_policy["max_virtual_size"])
    with pools.libvirt_errors(f"uploading {path} to volume {pool_name}/{name}"):
        send_file(conn, vol, path, int(offset), int(length), bool(sparse))
    return True


def delete(conn, pool_name, name, *, policy):
    pool, _found = pools.checked(conn, pool_name, policy)
    vol = lookup(pool, pool_name, name)
    with pools.libvirt_errors(f"deleting volume {pool_name}/{name}"):
        vol.delete(0)
    return True


def resize(conn, pool_name, name, size, *, policy):
    """Grow volume ``pool_name/name`` to ``size`` MiB (shrinking loses data: refused)."""
    pool, _found = pools.checked(conn, pool_name, policy)
    vol = lookup(pool, pool_name, name)
    nbytes = _mib(size, "size") * MIB
    with pools.libvirt_errors(f"resizing volume {pool_name}/{name}"):
        current = vol.info()[1]
        if nbytes < current:
            raise InvalidArgument(f"volume {pool_name}/{name} is {current // MIB} MiB: shrinking it to {size} MiB "
                                  "would lose data, refused")
        if nbytes > current:
            vol.resize(nbytes, 0)
    return True


def _used_by(conn):
    """``{path: [domain names]}`` of every disk source of every domain."""
    out = {}
    for dom in conn.listAllDomains(0):
        for disk in DomainXml.parse(dom.XMLDesc(0)).disks:
            for path in (disk.source_file, disk.source_dev, *disk.backing):
                if path and path.startswith("/"):
                    out.setdefault(os.path.realpath(path), []).append(dom.name())
    return out


def _volume_info(vol, users, backing_of):
    kind, capacity, allocation = vol.info()[:3]
    doc = ET.fromstring(vol.XMLDesc(0))  # noqa: S314 (libvirt's XML)
    backing = doc.find("backingStore/path")
    backing_fmt = doc.find("backingStore/format")
    fmt = doc.find("target/format")
    path = vol.path()
    real = os.path.realpath(path) if path.startswith("/") else path
    # Domains using the volume, directly or as the backing file of one of their disks.
    overlays = {p for p, base in backing_of.items() if base == path}
    used_by = sorted({d for p in {real, *overlays} for d in users.get(os.path.realpath(p), [])})
    return {
        "type": VOLUME_TYPES[kind] if kind < len(VOLUME_TYPES) else "unknown",
        "key": vol.key(),
        "path": path,
        "capacity": capacity,
        "allocation": allocation,
        "used_by": used_by,
        "backing_store": None if backing is None else {
            "path": backing.text, "format": None if backing_fmt is None else backing_fmt.get("type")},
        "format": None if fmt is None else fmt.get("type"),
    }


def infos(conn, pool_name=None, name=None):
    """``{pool: {volume: {type, key, path, capacity, allocation, used_by, backing_store,
    format}}}`` of the running pools (one, or all), one volume or all; pools without a
    matching volume are left out, as classic."""
    with pools.libvirt_errors("reading the storage volumes"):
        running = [p for p in conn.listAllStoragePools(0)
                   if (pool_name is None or p.name() == pool_name) and p.isActive()]
        users = _used_by(conn)
        vols = {p.name(): [v for v in p.listAllVolumes(0) if name is None or v.name() == name] for p in running}
        backing_of = {}
        for found in vols.values():
            for vol in found:
                base = ET.fromstring(vol.XMLDesc(0)).findtext("backingStore/path")  # noqa: S314
                if base:
                    backing_of[vol.path()] = base
        out = {}
        for pname, found in vols.items():
            entries = {}
            for vol in found:
                try:
                    entries[vol.name()] = _volume_info(vol, users, backing_of)
                except libvirt.libvirtError:
                    continue  # removed since the pool's last refresh
            if entries:
                out[pname] = entries
    return out


# ---------------------------------------------------------------------------- VM disks in pools

#: Pools whose volumes are block devices a VM disk can use as they are, named freely (a
#: ``disk`` pool's volumes must be named after their partitions; iSCSI/SCSI/multipath pools
#: cannot make volumes).
BLOCK_POOLS = ("logical",)


def disk_pool(conn, name, policy):
    """Where the disks of ``virt.init``'s ``pool: <name>`` go: ``("dir", target directory)`` for a
    directory pool (files, as with a ``pool`` directory), ``("volume", name)`` for a pool of
    block volumes (created through libvirt; the pool must pass ``policy``)."""
    pool, found = pools.view(conn, name)
    with pools.libvirt_errors(f"storage pool {name}"):
        active = pool.isActive()
    if not active:
        raise InvalidArgument(f"storage pool {name} is not running: start it (virt.pool_start {name}) before "
                              "putting disks in it")
    if found.ptype in paths.DIRECTORY_POOLS:
        return "dir", found.target
    if found.ptype not in BLOCK_POOLS:
        raise InvalidArgument(f"storage pool {name} is a {found.ptype} pool: VM disks go to pools of type "
                              f"{', '.join(paths.DIRECTORY_POOLS + BLOCK_POOLS)}")
    policy.check(name, found.settings())
    return "volume", name


def _delete_quietly(vol):
    vol.delete(0)


def create_disk_volume(conn, plan, undo):
    """Create the volume of disk ``plan`` (a :class:`saltvirt.provision.DiskPlan` with
    ``volume_pool``) through libvirt, big enough for its size and image, and fill it from its
    image (``qemu-img convert`` into the block device); the volume's undo is registered before
    it is filled. Sets ``plan.path``."""
    pool = pools.lookup(conn, plan.volume_pool)
    capacity = plan.size or 0
    if plan.source:
        details = images.check_source(plan.source, fmt=plan.source_format)
        capacity = max(capacity, details["virtual_size"] or 0)
    mib = -(-capacity // MIB)
    with pools.libvirt_errors(f"storage pool {plan.volume_pool}"):
        if plan.volume in pool.listVolumes():
            raise AlreadyExists(f"disk {plan.name!r}: volume {plan.volume} is already in storage pool "
                                f"{plan.volume_pool} (left from another VM?); remove it or choose another name")
    with pools.libvirt_errors(f"creating volume {plan.volume_pool}/{plan.volume}"):
        vol = pool.createXML(volume_xml(plan.volume, mib, mib), 0)
    undo.push(f"volume {plan.volume_pool}/{plan.volume}", _delete_quietly, vol)
    plan.path = vol.path()
    if plan.source:
        cmd.run([images.QEMU_IMG, "convert", "-n", "-f", details["format"], "-O", "raw", plan.source, plan.path],
                timeout=3600)


def owned_volumes(conn, vm_name, disk_paths):
    """The pool volumes among ``disk_paths`` that ``virt.init`` made for ``vm_name`` (their names
    start with ``<vm>-``, as it names disks in pools); pools are refreshed first so that files
    made in a pool's directory are known as volumes."""
    for pool in conn.listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE):
        with contextlib.suppress(libvirt.libvirtError):
            pool.refresh(0)
    found = []
    for path in disk_paths:
        try:
            vol = conn.storageVolLookupByPath(path)
        except libvirt.libvirtError:
            continue
        if vol.name().startswith(f"{vm_name}-"):
            found.append(vol)
    return found
