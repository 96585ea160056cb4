"""Disk image inspection and cloning with qemu-img (no libvirt needed).

Every external program runs through :func:`saltvirt.cmd.run`. New files are always written
under a hidden temporary name in the destination directory and linked into place only when
complete, so a failure never leaves a partial image behind and an existing file is never
overwritten.

Base images (the backing files of copy-on-write overlays) must never be written: see
:func:`protect_base`, :func:`users_of` and :func:`rebase`.
"""

import json
import os
import re
import secrets
import stat

from saltvirt import cmd
from saltvirt import progress as vprogress
from saltvirt.errors import AlreadyExists, CommandFailed, InvalidArgument, NotFound, VirtError
from saltvirt.units import parse_size as _parse_size

__all__ = [
    "inspect_untrusted",
    "info",
    "check_source",
    "clone",
    "shared_base",
    "protect_base",
    "create_blank",
    "resize",
    "users_of",
    "rebase",
    "free_space_mib",
    "BACKING_FORMATS",
]

QEMU_IMG = "qemu-img"
MIB = 1024 * 1024

#: Formats an overlay may use as its backing file.
BACKING_FORMATS = ("qcow2", "raw")

# qemu-img check exit codes: 0 clean, 1 check could not run, 2 corruptions, 3 leaks only
# (wasted space, no harm to data), 63 the format does not support checks.
_CHECK_OK = (0, 3, 63)

_FORMAT_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")

# Signatures that make a 'raw' file plausibly a disk: (offset, bytes, what).
_RAW_SIGNATURES = (
    (510, b"\x55\xaa", "MBR/GPT boot sector"),  # also FAT/NTFS boot sectors
    (512, b"EFI PART", "GPT header"),
    (1080, b"\x53\xef", "ext2/3/4 superblock"),
    (0, b"XFSB", "XFS superblock"),
    (32769, b"CD001", "ISO 9660 volume descriptor"),
    (54, b"FAT1", "FAT12/16 boot sector"),
    (82, b"FAT32", "FAT32 boot sector"),
    (65600, b"_BHRfS_M", "btrfs superblock"),
    (0, b"LUKS\xba\xbe", "LUKS header"),
    (536, b"LVM2 001", "LVM physical volume"),
)


def _size(value, what="size"):
    """Bytes from an int or a string like '8G' / '512M' (binary units)."""
    if isinstance(value, bool):
        raise InvalidArgument(f"invalid {what} {value!r}")
    if isinstance(value, int):
        nbytes = value
    else:
        nbytes = _parse_size(value)
    if nbytes <= 0:
        raise InvalidArgument(f"invalid {what} {value!r}: must be positive")
    return nbytes


def _grown_size(size, path, current):
    """``size`` in bytes if it grows ``path`` (``current`` bytes), None if equal; refuse shrinking."""
    nbytes = _size(size)
    if nbytes < current:
        raise InvalidArgument(
            f"size {size} is smaller than {path} ({current} bytes); shrinking a disk is refused"
        )
    return None if nbytes == current else nbytes


def _check_format(fmt):
    if not isinstance(fmt, str) or not _FORMAT_RE.match(fmt):
        raise InvalidArgument(f"invalid image format {fmt!r}")
    return fmt


def _require_file(path):
    path = os.path.abspath(os.fspath(path))
    if not os.path.lexists(path):
        raise NotFound(f"image {path} does not exist")
    if not os.path.exists(path):
        raise NotFound(f"image {path} is a dangling symlink")
    if not os.path.isfile(path):
        raise InvalidArgument(f"image {path} is not a regular file")
    if not os.access(path, os.R_OK):
        raise InvalidArgument(f"image {path} is not readable")
    return path


def _short(text, limit=600):
    text = (text or "").strip()
    if len(text) > limit:
        head = text[:limit].rsplit("\n", 1)[0]
        return f"{head}\n... ({len(text.splitlines())} lines in all)"
    return text


def _entry(raw):
    return {
        "filename": raw.get("filename"),
        "format": raw.get("format"),
        "virtual_size": raw.get("virtual-size"),
        "actual_size": raw.get("actual-size"),
    }


def _qemu_info(path, backing_chain, fmt=None):
    argv = [QEMU_IMG, "info", "--output=json", "-U"]
    if fmt:
        argv += ["-f", _check_format(fmt)]
    if backing_chain:
        argv.append("--backing-chain")
    argv.append(path)
    out = cmd.run(argv)
    try:
        data = json.loads(out)
    except ValueError as exc:
        raise VirtError(f"qemu-img info {path}: unreadable output: {exc}") from exc
    return data if isinstance(data, list) else [data]


def header(path, fmt):
    """What ``qemu-img info -f <fmt>`` reads of ``path``'s header alone (no backing file opened)."""
    try:
        return _qemu_info(path, backing_chain=False, fmt=fmt)[0]
    except CommandFailed as exc:
        raise InvalidArgument(f"{path} is not a usable {fmt} image: {_short(exc.stderr)}") from exc


QCOW2_MAGIC = b"QFI\xfb"


def detect_format(path):
    """``qcow2`` if ``path`` starts with qcow2's magic, else ``raw``: nothing else is probed.

    qemu-img would also recognise VMDK, VHD, VDI... and a VMDK descriptor names other files
    (extents) to read, so an image from an untrusted source is only ever opened as one of the
    two formats Salt Virt writes, with that format given explicitly.
    """
    with open(_require_file(path), "rb") as handle:
        return "qcow2" if handle.read(4) == QCOW2_MAGIC else "raw"


def inspect_untrusted(path, allow_backing=False, max_virtual_size=None):
    """Refuse an image that would make QEMU read anything but itself; return its facts.

    The format comes from :func:`detect_format`; ``qemu-img info -f <format>`` (which does not
    open backing files) then reads the header. Refused, with the reason: a backing file
    (including ``json:`` and protocol names) unless ``allow_backing``; an external data file;
    a virtual size above ``max_virtual_size`` (bytes or '2T'). Returns ``{"format",
    "virtual_size", "backing_file"}``.
    """
    path = _require_file(path)
    fmt = detect_format(path)
    try:
        data = _qemu_info(path, backing_chain=False, fmt=fmt)[0]
    except CommandFailed as exc:
        raise InvalidArgument(f"{path} is not a usable {fmt} image: {_short(exc.stderr)}") from exc
    backing = data.get("backing-filename") or data.get("full-backing-filename")
    if backing and not allow_backing:
        raise InvalidArgument(
            f"image {path} names a backing file ({backing[:200]}): an image from a caller or a "
            "download may not read other files of the hypervisor; flatten it first "
            "(qemu-img convert), or let the operator set virt:image_policy:allow_backing"
        )
    specific = (data.get("format-specific") or {}).get("data") or {}
    if specific.get("data-file"):
        raise InvalidArgument(
            f"image {path} keeps its data in an external file ({specific['data-file'][:200]}): refused"
        )
    size = data.get("virtual-size") or 0
    if max_virtual_size is not None and size > _size(max_virtual_size, "max_virtual_size"):
        raise InvalidArgument(
            f"image {path} has a virtual size of {size} bytes, more than virt:image_policy:max_virtual_size "
            f"({max_virtual_size})"
        )
    return {"format": fmt, "virtual_size": size, "backing_file": backing}


def info(path, fmt=None):
    """Describe a disk image (``fmt``: open it as that format instead of probing).

    Returns ``{"filename", "format", "virtual_size", "actual_size", "dirty", "corrupt",
    "backing_file", "backing_format", "backing_chain": [{"filename", "format"}, ...]}``;
    ``backing_chain`` lists the backing files from the nearest to the deepest (empty for a
    standalone image). Sizes are bytes. Raises :class:`NotFound` for a missing file and
    :class:`InvalidArgument` when qemu-img cannot open it (unreadable header, missing backing
    file).
    """
    path = _require_file(path)
    try:
        chain = _qemu_info(path, backing_chain=True, fmt=fmt)
    except CommandFailed as exc:
        raise InvalidArgument(
            f"{path} is not a usable disk image: {_short(exc.stderr)}"
        ) from exc
    top = chain[0]
    specific = (top.get("format-specific") or {}).get("data") or {}
    result = _entry(top)
    result.update(
        {
            "filename": path,
            "dirty": bool(top.get("dirty-flag", False)),
            "corrupt": bool(specific.get("corrupt", False)),
            "backing_file": top.get("full-backing-filename") or top.get("backing-filename"),
            "backing_format": top.get("backing-filename-format"),
            "backing_chain": [
                {"filename": e.get("filename"), "format": e.get("format")} for e in chain[1:]
            ],
        }
    )
    return result


def backing_files(path):
    """The backing files of ``path`` (nearest first) as :func:`info` finds them; ``[]`` when
    the image cannot be read (missing, or not an image qemu-img opens)."""
    try:
        return [item["filename"] for item in info(path)["backing_chain"]]
    except VirtError:
        return []


def _raw_signature(path):
    """Name of the first disk/filesystem signature found in ``path``, or None."""
    with open(path, "rb") as handle:
        for offset, magic, what in _RAW_SIGNATURES:
            handle.seek(offset)
            if handle.read(len(magic)) == magic:
                return what
    return None


def check_source(path, *, allow_unrecognised=False, fmt=None):
    """Refuse anything that is not a usable disk image; return :func:`info` of it.

    Refused: a missing file; an image qemu-img cannot open (broken header, missing backing
    file); a qcow2 (or other checkable format) that ``qemu-img check`` finds corrupt; an
    empty file; a file qemu-img calls 'raw' that carries no partition table or filesystem
    signature (a text file, random junk...) unless ``allow_unrecognised=True``.
    """
    details = info(path, fmt)
    path = details["filename"]
    fmt = details["format"]
    if os.path.getsize(path) == 0:
        raise InvalidArgument(f"{path} is empty, not a disk image")
    if fmt == "raw":
        found = _raw_signature(path)
        details["signature"] = found
        if found is None and not allow_unrecognised:
            raise InvalidArgument(
                f"{path} is not recognised as a disk image: qemu-img sees raw data with no "
                "partition table or filesystem signature (pass allow_unrecognised=True to "
                "accept it anyway)"
            )
        return details
    if details["corrupt"]:
        raise InvalidArgument(f"{path} is marked corrupt in its {fmt} header")
    try:
        cmd.run([QEMU_IMG, "check", "-q", "-f", fmt, path])
    except CommandFailed as exc:
        if exc.returncode not in _CHECK_OK:
            reason = "is corrupt" if exc.returncode == 2 else "could not be checked"
            raise InvalidArgument(
                f"{path} {reason} (qemu-img check exit {exc.returncode}): {_short(exc.stderr)}"
            ) from exc
        details["leaks"] = exc.returncode == 3
    return details


def _temp_name(dest):
    directory, name = os.path.split(dest)
    return os.path.join(directory, f".{name}.part-{secrets.token_hex(4)}")


def _prepare_dest(dest):
    dest = os.path.abspath(os.fspath(dest))
    directory = os.path.dirname(dest)
    if os.path.lexists(dest):
        raise AlreadyExists(f"{dest} already exists; refusing to overwrite it")
    if not os.path.isdir(directory):
        raise NotFound(f"destination directory {directory} does not exist")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise InvalidArgument(f"destination directory {directory} is not writable")
    return dest


def _publish(tmp, dest):
    """Move the finished ``tmp`` to ``dest`` without ever replacing an existing file."""
    try:
        os.link(tmp, dest)
    except FileExistsError as exc:
        raise AlreadyExists(f"{dest} already exists; refusing to overwrite it") from exc
    except OSError:
        # Filesystem without hard links: the narrow check/rename race is acceptable there.
        if os.path.lexists(dest):
            raise AlreadyExists(  # noqa: B904  # pylint: disable=raise-missing-from
                f"{dest} already exists; refusing to overwrite it"
            )
        os.rename(tmp, dest)
        return
    os.unlink(tmp)


def _build(dest, steps, mode=0o600):
    """Run ``steps(tmp)`` writing a temporary file next to ``dest``, then publish it with
    ``mode``. On any failure the temporary file is removed and the error re-raised.
    """
    dest = _prepare_dest(dest)
    tmp = _temp_name(dest)
    try:
        # Guest disks hold private data: create them 0600 (libvirt relabels for QEMU).
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        steps(tmp)
        if mode != 0o600:
            os.chmod(tmp, mode)  # before publishing: nobody may see it with the wrong mode
        _publish(tmp, dest)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return dest


def _estimate_copy_bytes(details):
    allocated = details["actual_size"] or 0
    for item in details["backing_chain"]:
        try:
            allocated += os.path.getsize(item["filename"])
        except (OSError, TypeError):
            pass
    return min(allocated, details["virtual_size"] or allocated)


def clone(source, dest, *, fmt=None, overlay=False, size=None, mode=0o600, source_format=None, progress=None,
          copy_limits=None):
    """Make ``dest`` from the disk image ``source`` and return :func:`info` of ``dest``.

    ``overlay=True``: a qcow2 copy-on-write overlay backed by the absolute path of
    ``source`` with the backing format recorded (source must be qcow2 or raw; ``fmt``, if
    given, must be ``'qcow2'``). ``overlay=False``: an independent full copy in ``fmt``
    (default: the source's format), sparse, flattening any backing chain.

    ``size`` (bytes or '20G') grows the virtual size; smaller than the source is refused.
    ``dest`` must not exist (:class:`AlreadyExists`); nothing is left behind on failure. It is
    published with ``mode`` (0600 by default: guest disks hold private data). The source is
    only read: run :func:`check_source` on untrusted images first, and :func:`protect_base`
    on a base. ``source_format`` opens the source as that format (see :func:`detect_format`).

    A full copy reports its progress to ``progress(dict)`` (a :class:`saltvirt.progress.Meter`
    report, step ``copy``) and may take :func:`saltvirt.progress.copy_timeout` of its size with
    ``copy_limits`` ``(base seconds, minimum MiB/s)``: a big image is not cut off by a fixed limit.
    """
    src = info(source, source_format)
    source = src["filename"]
    dest_abs = _prepare_dest(dest)
    if os.path.realpath(dest_abs) == os.path.realpath(source):
        raise InvalidArgument(f"{dest_abs} is the source image")
    new_size = None if size is None else _grown_size(size, source, src["virtual_size"])

    if overlay:
        if fmt not in (None, "qcow2"):
            raise InvalidArgument(f"an overlay is always qcow2, not {fmt!r}")
        if src["format"] not in BACKING_FORMATS:
            raise InvalidArgument(
                f"{source} is {src['format']}; an overlay needs a qcow2 or raw base "
                "(make a full copy instead)"
            )

        def steps(tmp):
            argv = [QEMU_IMG, "create", "-q", "-f", "qcow2", "-F", src["format"], "-b", source, tmp]
            if new_size:
                argv.append(str(new_size))
            cmd.run(argv)

    else:
        out_fmt = _check_format(fmt or src["format"])
        need = _estimate_copy_bytes(src)
        free = free_space_mib(os.path.dirname(dest_abs)) * MIB
        if need > free:
            raise VirtError(
                f"not enough space in {os.path.dirname(dest_abs)} to copy {source}: "
                f"needs about {need // MIB} MiB, {free // MIB} MiB free"
            )

        timeout = vprogress.copy_timeout(need, *(copy_limits or ()))
        meter = vprogress.Meter(progress, vprogress.COPY, what=os.path.basename(source), total=need,
                                dest=os.path.basename(dest_abs))

        def steps(tmp):
            meter.start()
            # -p instead of -q: qemu-img prints its percentage, the meter turns it into bytes.
            cmd.run_progress(
                [QEMU_IMG, "convert", "-p", "-W", "-f", src["format"], "-O", out_fmt, source, tmp],
                lambda text: meter.percent(vprogress.qemu_percent(text)), timeout=timeout,
            )
            if new_size:
                cmd.run([QEMU_IMG, "resize", "-q", "-f", out_fmt, tmp, str(new_size)])
            meter.finish()

    return info(_build(dest_abs, steps, mode))


def shared_base(source, dest, source_format=None, progress=None, copy_limits=None):
    """A read-only (0444) full copy of ``source`` at ``dest`` for overlays to share; its
    :func:`info`.

    ``dest`` is named after the content by the caller, so a file already there holds the
    same bytes: it is reused, also when a concurrent caller published it first.
    """
    if os.path.isfile(dest):
        return info(dest)
    try:
        return clone(source, dest, mode=0o444, source_format=source_format, progress=progress,
                     copy_limits=copy_limits)
    except AlreadyExists:
        return info(dest)


def create_blank(dest, size, fmt="qcow2"):
    """Create an empty image of ``size`` (bytes or '8G') at ``dest``; return its :func:`info`."""
    nbytes = _size(size)
    fmt = _check_format(fmt)

    def steps(tmp):
        cmd.run([QEMU_IMG, "create", "-q", "-f", fmt, tmp, str(nbytes)])

    return info(_build(dest, steps))


def resize(path, size):
    """Grow the virtual size of ``path`` to ``size`` (bytes or '20G'); return its :func:`info`.

    Shrinking is refused (it destroys data). A write-protected image (a base) is refused.
    """
    details = info(path)
    path = details["filename"]
    nbytes = _grown_size(size, path, details["virtual_size"])
    if nbytes is None:
        return details
    if not os.stat(path).st_mode & 0o222:
        raise InvalidArgument(f"{path} is write-protected (a base image?); refusing to resize it")
    cmd.run([QEMU_IMG, "resize", "-q", "-f", details["format"], path, str(nbytes)])
    return info(path)


def protect_base(path):
    """Make a base image read-only for everyone (chmod a-w); return the new mode.

    Base images must never be written: every overlay built on one would silently see
    changed data. (root can still write: this guards against mistakes, not attacks.)
    """
    path = _require_file(path)
    mode = stat.S_IMODE(os.stat(path).st_mode)
    new_mode = mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
    if new_mode != mode:
        os.chmod(path, new_mode)
    return new_mode


def _chain_files(path):
    """Real paths of the backing chain of ``path`` (nearest first), as far as it resolves."""
    try:
        return [
            os.path.realpath(item["filename"])
            for item in _qemu_info(path, backing_chain=True)[1:]
            if item.get("filename")
        ]
    except CommandFailed:
        pass
    # Some link of the chain is missing or broken: walk it one level at a time.
    files, current, seen = [], path, set()
    while True:
        try:
            top = _qemu_info(current, backing_chain=False)[0]
        except CommandFailed:
            return files
        backing = top.get("full-backing-filename") or top.get("backing-filename")
        if not backing:
            return files
        backing = os.path.realpath(os.path.join(os.path.dirname(current), backing))
        if backing in seen:
            return files
        seen.add(backing)
        files.append(backing)
        if not os.path.isfile(backing):
            return files
        current = backing


def users_of(base, candidate_paths):
    """The candidates (absolute paths, input order) whose backing chain contains ``base``.

    Missing candidates and files qemu-img cannot open are skipped; the base itself is never
    its own user. Used to refuse deleting a base that is still in use, and by rebase.
    """
    base_real = os.path.realpath(os.fspath(base))
    users = []
    for candidate in candidate_paths:
        candidate = os.path.abspath(os.fspath(candidate))
        if not os.path.isfile(candidate) or os.path.realpath(candidate) == base_real:
            continue
        if base_real in _chain_files(candidate):
            users.append(candidate)
    return users


def rebase(overlay, new_base, safe=True):
    """Point ``overlay`` at ``new_base`` (``qemu-img rebase -F <fmt> -b <new_base>``).

    ``safe=True`` (the default) makes the guest-visible content unchanged: clusters that
    differ between the old and new base are copied into the overlay, so the old base must
    still be readable. ``safe=False`` only rewrites the header (``-u``): use it when the new
    base is an identical copy of the old one. ``new_base=None`` flattens the overlay into a
    standalone image (safe mode only). Returns :func:`info` of the overlay.
    """
    overlay = _require_file(overlay)
    try:
        # Only the overlay's own header: with safe=False the old base may well be gone.
        top = _qemu_info(overlay, backing_chain=False)[0]
    except CommandFailed as exc:
        raise InvalidArgument(
            f"{overlay} is not a usable disk image: {_short(exc.stderr)}"
        ) from exc
    if top.get("format") != "qcow2":
        raise InvalidArgument(
            f"{overlay} is {top.get('format')}; only qcow2 overlays can be rebased"
        )
    if not os.stat(overlay).st_mode & 0o222:
        raise InvalidArgument(
            f"{overlay} is write-protected (a base image?); refusing to rebase it"
        )
    argv = [QEMU_IMG, "rebase", "-q", "-f", "qcow2"]
    if new_base is None:
        if not safe:
            raise InvalidArgument("flattening an overlay (new_base=None) needs safe=True")
        argv += ["-b", ""]
    else:
        base = info(new_base)
        if base["format"] not in BACKING_FORMATS:
            raise InvalidArgument(
                f"{base['filename']} is {base['format']}; a base must be qcow2 or raw"
            )
        overlay_real = os.path.realpath(overlay)
        chain = [os.path.realpath(base["filename"])] + [
            os.path.realpath(item["filename"]) for item in base["backing_chain"]
        ]
        if overlay_real in chain:
            raise InvalidArgument(
                f"{base['filename']} is {overlay} or backed by it: that makes a loop"
            )
        argv += ["-F", base["format"], "-b", base["filename"]]
    if not safe:
        argv.append("-u")
    argv.append(overlay)
    cmd.run(argv)
    return info(overlay)


def free_space_mib(directory):
    """MiB available to unprivileged users in the filesystem holding ``directory``."""
    try:
        st = os.statvfs(os.fspath(directory))
    except FileNotFoundError as exc:
        raise NotFound(f"directory {directory} does not exist") from exc
    return st.f_bavail * st.f_frsize // MIB
