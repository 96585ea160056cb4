"""A VM's files over its life: the first-boot seed, purge, and what an interrupted init left.

``virt.init`` writes into the VM's own directory (``virt:images/<name>/``) its disks, the
cidata seed ISO (which holds the minion's private key: it serves the first boot only), the
public half of that key (so the master can accept it even when the runner is gone) and a
first-boot marker. These functions keep those files in step with the domain.
"""

import contextlib
import os

from saltvirt import fileio, provision
from saltvirt.domain import model as dommod
from saltvirt.domain import vmops
from saltvirt.errors import InvalidArgument
from saltvirt.storage import bases, pools, volumes


def _unlink(path):
    """True if ``path`` was there and is removed now."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


def start(conn, name, settings):
    """Start the domain; its cidata seed serves the first boot only (detached and removed on any
    later start)."""
    ret = {"name": name}
    if os.path.exists(settings.vm_file(name, "seed_iso")):
        if os.path.exists(settings.vm_file(name, "first_boot")):
            ret["unseeded"] = unseed(conn, name, settings)["removed"] is not None
        else:
            fileio.write_atomic(settings.vm_file(name, "first_boot"), b"", 0o600)
    ret["started"] = vmops.start(vmops.lookup(conn, name))
    return ret


def unseed(conn, name, settings):
    """Detach the VM's cidata seed ISO and delete it; nothing to do is not an error."""
    iso = settings.vm_file(name, "seed_iso")
    detached = vmops.detach_file_disk(vmops.lookup(conn, name), iso)
    return {"name": name, "detached": detached, "removed": iso if _unlink(iso) else None}


def init_status(conn, name, settings):
    """What this host has of a VM ``virt.init`` may have been creating (``virt.reconcile`` reads it)."""
    vm_dir, pub = settings.vm_dir(name), None
    defined = vmops.exists(conn, name)
    state = vmops.state(vmops.lookup(conn, name)) if defined else None
    with contextlib.suppress(FileNotFoundError), open(settings.vm_file(name, "seed_pub")) as fh:
        pub = fh.read()
    files = sorted(os.listdir(vm_dir)) if os.path.isdir(vm_dir) else []
    return {"name": name, "defined": defined, "state": state, "minion_pub": pub, "files": files}


def seeded_vms(conn, settings):
    """Defined domains ``virt.init`` seeded with a minion key (their directory holds the public half)."""
    return sorted(n for n in vmops.list_domains(conn) if os.path.isfile(settings.vm_file(n, "seed_pub")))


def remove_leftovers(conn, name, settings):
    """Remove the directory of a VM that was never defined (an interrupted init)."""
    dommod.validate_name(name)
    if vmops.exists(conn, name):
        raise InvalidArgument(f"{name} is defined on {settings.minion_id}: purge it instead")
    vm_dir, removed = settings.vm_dir(name), []
    if os.path.isdir(vm_dir):
        for root, dirs, files in os.walk(vm_dir, topdown=False):
            for entry in files:
                os.unlink(os.path.join(root, entry))
                removed.append(os.path.join(root, entry))
            for entry in dirs:
                os.rmdir(os.path.join(root, entry))
        os.rmdir(vm_dir)
    return {"name": name, "removed": removed}


def purge(conn, name, settings):
    """Destroy and undefine the domain, delete the disks ``virt.init`` made and its own files.

    Nothing is done if one of its disks has become the base of another image or a disk of
    another domain (the users are named).
    """
    dom = vmops.lookup(conn, name)
    vm_dir = settings.vm_dir(name)
    data = vmops.info(conn, name)
    owned = vmops.owned_disks(data, vm_dir)
    # The volumes virt.init made in libvirt pools (<vm>-<disk>): files of directory pools are
    # removed with the VM's own disks, block volumes through libvirt.
    pooled = volumes.owned_volumes(conn, name, [d["file"] for d in data["disks"].values() if d.get("file")])
    pooled_files = [v.path() for v in pooled if v.path() not in owned and os.path.isfile(v.path())]
    bases.refuse_if_used(conn, owned + pooled_files, settings.images_dir, ignore=owned + pooled_files, domain=name)
    nvram = settings.vm_file(name, "nvram")
    had_nvram = os.path.exists(nvram)
    vmops.destroy(dom)
    vmops.undefine(dom)  # removes a UEFI variable store (ours or libvirt's) too
    removed_volumes = []
    for vol in pooled:
        path = vol.path()
        with pools.libvirt_errors(f"deleting volume {path} of {name}"):
            vol.delete(0)
        removed_volumes.append(path)
    # The cidata seed is not a disk any more once detached, but it is ours too, and so is the
    # console log virt.init configured (a later VM of the same name must not append to it).
    own_files = [settings.vm_file(name, what) for what in ("seed_iso", "seed_pub", "first_boot")]
    removed = removed_volumes + [path for path in (*owned, *own_files, settings.serial_log(name)) if _unlink(path)]
    if had_nvram and (_unlink(nvram) or not os.path.exists(nvram)):
        removed.append(nvram)
    provision.remove_tree_if_empty(vm_dir)
    return {"name": name, "purged": True, "removed": removed}
