"""Which filesystem of a disk image to seed, read on the host: partition tables (MBR with logical
partitions, GPT) and filesystem superblocks.

This is decided without booting the libguestfs appliance (25-30 s under TCG): an image without a
usable filesystem fails in milliseconds, and guestmount gets an exact ``-m``.
"""

import json
import os
import shutil
import struct
import tempfile

from saltvirt import cmd
from saltvirt.errors import NotFound, VirtError


class SeedError(VirtError):
    """Seeding a disk image failed (no usable filesystem, mount, install or write error)."""


SECTOR = 512
_PROBE_BYTES = 68 * 1024  # covers every superblock probed below (btrfs: 64 KiB + 0x140)
LINUX_FS = ("ext4", "ext3", "ext2", "xfs", "btrfs")
WRITABLE_FS = LINUX_FS + ("vfat",)
_EXTENDED = (0x05, 0x0F, 0x85)


def image_format(image):
    """The format of a disk image (``raw``, ``qcow2``...), as ``qemu-img`` detects it."""
    return json.loads(cmd.run(["qemu-img", "info", "--output=json", image], timeout=60))["format"]


def _cstr(raw):
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace").strip()


def _probe_fs(buf):
    """``(fstype, label, read_only)`` of the filesystem starting at ``buf[0]``, or ``None``."""
    if len(buf) >= 1024 + 0x88 and buf[1024 + 56:1024 + 58] == b"\x53\xef":
        sb = buf[1024:]
        compat, incompat, ro_compat = struct.unpack_from("<III", sb, 0x5C)
        if incompat & 0x2C0 or ro_compat & 0x8:  # extents/64bit/flex_bg, huge_file
            fstype = "ext4"
        elif compat & 0x4:  # has_journal
            fstype = "ext3"
        else:
            fstype = "ext2"
        return fstype, _cstr(sb[0x78:0x88]), bool(ro_compat & 0x1000)
    if buf[:4] == b"XFSB":
        return "xfs", _cstr(buf[108:120]), False
    if len(buf) >= 0x10040 + 8 and buf[0x10040:0x10048] == b"_BHRfS_M":
        return "btrfs", _cstr(buf[0x1012B:0x1022B]), False
    if len(buf) >= 32774 and buf[32769:32774] == b"CD001":
        return "iso9660", _cstr(buf[32808:32840]), True
    if buf[:4] in (b"hsqs", b"sqsh"):
        return "squashfs", "", True
    if buf[:6] == b"LUKS\xba\xbe":
        return "crypto_LUKS", "", True
    if len(buf) >= 4096 and buf[4086:4096] in (b"SWAPSPACE2", b"SWAP-SPACE"):
        return "swap", "", True
    if len(buf) >= 512 and buf[510:512] == b"\x55\xaa":
        if buf[54:59] == b"FAT12" or buf[54:59] == b"FAT16":
            return "vfat", _cstr(buf[43:54]), False
        if buf[82:87] == b"FAT32":
            return "vfat", _cstr(buf[71:82]), False
    return None


class _ImageReader:
    """Read byte ranges of a disk image: raw directly, other formats through ``qemu-img``."""

    def __init__(self, image, fmt):
        self.image = image
        self.fmt = fmt
        self.size = None
        self._tmp = None

    def __enter__(self):
        if self.fmt == "raw":
            self.size = os.path.getsize(self.image)
        else:
            out = cmd.run(["qemu-img", "info", "--output=json", "-f", self.fmt, self.image], timeout=60)
            self.size = int(json.loads(out)["virtual-size"])
            self._tmp = tempfile.mkdtemp(prefix="saltvirt-probe-")
        return self

    def __exit__(self, *exc):
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def read(self, offset, length):
        length = max(0, min(length, self.size - offset))
        if length == 0:
            return b""
        if self.fmt == "raw":
            with open(self.image, "rb") as fh:
                fh.seek(offset)
                return fh.read(length)
        out = os.path.join(self._tmp, "slice")
        name = self.image.replace(",", ",,")
        opts = (f"driver=raw,offset={offset},size={length},"
                f"file.driver={self.fmt},file.file.filename={name}")
        cmd.run(["qemu-img", "convert", "-O", "raw", "--image-opts", opts, out], timeout=60)
        try:
            with open(out, "rb") as fh:
                return fh.read()
        finally:
            os.unlink(out)


def _mbr_partitions(reader, head):
    parts = []
    extended = None
    for index in range(4):
        entry = head[446 + 16 * index:446 + 16 * (index + 1)]
        ptype = entry[4]
        start, count = struct.unpack_from("<II", entry, 8)
        if ptype == 0 or count == 0:
            continue
        if ptype in _EXTENDED:
            extended = start
            continue
        parts.append((index + 1, start * SECTOR, count * SECTOR))
    number, ebr = 5, extended
    while extended is not None and ebr is not None and number < 64:
        block = reader.read(ebr * SECTOR, SECTOR)
        if len(block) < SECTOR or block[510:512] != b"\x55\xaa":
            break
        first, second = block[446:462], block[462:478]
        start, count = struct.unpack_from("<II", first, 8)
        if first[4] and count:
            parts.append((number, (ebr + start) * SECTOR, count * SECTOR))
            number += 1
        nxt = struct.unpack_from("<I", second, 8)[0]
        ebr = extended + nxt if second[4] in _EXTENDED and nxt else None
    return parts


def _gpt_partitions(reader):
    header = reader.read(SECTOR, SECTOR)
    if header[:8] != b"EFI PART":
        return None
    entries_lba, count, size = struct.unpack_from("<QII", header, 72)
    if not 0 < count <= 1024 or not 128 <= size <= 4096:
        return []
    table = reader.read(entries_lba * SECTOR, count * size)
    parts = []
    for index in range(count):
        entry = table[index * size:(index + 1) * size]
        if len(entry) < 56 or entry[:16] == b"\0" * 16:
            continue
        first, last = struct.unpack_from("<QQ", entry, 32)
        parts.append((index + 1, first * SECTOR, (last - first + 1) * SECTOR))
    return parts


def filesystems(image, fmt=None):
    """The filesystems of a disk image, read from its partition table and superblocks.

    Returns a list of ``{"device", "partition", "fstype", "label", "offset", "size",
    "writable"}`` (``device`` as libguestfs names it: ``/dev/sda`` for a filesystem on the
    whole disk, ``/dev/sdaN`` for partition N). Partitions without a recognised filesystem
    are listed with ``fstype: None``. MBR (with logical partitions) and GPT are understood.
    """
    image = os.path.abspath(os.fspath(image))
    if not os.path.isfile(image):
        raise NotFound(f"disk image {image} does not exist")
    if fmt is None:
        fmt = image_format(image)
    with _ImageReader(image, fmt) as reader:
        head = reader.read(0, _PROBE_BYTES)
        whole = _probe_fs(head)
        if whole is not None:
            fstype, label, read_only = whole
            return [{"device": "/dev/sda", "partition": None, "fstype": fstype, "label": label,
                     "offset": 0, "size": reader.size, "writable": fstype in WRITABLE_FS and not read_only}]
        parts = _gpt_partitions(reader)
        if parts is None:
            if len(head) < SECTOR or head[510:512] != b"\x55\xaa":
                return []
            parts = _mbr_partitions(reader, head)
        found = []
        for number, offset, size in parts:
            probed = _probe_fs(reader.read(offset, min(size, _PROBE_BYTES))) if size else None
            fstype, label, read_only = probed or (None, "", True)
            found.append({
                "device": f"/dev/sda{number}", "partition": number, "fstype": fstype,
                "label": label, "offset": offset, "size": size,
                "writable": fstype in WRITABLE_FS and not read_only,
            })
        return found


def _describe(found):
    return ", ".join(
        f"{f['device']}={f['fstype'] or 'unknown'}" + (" (read-only)" if f["fstype"] and not f["writable"] else "")
        for f in found
    ) or "no partitions"


def choose_filesystem(found, device=None, image="the image"):
    """Pick the filesystem to seed: ``device`` if given, else the largest Linux filesystem
    (ext2/3/4, xfs, btrfs), else the largest FAT one. Raises :class:`SeedError` when there is
    no writable filesystem."""
    if device:
        for fs in found:
            if fs["device"] == device:
                if not fs["writable"]:
                    raise SeedError(f"{device} of {image} is {fs['fstype'] or 'not a known filesystem'}: "
                                    "not writable, cannot seed it")
                return fs
        raise SeedError(f"{image} has no filesystem {device} (found: {_describe(found)})")
    writable = [fs for fs in found if fs["writable"]]
    linux = [fs for fs in writable if fs["fstype"] in LINUX_FS]
    pool = linux or writable
    if pool:
        return max(pool, key=lambda fs: fs["size"])
    if any(fs["fstype"] for fs in found):
        raise SeedError(f"{image} has no writable filesystem to seed ({_describe(found)})")
    raise SeedError(f"{image} has no recognisable filesystem ({_describe(found)}): "
                    "is it a bootable disk image?")
