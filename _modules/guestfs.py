"""
Mount disk images on the host with libguestfs (``guestmount``), Salt-core compatible.

Salt 3008 no longer ships a ``guestfs`` module, yet Salt core's ``seed.apply`` and
``mount.mount(..., util='guestfs')`` / ``mount.umount(..., util='guestfs')`` still call
``guestfs.mount(location, root=<mount point>)`` and ``guestfs.umount(<mount point>,
disk=<image>)``. This module provides exactly those two calls (plus ``filesystems`` and
``mounts``) as thin glue over ``saltvirt.seeding``:

* the filesystem to mount is chosen on the host from the image's partition table (largest
  Linux filesystem, else FAT), so an image without one fails at once instead of after
  booting the libguestfs appliance;
* ``umount`` waits until the guestmount daemon has exited (it is tracked with
  ``--pid-file``): until then the appliance still holds the image open and locked;
* a failed mount leaves no FUSE mount, daemon or appliance behind.

Configuration (all optional)::

    virt:
      guestfs:
        force_tcg: auto     # true/false; auto = only when KVM cannot run guests here
        timeout: 600        # seconds guestmount may take (the appliance boots under TCG)
        state_dir: /run/saltvirt/guestfs
"""

import logging
import sys

import salt.utils.path
from salt.exceptions import CommandExecutionError, SaltInvocationError

# The minion's main process may hold the library preloaded (_grains/virt.py): read it anew
# if saltutil.sync_all has replaced its files since.
if hasattr(sys.modules.get("saltvirt"), "unload_if_stale"):
    sys.modules["saltvirt"].unload_if_stale()

try:
    from saltvirt import seeding, settings
    from saltvirt.errors import InvalidArgument, NotFound, VirtError

    HAS_SALTVIRT = True
    IMPORT_ERROR = None
except ImportError as _exc:  # _utils not synced, or a Python library it needs is missing
    HAS_SALTVIRT = False
    try:
        from saltvirt.errors import import_advice

        IMPORT_ERROR = import_advice(_exc)
    except ImportError:
        IMPORT_ERROR = f"the salt-virt library could not be imported ({_exc}); run saltutil.sync_all"

log = logging.getLogger(__name__)

__virtualname__ = "guestfs"


def __virtual__():
    if not HAS_SALTVIRT:
        return False, f"guestfs: {IMPORT_ERROR}"
    if not salt.utils.path.which("guestmount"):
        return False, "guestfs: guestmount is not installed (apt-get install libguestfs-tools)"
    return __virtualname__


def _settings():
    return settings.from_salt(__salt__["config.get"], __opts__, __grains__, __salt__)


def _env():
    return _settings().guestfs_env()


def _state_dir():
    return _settings().guestfs_state_dir


def _raise(exc):
    if isinstance(exc, (InvalidArgument, NotFound)):
        raise SaltInvocationError(str(exc)) from exc
    raise CommandExecutionError(str(exc)) from exc


def mount(location, access="rw", root=None, device=None, image_format=None, timeout=None):
    """
    Mount a filesystem of the disk image ``location`` and return the mount point.

    access
        ``rw`` (default) or ``ro``.
    root
        The mount point (Salt core passes ``seed.apply``'s ``mount_point`` here). Default: a
        new temporary directory, removed again by :func:`umount`.
    device
        The filesystem as libguestfs names it (``/dev/sda1``, ``/dev/sda`` for a disk without
        partitions). Default: the largest Linux filesystem, else the largest FAT one.
    image_format
        ``raw``, ``qcow2``... (default: detected by ``qemu-img info``).

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 guestfs.mount /srv/salt-images/vm1/system.qcow2
        salt hypervisor1 guestfs.mount /srv/images/disk.img access=ro root=/mnt/disk device=/dev/sda2
    """
    if access not in ("rw", "ro"):
        raise SaltInvocationError(f"access must be 'rw' or 'ro', not {access!r}")
    try:
        record = seeding.guest_mount(
            location, root, device=device, fmt=image_format, readonly=access == "ro",
            env=_env(), timeout=int(timeout or _settings().get("guestfs:timeout", 600)), state_dir=_state_dir(),
        )
    except VirtError as exc:
        _raise(exc)
    log.info("guestfs: %s (%s) of %s mounted on %s in %.1fs", record["device"], record["fstype"],
             location, record["mountpoint"], record["seconds"])
    return record["mountpoint"]


def umount(name, disk=None, timeout=120):
    """
    Unmount a :func:`mount` and wait until guestmount has released the image.

    name
        The mount point.
    disk
        The image: also wait for any libguestfs process still using it (Salt core's
        ``mount.umount(..., util='guestfs')`` passes it).

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 guestfs.umount /tmp/saltvirt-guestfs-x1y2z3
        salt hypervisor1 guestfs.umount /mnt/disk disk=/srv/images/disk.img
    """
    try:
        return seeding.guest_umount(name, disk=disk, timeout=int(timeout), state_dir=_state_dir())
    except VirtError as exc:
        _raise(exc)


def filesystems(location, image_format=None):
    """
    The filesystems of a disk image (device, fstype, label, size, writable), read from its
    partition table without starting libguestfs.

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 guestfs.filesystems /srv/images/disk.qcow2
    """
    try:
        return seeding.filesystems(location, image_format)
    except VirtError as exc:
        _raise(exc)


def mounts():
    """
    The guestfs mounts made by :func:`mount` that are still active (mounted or daemon running).

    CLI Example:

    .. code-block:: bash

        salt hypervisor1 guestfs.mounts
    """
    return seeding.active_mounts(_state_dir())
