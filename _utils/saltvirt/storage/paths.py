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
