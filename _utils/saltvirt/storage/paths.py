"""Where a call may point at files of the hypervisor.

A ``virt.init`` call names files: the image to copy, a disk's own ``image``, a ``source_file``
to attach, a ``pool`` directory for new disks, seed keys. Callers granted ``virt.*`` are not
trusted, so each path must resolve (symlinks followed) under a root the operator chose:

* images to copy or back overlays: ``<virt:images>/base``, the target directories of libvirt's
  storage pools, and ``virt:image_roots`` (default ``/var/lib/libvirt/images``);
* files attached as they are (``source_file``) and seed keys: the pools' targets and
  ``virt:attach_roots`` (default: none);
* directories new disks go to (``pool``): the pools' targets and ``virt:image_roots`` (without
  ``pool`` they go to ``<virt:images>/<vm>``);
* UEFI loaders and variable store templates (``boot: {loader, nvram}``): the firmware
  directories ``virt:domain_xml:firmware_roots`` (the ones caller XML may name too; default:
  OVMF's, AAVMF's, edk2's, QEMU's... under ``/usr/share``) and the image roots; kernels and
  initrds (``boot: {kernel, initrd}``) are checked as images.

Nothing under ``virt:images`` but ``base/`` is ever named by a call: the VM directories hold
other VMs' disks and keys.
"""

import fnmatch
import os
import re

from saltvirt.errors import InvalidArgument

DEFAULT_IMAGES = "/srv/salt-images"
DEFAULT_IMAGE_ROOTS = ("/var/lib/libvirt/images",)
#: Where distributions install firmware: UEFI (OVMF, AAVMF, edk2), QEMU's own, SeaBIOS, iPXE ROMs.
DEFAULT_FIRMWARE_ROOTS = ("/usr/share/OVMF", "/usr/share/ovmf", "/usr/share/AAVMF", "/usr/share/edk2",
                          "/usr/share/qemu", "/usr/share/seabios", "/usr/share/ipxe")
BASE_DIR = "base"

_DISK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")


def images_dir(value):
    """``virt:images`` as an absolute, normalised path; a relative one is refused."""
    value = DEFAULT_IMAGES if value in (None, "") else value
    if not isinstance(value, str) or not os.path.isabs(value):
        raise InvalidArgument(f"virt:images is {value!r}: it must be an absolute directory, e.g. {DEFAULT_IMAGES}")
    return os.path.normpath(value)


def validate_disk_name(name):
    """A disk name becomes a file name: letters, digits and ``_.+-``, no path, no dot first."""
    if not isinstance(name, str) or not _DISK_NAME.match(name) or ".." in name:
        raise InvalidArgument(
            f"disk name {name!r} is not allowed: use 1 to 64 letters, digits and _.+- "
            "(starting with a letter or digit), e.g. data"
        )
    return name


def disk_stem(vm_name, disk_name, pooled):
    """A new disk's file name without extension: ``<vm>-<disk>`` in a ``pool`` directory,
    which VMs share, else ``<disk>`` (in the VM's own directory)."""
    return f"{vm_name}-{disk_name}" if pooled else disk_name


def _real(path):
    return os.path.realpath(os.path.abspath(path))


def _under(path, root):
    root = _real(root)
    return path == root or path.startswith(root.rstrip("/") + "/")


def is_under(path, root):
    """Whether the real path ``path`` is ``root`` or inside it (``root``'s symlinks followed)."""
    return _under(path, root)


class Roots:
    """The operator's roots for one hypervisor (see the module documentation)."""

    def __init__(self, images, pool_targets=(), image_roots=DEFAULT_IMAGE_ROOTS, attach_roots=(),
                 firmware_roots=DEFAULT_FIRMWARE_ROOTS):
        self.images = images_dir(images)
        self.pools = [p for p in pool_targets if p]
        self.image_roots = list(image_roots or ())
        self.attach_roots = list(attach_roots or ())
        self.firmware_roots = list(firmware_roots or ())
        for root in self.image_roots + self.attach_roots + self.firmware_roots:
            if not isinstance(root, str) or not os.path.isabs(root):
                raise InvalidArgument(f"virt:image_roots/attach_roots/domain_xml:firmware_roots entries must "
                                      f"be absolute paths, not {root!r}")

    def _check(self, path, what, roots, hint):
        if not isinstance(path, str) or not os.path.isabs(path):
            raise InvalidArgument(f"{what} {path!r} must be an absolute path on the hypervisor")
        real = _real(path)
        if _under(real, self.images) and not _under(real, os.path.join(self.images, BASE_DIR)):
            raise InvalidArgument(
                f"{what} {path} is under {self.images}, where VMs keep their disks and keys: refused"
            )
        if not any(_under(real, root) for root in roots):
            listed = ", ".join(roots) or "none configured"
            raise InvalidArgument(f"{what} {path} is outside the allowed directories ({listed}); {hint}")
        return real

    def image(self, path, what="image"):
        """An image to copy or to back an overlay."""
        roots = [os.path.join(self.images, BASE_DIR), *self.pools, *self.image_roots]
        return self._check(path, what, roots, "put it there or add its directory to virt:image_roots")

    def attach(self, path, what="source_file"):
        """A file attached as it is, or read (seed keys)."""
        return self._check(path, what, [*self.pools, *self.attach_roots],
                           "add its directory to virt:attach_roots in the hypervisor's config")

    def readable(self, path, what="file"):
        """A file only read (a definition to load): under any root but a VM's directory."""
        roots = [os.path.join(self.images, BASE_DIR), *self.pools, *self.image_roots, *self.attach_roots]
        return self._check(path, what, roots, "put it under virt:attach_roots or virt:image_roots")

    def disk_dir(self, path, what="pool"):
        """A directory new disks are created in."""
        return self._check(path, what, [*self.pools, *self.image_roots],
                           "use a libvirt pool's directory or one of virt:image_roots")

    def firmware(self, path, what="boot:loader"):
        """A UEFI loader or variable store template: read by QEMU, never written."""
        roots = [*self.firmware_roots, os.path.join(self.images, BASE_DIR), *self.pools, *self.image_roots]
        return self._check(path, what, roots, "use the distribution's firmware (e.g. /usr/share/OVMF) "
                           "or add its directory to virt:domain_xml:firmware_roots")


#: libvirt's storage pool types; ``scsi`` and ``mpath`` hand over every LUN of a host adapter
#: or every multipath device of the host, so callers get them only if the operator allows them.
POOL_TYPES = ("dir", "fs", "netfs", "logical", "disk", "iscsi", "iscsi-direct", "scsi", "mpath", "rbd",
              "sheepdog", "gluster", "zfs", "vstorage")
DEFAULT_POOL_TYPES = tuple(t for t in POOL_TYPES if t not in ("scsi", "mpath"))
#: Pools whose target is a directory of the host (made, mounted on or removed by libvirt).
DIRECTORY_POOLS = ("dir", "fs", "netfs", "vstorage")
#: Pools over host block devices, and pools naming a host volume group / zpool.
DEVICE_POOLS = ("fs", "logical", "disk")
NAMED_SOURCE_POOLS = ("logical", "zfs")
VOLUME_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,254}$")


def validate_volume_name(name):
    """A volume name is a file (or LV) name in its pool: no path, no ``..``."""
    if not isinstance(name, str) or not VOLUME_NAME.match(name) or ".." in name:
        raise InvalidArgument(f"volume name {name!r} is not allowed: use letters, digits and _.+- (starting "
                              "with a letter or digit, no '..', no '/'), e.g. data.qcow2")
    return name


class PoolPolicy:
    """Which storage pools a caller may define or change (``virt:pools:*`` of the hypervisor).

    ``allowed_targets``: directories under which ``dir``/``fs``/``netfs``/``vstorage`` pools may
    have their target (never under ``virt:images``); ``allowed_devices``: globs of the block
    devices ``fs``/``logical``/``disk`` pools may use; ``allowed_source_names``: globs of the
    volume groups (``logical``) and zpools (``zfs``) pools may name; ``allowed_types``: pool
    types (default: all but ``scsi`` and ``mpath``). Nothing is allowed unless configured.
    """

    def __init__(self, images, allowed_targets=(), allowed_devices=(), allowed_source_names=(),
                 allowed_types=DEFAULT_POOL_TYPES):
        self.images = images_dir(images)
        self.targets = list(allowed_targets or ())
        self.devices = list(allowed_devices or ())
        self.source_names = list(allowed_source_names or ())
        self.types = list(allowed_types or DEFAULT_POOL_TYPES)
        for root in self.targets:
            if not isinstance(root, str) or not os.path.isabs(root):
                raise InvalidArgument(f"virt:pools:allowed_targets entries must be absolute paths, not {root!r}")

    def check(self, name, settings):
        """Refuse pool ``name`` with normalised ``settings`` (see :mod:`saltvirt.storage.poolxml`)
        if it would reach host directories, devices or volume groups the operator did not allow."""
        ptype, source = settings["ptype"], settings.get("source") or {}
        if ptype not in self.types:
            raise InvalidArgument(f"pool {name}: type {ptype} is not allowed on this hypervisor (allowed: "
                                  f"{', '.join(self.types)}; the operator sets virt:pools:allowed_types)")
        self._target(name, ptype, settings.get("target"))
        if ptype in DEVICE_POOLS:
            for device in source.get("devices") or []:
                self._device(name, device["path"])
        if ptype in NAMED_SOURCE_POOLS:
            group = source.get("name") or name
            if not any(fnmatch.fnmatchcase(group, glob) for glob in self.source_names):
                listed = ", ".join(self.source_names) or "none configured"
                raise InvalidArgument(f"pool {name}: source name {group} (volume group or zpool) is not one of "
                                      f"virt:pools:allowed_source_names ({listed}): refused")

    def _target(self, name, ptype, target):
        if ptype not in DIRECTORY_POOLS:
            if target is not None and not _under(_real(target), "/dev"):
                raise InvalidArgument(f"pool {name}: a {ptype} pool's target {target} must be under /dev")
            return
        if target is None:
            raise InvalidArgument(f"pool {name}: a {ptype} pool needs a target directory")
        real = _real(target)
        if _under(real, self.images) or _under(self.images, real):
            raise InvalidArgument(f"pool {name}: target {target} overlaps {self.images}, where VMs keep their "
                                  "disks and keys: refused")
        if not any(_under(real, root) for root in self.targets):
            listed = ", ".join(self.targets) or "none configured"
            raise InvalidArgument(f"pool {name}: target {target} is outside virt:pools:allowed_targets "
                                  f"({listed}): refused; the operator adds its directory there")

    def _device(self, name, path):
        real = _real(path)
        if not any(fnmatch.fnmatchcase(p, glob) for glob in self.devices for p in {path, real}):
            listed = ", ".join(self.devices) or "none configured"
            raise InvalidArgument(f"pool {name}: source device {path} is not one of virt:pools:allowed_devices "
                                  f"({listed}): refused")
