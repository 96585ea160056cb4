"""What a migration makes on the target, journaled: disks prepared (or fetched), cleaned up on failure.

Also the source's side of the same bookkeeping: its stale disk copies after a copy-storage
migration. Files a defined domain uses are never removed.
"""

import contextlib
import json
import os
import secrets
import time
import xml.etree.ElementTree as ET

from saltvirt import fileio
from saltvirt.domain import vmops
from saltvirt.domain.xmlview import DomainXml
from saltvirt.errors import InvalidArgument, VirtError, libvirt_message
from saltvirt.migration.common import (
    PAUSED_POSTCOPY,
    PAUSED_POSTCOPY_FAILED,
    is_token,
    libvirt,
)
from saltvirt.storage import images


def _journal_write(path, data):
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    fileio.write_json(path, data)


def journal_path(directory, token):
    if not is_token(token):
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
            _make_parents(path, record, journal)
            _make_disk(item, source_conn)
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


def _make_parents(path, record, journal):
    """Create the missing directories above ``path``, each journaled before the next."""
    missing, directory = [], os.path.dirname(path)
    while not os.path.isdir(directory):
        missing.append(directory)
        directory = os.path.dirname(directory)
    for directory in reversed(missing):
        os.mkdir(directory, 0o755)  # QEMU's user must traverse to the disk
        record["dirs"].append(directory)
        _journal_write(journal, record)


def _make_disk(item, source_conn):
    """Create one disk of a storage plan: a qcow2 overlay, a blank image, or a download."""
    path = item["path"]
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
        raise VirtError(f"cannot download {remote_path} from the source: {libvirt_message(exc)}") from exc
    finally:
        if transient and pool is not None:
            with contextlib.suppress(libvirt.libvirtError):
                pool.destroy()
    return dest


def _unlink_unless(paths, keep, resolve=False):
    """Remove each of ``paths`` for which ``keep(path)`` is false: ``(removed, kept)``.

    ``resolve`` removes the file a symbolic link points to, not the link.
    """
    removed, kept = [], []
    for path in paths:
        if keep(path):
            kept.append(path)
            continue
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.realpath(path) if resolve else path)
            removed.append(path)
    return removed, kept


def _remove_recorded(record, keep=()):
    removed, kept = _unlink_unless(reversed(record.get("created", [])), lambda path: path in keep)
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
                used |= DomainXml.parse(dom.XMLDesc(flags)).files()
            except libvirt.libvirtError:
                continue
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

    def keep(path):
        real = os.path.realpath(path)
        return not real.startswith(owned_dir + os.sep) or real in used

    removed, kept = _unlink_unless(paths or (), keep, resolve=True)
    if os.path.isdir(owned_dir) and not os.listdir(owned_dir):
        with contextlib.suppress(OSError):
            os.rmdir(owned_dir)
    return {"removed": removed, "kept": kept}
