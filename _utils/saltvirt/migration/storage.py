"""The storage plan of a migration: per disk, how it gets to the target (pure decisions)."""

from saltvirt.migration.common import LOCAL_FS, NETWORK_FS, check_copy_mode


def storage_plan(disks, seen, copy_storage=None, offline=False, unsafe_fs=()):
    """Decide, per disk, how it gets to the target.

    ``disks``: the ``disks`` of :func:`source_facts`. ``seen``: ``{target_dev: observation}``
    made on the target by :func:`observe_disks` (``probe``: the source's probe file is visible
    there; ``exists``/``size``: the path on the target; ``bases``: the backing chain on the
    target). ``unsafe_fs``: filesystem types the operator allows VIR_MIGRATE_UNSAFE on besides
    :data:`LOCAL_FS`. Returns ``{"disks", "create", "copy_storage", "migrate_disks", "unsafe", "errors",
    "notes"}``. Actions: ``shared`` (same file on both), ``copy`` (pre-created, QEMU copies it),
    ``fetch`` (read-only, or any file of an offline migration: downloaded before), ``present``
    (read-only, already there), ``skip``.
    """
    check_copy_mode(copy_storage)
    out = {"disks": [], "create": [], "copy_storage": None, "migrate_disks": [], "unsafe": False,
           "errors": [], "notes": []}
    copies = []
    for disk in disks:
        obs = seen.get(disk["target"]) or {}
        entry = {"target": disk["target"], "path": disk.get("path"), "readonly": disk.get("readonly", False)}
        out["disks"].append(entry)
        if not _placed(disk, obs, entry, out, offline, unsafe_fs):
            copies.append((disk, obs, entry))
    overlay_copy = False
    for disk, obs, entry in copies:
        overlay_copy = _plan_copy(disk, obs, entry, out, copy_storage) or overlay_copy
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


def _refuse(entry, out, message):
    entry.update(action="error")
    out["errors"].append(message)


def _placed(disk, obs, entry, out, offline, unsafe_fs):
    """Decide a disk QEMU does not copy (or refuse it); False: it must be copied."""
    dev, path = disk["target"], disk.get("path")
    if not path:
        entry.update(action="skip", reason="no medium")
    elif disk.get("nvram"):
        _nvram_file(disk, obs, entry, out)
    elif disk.get("type") == "network":
        entry.update(action="shared", reason="network disk")
    elif disk.get("type") == "block":
        if obs.get("exists"):
            entry.update(action="shared", reason="block device present on the target")
        else:
            _refuse(entry, out, f"disk {dev}: block device {path} does not exist on the target")
    elif obs.get("probe"):
        _shared_file(disk, entry, out, offline, unsafe_fs)
    elif disk.get("readonly"):
        _readonly_file(disk, obs, entry, out)
    elif obs.get("exists"):
        _refuse(entry, out, f"disk {dev}: {path} exists on the target but is not the same file (no shared "
                            "storage there); refusing to overwrite it: remove it or migrate elsewhere")
    elif offline:
        _plan_download(disk, obs, entry, out)
    else:
        return False  # a writable file the target does not share
    return True


def _shared_file(disk, entry, out, offline, unsafe_fs):
    """A file both hosts see: fine on a network filesystem, VIR_MIGRATE_UNSAFE on a local one."""
    entry.update(action="shared", reason="the target sees the source's probe file")
    fs_type = disk.get("fs_type")
    if disk.get("readonly") or offline or fs_type in NETWORK_FS:
        return
    if fs_type in LOCAL_FS or fs_type in set(unsafe_fs or ()):
        out["unsafe"] = True
    else:
        _refuse(entry, out,
                f"disk {disk['target']}: {disk['path']} is shared on a {fs_type or 'unknown'} filesystem, which "
                "salt-virt knows as neither networked nor local: migrating it needs VIR_MIGRATE_UNSAFE; if its "
                f"page cache is coherent between the hosts, add {fs_type!r} to virt:migration:unsafe_fs "
                "on the hypervisors, else copy the disk (copy_storage=all)")


def _nvram_file(disk, obs, entry, out):
    """A UEFI VM's variable store (never copied by QEMU or libvirt): shared, else downloaded from
    the source before the migration (the target's QEMU then writes the guest's flash back into it)."""
    path = disk["path"]
    if obs.get("probe"):
        entry.update(action="shared", reason="UEFI variable store: the target sees the source's probe file")
    elif obs.get("exists"):
        _refuse(entry, out, f"UEFI variable store {path} exists on the target but is not the same file (no "
                            "shared storage there); refusing to overwrite it: remove it or migrate elsewhere")
    else:
        entry.update(action="fetch", reason="UEFI variable store: downloaded from the source first")
        out["create"].append({"target": disk["target"], "path": path, "kind": "fetch", "format": "raw",
                              "size": disk.get("size"), "nvram": True})


def _readonly_file(disk, obs, entry, out):
    """A read-only file QEMU cannot copy: already on the target, or downloaded before."""
    dev, path = disk["target"], disk["path"]
    if obs.get("exists"):
        if obs.get("size") == disk.get("size"):
            entry.update(action="present", reason="read-only, same size on the target")
        else:
            _refuse(entry, out, f"disk {dev}: {path} on the target differs from the source's "
                                f"({obs.get('size')} vs {disk.get('size')} bytes)")
    else:
        entry.update(action="fetch", reason="read-only: downloaded from the source first")
        out["create"].append({"target": dev, "path": path, "kind": "fetch",
                              "format": disk.get("format"), "size": disk.get("size")})


def _plan_download(disk, obs, entry, out):
    """A shut-off VM's own file: no QEMU runs to copy it, so the target downloads it whole
    before the definition moves (an overlay as it is, its base fetched first if missing)."""
    dev, path = disk["target"], disk["path"]
    chain = disk.get("backing") or []
    if chain and _overlay_bases(dev, chain, obs.get("bases"), entry, out) is None:
        return
    entry.update(action="fetch", reason="not shared, shut off: downloaded from the source first")
    out["create"].append({"target": dev, "path": path, "kind": "fetch", "format": disk.get("format"),
                          "size": disk.get("size")})


def _plan_copy(disk, obs, entry, out, copy_storage):
    """A disk QEMU copies into a file pre-created on the target; True when it is an overlay."""
    dev, path = disk["target"], disk["path"]
    chain = disk.get("backing") or []
    create = {"target": dev, "path": path, "format": disk.get("format"),
              "virtual_size": disk.get("virtual_size"), "allocation": disk.get("allocation")}
    overlay = bool(chain) and copy_storage != "all"
    if overlay:
        missing = _overlay_bases(dev, chain, obs.get("bases"), entry, out)
        if missing is None:
            return False
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
    return overlay


def _overlay_bases(dev, chain, bases, entry, out):
    """Check the base images of an overlay on the target: the missing ones, or None (refused).

    A missing single base is fetched from the source first.
    """
    missing = [b["path"] for b, o in zip(chain, bases or [{}] * len(chain), strict=False) if not o.get("exists")]
    different = [
        f"{b['path']} ({o.get('format')}, {o.get('size')} bytes on the target; "
        f"{b.get('format')}, {b.get('size')} bytes on the source)"
        for b, o in zip(chain, bases or [], strict=False)
        if o.get("exists") and (o.get("format"), o.get("size")) != (b.get("format"), b.get("size"))
    ]
    if different:
        _refuse(entry, out, f"disk {dev}: base image on the target differs: {'; '.join(different)}")
        return None
    if missing and len(chain) > 1:
        _refuse(entry, out, f"disk {dev}: its base images {', '.join(missing)} are not on the target; "
                            "copy them there (same paths) or pass copy_storage=all to copy the whole chain")
        return None
    if missing:
        # A base is read-only and shared by overlays: the target gets its own copy from the
        # source over libvirt's TLS stream, then the overlay goes on top of it.
        base = chain[0]
        fetch = {"target": dev, "path": base["path"], "kind": "fetch", "format": base.get("format"),
                 "size": base.get("size"), "mode": 0o444, "base": True}
        if not any(c.get("path") == base["path"] for c in out["create"]):
            out["create"].append(fetch)
        out["notes"].append(f"disk {dev}: base image {base['path']} is fetched from the source first")
    return missing
