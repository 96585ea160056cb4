"""What the steps of a migration share: constants, the error a failed migration raises, helpers."""

import xml.etree.ElementTree as ET

from saltvirt.errors import InvalidArgument, VirtError

try:
    import libvirt
except ImportError:
    libvirt = None

COPY_MODES = ("all", "inc")
PROBE_PREFIX = ".saltvirt-migrate-probe-"
MIB = 1024 * 1024

# virDomainRunningReason / virDomainPausedReason values we look for.
RUNNING_MIGRATED = 2
PAUSED_MIGRATION = 2
PAUSED_POSTCOPY = 12
PAUSED_POSTCOPY_FAILED = 13

# Filesystems that are shared between machines (libvirt checks their cache modes itself). A
# directory shared by two hosts on a local filesystem is one kernel's filesystem seen from two
# mount namespaces: its page cache is coherent, so libvirt's "unsafe" refusal does not apply and
# VIR_MIGRATE_UNSAFE is right. Any other filesystem is refused unless the operator names it in
# virt:migration:unsafe_fs.
LOCAL_FS = frozenset({"ext2", "ext3", "ext4", "xfs", "btrfs", "f2fs", "jfs", "tmpfs", "zfs"})
NETWORK_FS = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "gfs2", "ocfs2", "ceph", "glusterfs",
    "fuse.glusterfs", "beegfs", "gpfs", "lustre", "fuse.quobyte", "afs", "9p", "virtiofs",
})


class MigrationFailed(VirtError):
    """The migration did not happen. ``source_state`` is the domain's state on the source after it."""

    def __init__(self, message, source_state=None, phase=None):
        self.source_state = source_state
        self.phase = phase
        super().__init__(message)


def parse_xml(xml):
    return ET.fromstring(xml)  # noqa: S314  (libvirt's own XML; no external entities)


def positive_int(value, what):
    if isinstance(value, bool):
        raise InvalidArgument(f"{what} must be a positive integer, not {value!r}")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise InvalidArgument(f"{what} must be a positive integer, not {value!r}") from None
    if number <= 0 or str(number) != str(value).strip():
        raise InvalidArgument(f"{what} must be a positive integer, not {value!r}")
    return number


def check_copy_mode(copy_storage):
    if copy_storage not in (None,) + COPY_MODES:
        raise InvalidArgument(f"copy_storage must be 'all', 'inc' or None, not {copy_storage!r}")


def is_token(token):
    """A migration token names files: letters and digits only, never a path."""
    return bool(token) and all(c.isalnum() for c in str(token))
