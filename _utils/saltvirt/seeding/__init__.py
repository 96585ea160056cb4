"""Seeding new guests with a pre-accepted Salt minion.

Two ways, both writing the same minion config and key pair:

* **cidata** (fast, default) -- the fast path below;
* **mount** -- :func:`seed_image` mounts the guest's disk image with libguestfs' ``guestmount``
  (:func:`guest_mount` / :func:`guest_umount`), writes ``/etc/salt/minion`` and the keys into
  the image, and runs an install command only if no salt-minion is found in it. This is what
  ``virt.init seed_cmd=seed.apply`` uses; ``guest_mount``/``guest_umount`` also back the
  ``guestfs`` execution module that Salt core's ``seed.apply`` needs.

The fast path is cloud-init's NoCloud datasource: :func:`make_cidata` writes a small ISO 9660
image labelled ``cidata`` (pure Python, no mounting, no guest tools) that is attached to the
guest as a CD-ROM. Its ``user-data`` uses cloud-init's ``salt_minion`` module, which writes
``/etc/salt/minion`` from ``conf`` and the key pair into the minion's pki directory.

The keys come from :func:`gen_minion_keys` in exactly the format ``salt.crypt.gen_keys``
produces, so the public key stored on the master under ``pki/minions/<id>`` matches what the
minion presents byte for byte (modulo the trailing newline Salt strips on both sides).
"""

import contextlib
import hashlib
import io
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import struct
import tempfile
import time

import pycdlib
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from saltvirt import cmd
from saltvirt.errors import CommandFailed, InvalidArgument, NotFound, VirtError

__all__ = [
    "make_cidata", "minion_config", "minion_config_text", "gen_minion_keys", "CIDATA_LABEL",
    "SeedError", "filesystems", "choose_filesystem", "libguestfs_env", "guest_mount",
    "guest_umount", "mounted", "active_mounts", "release", "find_salt_minion", "seed_image",
]

CIDATA_LABEL = "cidata"

# A minion id ends up in file names (pki/minions/<id>) and in YAML: keep it tame.
_MINION_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,252}$")
_HOSTNAME_RE = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
_RESERVED_KEYS = ("id", "master")


class _Dumper(yaml.SafeDumper):
    """SafeDumper that writes multi-line strings (PEM blocks) as ``|`` literal blocks."""


def _represent_str(dumper, value):
    if "\n" in value:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_Dumper.add_representer(str, _represent_str)


def _dump(data):
    return yaml.dump(data, Dumper=_Dumper, default_flow_style=False, sort_keys=False)


def _check_minion_id(minion_id):
    if not isinstance(minion_id, str) or not _MINION_ID_RE.match(minion_id):
        raise InvalidArgument(
            f"invalid minion id {minion_id!r}: use letters, digits, '.', '-', '_', '@'"
        )
    return minion_id


def _check_master(master):
    masters = master if isinstance(master, (list, tuple)) else [master]
    if not masters or any(not isinstance(m, str) or not m.strip() or "\n" in m for m in masters):
        raise InvalidArgument(f"invalid master {master!r}: a host name or address (or a list)")
    return list(masters) if isinstance(master, (list, tuple)) else master


def minion_config(minion_id, master, extra=None):
    """The minion configuration as a dict: ``id`` and ``master`` first, then ``extra``.

    ``extra`` may not set ``id`` or ``master`` to something else.
    """
    conf = {"id": _check_minion_id(minion_id), "master": _check_master(master)}
    for key, value in (extra or {}).items():
        if key in _RESERVED_KEYS:
            if value != conf[key]:
                raise InvalidArgument(
                    f"extra minion config sets {key!r} to {value!r}; pass it as {key} instead"
                )
            continue
        conf[key] = value
    return conf


def minion_config_text(minion_id, master, extra=None):
    """YAML text for ``/etc/salt/minion`` (used by both seeding paths)."""
    return _dump(minion_config(minion_id, master, extra))


def gen_minion_keys(keysize=2048):
    """A new RSA minion key pair as ``(priv_pem, pub_pem)`` strings.

    Same format as ``salt.crypt.gen_keys``: the private key is traditional OpenSSL PEM
    (``BEGIN RSA PRIVATE KEY``), unencrypted; the public key SubjectPublicKeyInfo PEM
    (``BEGIN PUBLIC KEY``). Write ``pub_pem`` unchanged to the master's
    ``pki/minions/<id>`` and both to the minion's ``minion.pem`` / ``minion.pub``.
    """
    if isinstance(keysize, bool) or not isinstance(keysize, int) or keysize < 2048:
        raise InvalidArgument(f"invalid key size {keysize!r}: at least 2048 bits")
    key = rsa.generate_private_key(public_exponent=65537, key_size=keysize)
    priv_pem = key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.TraditionalOpenSSL,
        encryption_algorithm=serialization.NoEncryption(),
    ).decode("ascii")
    pub_pem = (
        key.public_key()
        .public_bytes(
            encoding=serialization.Encoding.PEM,
            format=serialization.PublicFormat.SubjectPublicKeyInfo,
        )
        .decode("ascii")
    )
    return priv_pem, pub_pem


def _check_pem(pem, kind):
    if (
        not isinstance(pem, str)
        or "-----BEGIN" not in pem
        or ("PRIVATE KEY-----" in pem) != (kind == "private")
    ):
        raise InvalidArgument(f"{kind}_key_pem is not a PEM {kind} key")
    return pem.strip() + "\n"


def _user_data(minion_id, master, pub_key_pem, priv_key_pem, extra_minion_config):
    doc = {
        "salt_minion": {
            "conf": minion_config(minion_id, master, extra_minion_config),
            "public_key": _check_pem(pub_key_pem, "public"),
            "private_key": _check_pem(priv_key_pem, "private"),
        }
    }
    return "#cloud-config\n" + _dump(doc)


def _meta_data(instance_id, hostname):
    return _dump({"instance-id": instance_id, "local-hostname": hostname})


def make_cidata(
    dest,
    *,
    minion_id,
    master,
    pub_key_pem,
    priv_key_pem,
    extra_minion_config=None,
    hostname=None,
    instance_id=None,
):
    """Write a cloud-init NoCloud seed ISO (volume id ``cidata``) to ``dest``; return its path.

    It holds ``meta-data`` (``instance-id``: ``instance_id`` or the minion id;
    ``local-hostname``: ``hostname`` or the minion id) and ``user-data`` (``#cloud-config``
    with a ``salt_minion`` section: ``conf`` = the minion config, ``public_key`` /
    ``private_key`` = the PEM pair). The file is mode 0600 (it holds a private key), written
    under a temporary name and renamed over ``dest``; nothing is left behind on failure.
    Names are ISO level 3 with Rock Ridge and Joliet, like ``genisoimage -J -r``.
    """
    dest = os.path.abspath(os.fspath(dest))
    hostname = hostname or minion_id
    if not isinstance(hostname, str) or not _HOSTNAME_RE.match(hostname):
        raise InvalidArgument(f"invalid hostname {hostname!r}; pass hostname= explicitly")
    files = (
        ("meta-data", _meta_data(instance_id or _check_minion_id(minion_id), hostname)),
        (
            "user-data",
            _user_data(minion_id, master, pub_key_pem, priv_key_pem, extra_minion_config),
        ),
    )
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, vol_ident=CIDATA_LABEL, joliet=3, rock_ridge="1.09")
    for name, text in files:
        data = text.encode("utf-8")
        iso.add_fp(
            io.BytesIO(data),
            len(data),
            "/" + name.replace("-", "").upper() + ".;1",
            rr_name=name,
            joliet_path="/" + name,
        )

    directory, base = os.path.split(dest)
    if not os.path.isdir(directory):
        raise NotFound(f"destination directory {directory} does not exist")
    tmp = os.path.join(directory, f".{base}.part-{secrets.token_hex(4)}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            iso.write_fp(handle)
        os.chmod(tmp, 0o600)  # exactly 0600 whatever the umask
        os.replace(tmp, dest)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    finally:
        iso.close()
    return dest


# =========================================================================== mount seeding


class SeedError(VirtError):
    """Seeding a disk image failed (no usable filesystem, mount, install or write error)."""


# --------------------------------------------------------------------------- disk layout
#
# Which filesystem of an image to seed is decided on the host from the partition table and
# the superblocks, without booting the libguestfs appliance (25-30 s under TCG): an image
# without a usable filesystem fails in milliseconds, and guestmount gets an exact ``-m``.

SECTOR = 512
_PROBE_BYTES = 68 * 1024  # covers every superblock probed below (btrfs: 64 KiB + 0x140)
LINUX_FS = ("ext4", "ext3", "ext2", "xfs", "btrfs")
WRITABLE_FS = LINUX_FS + ("vfat",)
_EXTENDED = (0x05, 0x0F, 0x85)


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
        out = cmd.run(["qemu-img", "info", "--output=json", image], timeout=60)
        fmt = json.loads(out)["format"]
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


# --------------------------------------------------------------------------- guestmount

STATE_DIR = "/run/saltvirt/guestfs"
GUESTFS_PROCESSES = ("guestmount",)


def libguestfs_env(force_tcg=False, base=None):
    """Environment for libguestfs tools: the ``direct`` backend (no libvirtd session needed)
    and, when KVM cannot run guests here, ``force_tcg`` (else the appliance crashes)."""
    env = dict(os.environ if base is None else base)
    env["LIBGUESTFS_BACKEND"] = "direct"
    settings = [s for s in env.get("LIBGUESTFS_BACKEND_SETTINGS", "").split(":") if s and s != "force_tcg"]
    if force_tcg:
        settings.append("force_tcg")
    if settings:
        env["LIBGUESTFS_BACKEND_SETTINGS"] = ":".join(settings)
    else:
        env.pop("LIBGUESTFS_BACKEND_SETTINGS", None)
    return env


def _key(mountpoint):
    return hashlib.sha256(os.path.realpath(mountpoint).encode()).hexdigest()[:16]


def _record_paths(mountpoint, state_dir):
    key = _key(mountpoint)
    return os.path.join(state_dir, f"{key}.json"), os.path.join(state_dir, f"{key}.pid")


def _cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return [a.decode("utf-8", "replace") for a in fh.read().split(b"\0") if a]
    except OSError:
        return []


def _alive(pid, marker=None):
    """True while ``pid`` runs (and, with ``marker``, its command line still mentions it)."""
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/stat") as fh:
            if fh.read().rsplit(")", 1)[1].split()[0] == "Z":
                return False
    except OSError:
        return False
    return marker is None or any(marker in arg for arg in _cmdline(pid))


def _is_mounted(mountpoint):
    target = os.path.realpath(mountpoint)
    with open("/proc/self/mounts") as fh:
        for line in fh:
            fields = line.split()
            if len(fields) > 1 and fields[1].replace("\\040", " ") == target:
                return True
    return False


def _read_pid(path):
    try:
        with open(path) as fh:
            return int(fh.read().strip())
    except (OSError, ValueError):
        return None


def _processes_using(image):
    """Pids of guestmount daemons and libguestfs appliances whose command line names ``image``."""
    image = os.path.realpath(image)
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        argv = _cmdline(entry)
        if not argv:
            continue
        prog = os.path.basename(argv[0])
        joined = " ".join(argv)
        if image not in joined:
            continue
        if prog in GUESTFS_PROCESSES or (prog.startswith("qemu-system") and "guestfs" in joined):
            pids.append(int(entry))
    return pids


def _wait_gone(pids, timeout, marker=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = [p for p in pids if _alive(p, marker)]
        if not pids:
            return []
        time.sleep(0.05)
    return [p for p in pids if _alive(p, marker)]


def _kill(pids, marker=None):
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        pids = _wait_gone(pids, 10, marker)
        if not pids:
            return []
    return pids


def guest_mount(image, mountpoint=None, *, device=None, fmt=None, readonly=False, env=None,
                timeout=600, state_dir=STATE_DIR):
    """Mount one filesystem of a disk image on the host with ``guestmount`` (FUSE).

    ``device`` is the filesystem as libguestfs names it (``/dev/sda1``); by default the one
    :func:`choose_filesystem` picks. ``mountpoint`` defaults to a new temporary directory
    (removed again by :func:`guest_umount`). The guestmount daemon's pid is kept (``--pid-file``)
    in ``state_dir`` so that :func:`guest_umount` can wait for it to exit: until it does, the
    image is still open (and locked) by the libguestfs appliance.

    Returns the mount record ``{"image", "mountpoint", "device", "fstype", "pid", "readonly",
    "created_mountpoint", "seconds"}``. On failure nothing is left mounted or running.
    """
    started = time.monotonic()
    image = os.path.abspath(os.fspath(image))
    if not os.path.isfile(image):
        raise NotFound(f"disk image {image} does not exist")
    if not readonly and not os.access(image, os.W_OK):
        raise SeedError(f"disk image {image} is read-only (file mode, immutable flag or read-only "
                        "filesystem): cannot seed it")
    if fmt is None:
        fmt = json.loads(cmd.run(["qemu-img", "info", "--output=json", image], timeout=60))["format"]
    fs = choose_filesystem(filesystems(image, fmt), device, image)
    created = mountpoint is None
    if created:
        mountpoint = tempfile.mkdtemp(prefix="saltvirt-guestfs-")
    else:
        mountpoint = os.path.abspath(os.fspath(mountpoint))
        os.makedirs(mountpoint, exist_ok=True)
        if _is_mounted(mountpoint) or os.listdir(mountpoint):
            raise SeedError(f"mount point {mountpoint} is in use (mounted or not empty)")
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    record_path, pid_path = _record_paths(mountpoint, state_dir)
    for stale in (record_path, pid_path):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(stale)
    argv = ["guestmount", f"--format={fmt}", "-a", image, "-m", fs["device"],
            "--ro" if readonly else "--rw", "--pid-file", pid_path, mountpoint]
    try:
        cmd.run(argv, env=env, timeout=timeout)
        pid = _read_pid(pid_path)
        if not _is_mounted(mountpoint):
            raise SeedError(f"guestmount reported success but {mountpoint} is not mounted")
    except BaseException as exc:
        _cleanup_failed_mount(image, mountpoint, pid_path, created)
        if isinstance(exc, CommandFailed):
            raise SeedError(f"could not mount {fs['device']} ({fs['fstype']}) of {image}: "
                            f"{_short(exc.stderr)}") from exc
        raise
    record = {
        "image": image, "mountpoint": mountpoint, "device": fs["device"], "fstype": fs["fstype"],
        "format": fmt, "pid": pid, "readonly": bool(readonly), "created_mountpoint": created,
        "seconds": round(time.monotonic() - started, 3),
    }
    tmp = f"{record_path}.tmp"
    with open(tmp, "w") as fh:
        json.dump(record, fh)
    os.replace(tmp, record_path)
    return record


def _short(text, limit=800):
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[:limit] + "..."


def _cleanup_failed_mount(image, mountpoint, pid_path, created):
    pid = _read_pid(pid_path)
    if _is_mounted(mountpoint):
        with contextlib.suppress(VirtError):
            cmd.run(["guestunmount", mountpoint], timeout=60)
    leftovers = ([pid] if _alive(pid, "guestmount") else []) + _processes_using(image)
    _kill(_wait_gone(leftovers, 30))
    with contextlib.suppress(FileNotFoundError):
        os.unlink(pid_path)
    if created:
        with contextlib.suppress(OSError):
            os.rmdir(mountpoint)


def guest_umount(mountpoint, *, disk=None, timeout=120, state_dir=STATE_DIR):
    """Unmount a :func:`guest_mount` and wait until its guestmount daemon has exited.

    ``guestunmount`` only detaches the FUSE filesystem; the daemon then syncs, shuts the
    libguestfs appliance down and exits -- only then is the image closed and unlocked, so a
    domain may use it. With ``disk``, also wait for (and after ``timeout`` kill) any other
    guestmount or appliance process still naming that image. Returns ``{"mountpoint", "pid",
    "seconds", "killed"}``; raises :class:`SeedError` if the mount cannot be released.
    """
    started = time.monotonic()
    mountpoint = os.path.abspath(os.fspath(mountpoint))
    record_path, pid_path = _record_paths(mountpoint, state_dir)
    record = {}
    with contextlib.suppress(OSError, ValueError):
        with open(record_path) as fh:
            record = json.load(fh)
    pid = _read_pid(pid_path) or record.get("pid")
    if pid and not _alive(pid, "guestmount"):
        pid = None
    errors = []
    if _is_mounted(mountpoint):
        try:
            cmd.run(["guestunmount", mountpoint], timeout=timeout)
        except VirtError as exc:
            errors.append(str(exc))
    killed = []
    if pid:
        still = _wait_gone([pid], timeout, "guestmount")
        if still:
            killed += still
            _kill(still, "guestmount")
    images = {p for p in (disk, record.get("image")) if p}
    for image in images:
        others = _wait_gone(_processes_using(image), 30 if killed else timeout)
        if others:
            killed += others
            _kill(others)
    if _is_mounted(mountpoint):  # the daemon is gone: only a stale FUSE entry can be left
        with contextlib.suppress(VirtError):
            cmd.run(["umount", "-l", mountpoint], timeout=60)
    if _is_mounted(mountpoint):
        raise SeedError(f"{mountpoint} is still mounted: {'; '.join(errors) or 'umount failed'}")
    for path in (record_path, pid_path):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    if record.get("created_mountpoint"):
        with contextlib.suppress(OSError):
            os.rmdir(mountpoint)
    return {"mountpoint": mountpoint, "pid": pid, "killed": killed,
            "seconds": round(time.monotonic() - started, 3)}


@contextlib.contextmanager
def mounted(image, mountpoint=None, **kwargs):
    """``with mounted(image) as rec:`` -- :func:`guest_mount`, always undone on exit."""
    umount_timeout = kwargs.pop("umount_timeout", 120)
    record = guest_mount(image, mountpoint, **kwargs)
    try:
        yield record
    finally:
        record["umount"] = guest_umount(record["mountpoint"], disk=record["image"],
                                        timeout=umount_timeout,
                                        state_dir=kwargs.get("state_dir", STATE_DIR))


def active_mounts(state_dir=STATE_DIR):
    """Mount records of :func:`guest_mount` whose daemon still runs (stale records removed)."""
    found = []
    if not os.path.isdir(state_dir):
        return found
    for name in sorted(os.listdir(state_dir)):
        if not name.endswith(".json"):
            continue
        path = os.path.join(state_dir, name)
        try:
            with open(path) as fh:
                record = json.load(fh)
        except (OSError, ValueError):
            continue
        record["mounted"] = _is_mounted(record["mountpoint"])
        record["running"] = _alive(record.get("pid"), "guestmount")
        if record["mounted"] or record["running"]:
            found.append(record)
    return found


def release(image, state_dir=STATE_DIR, timeout=120):
    """Unmount every guestfs mount of ``image`` and end any libguestfs process still using it
    (after a seeding command that may not clean up after itself). Returns what was released."""
    image = os.path.realpath(image)
    released = []
    for record in active_mounts(state_dir):
        if os.path.realpath(record["image"]) == image:
            released.append(guest_umount(record["mountpoint"], disk=image, timeout=timeout,
                                         state_dir=state_dir))
    leftovers = _processes_using(image)
    if leftovers:
        _kill(leftovers)
        released.append({"killed": leftovers})
    return released


# --------------------------------------------------------------------------- seeding a mount

# Where images keep salt-minion: distribution packages, onedir, bootstrap, pip into a venv.
MINION_PATHS = (
    "/usr/bin/salt-minion", "/usr/local/bin/salt-minion", "/bin/salt-minion",
    "/usr/sbin/salt-minion", "/opt/saltstack/salt/salt-minion", "/opt/salt/bin/salt-minion",
)


def _guest_path(root, path, max_links=40):
    """``path`` inside the guest tree at ``root`` as a host path, resolving symlinks the way
    the guest would (absolute targets are relative to ``root``): an image's symlink can never
    make the seeder read or write outside the image."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    resolved, links = [], 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = os.path.join(root, *resolved, part)
        if os.path.islink(candidate):
            links += 1
            if links > max_links:
                raise SeedError(f"too many levels of symbolic links in {path} inside the image")
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
            continue
        resolved.append(part)
    return os.path.join(root, *resolved)


def find_salt_minion(root, paths=MINION_PATHS):
    """The guest path of the salt-minion program in the tree at ``root``, or ``None``."""
    for path in paths:
        if os.path.isfile(_guest_path(root, path)):
            return path
    return None


def _makedirs_in(root, guest_dir, mode):
    host = _guest_path(root, guest_dir)
    if os.path.isdir(host):
        return host
    parent = os.path.dirname(guest_dir.rstrip("/")) or "/"
    if parent != guest_dir:
        _makedirs_in(root, parent, 0o755)
    os.mkdir(_guest_path(root, guest_dir), mode)
    return _guest_path(root, guest_dir)


def _write_in(root, guest_file, text, mode):
    directory, name = os.path.split(guest_file)
    host_dir = _guest_path(root, directory)
    final = os.path.join(host_dir, name)
    if os.path.islink(final):  # replace a link, never write through it
        os.unlink(final)
    tmp = os.path.join(host_dir, f".{name}.saltvirt-{secrets.token_hex(4)}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(PermissionError):  # FAT has no modes
            os.chmod(tmp, mode)
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return guest_file


def write_minion_files(root, minion_id, master, pub_key_pem, priv_key_pem, extra_minion_config=None):
    """Write ``/etc/salt/minion`` and the key pair into the guest tree at ``root``.

    The keys go to the config's ``pki_dir`` (default ``/etc/salt/pki/minion``); a cached
    ``minion_master.pub`` there (an image made from a running minion) is removed, or the new
    minion would refuse its master. Returns the guest paths written or removed.
    """
    conf = minion_config(minion_id, master, extra_minion_config)
    pub, priv = _check_pem(pub_key_pem, "public"), _check_pem(priv_key_pem, "private")
    pki = conf.get("pki_dir") or "/etc/salt/pki/minion"
    if not isinstance(pki, str) or not pki.startswith("/"):
        raise InvalidArgument(f"pki_dir {pki!r} must be an absolute path")
    _makedirs_in(root, "/etc/salt", 0o755)
    _makedirs_in(root, pki, 0o700)
    written = [
        _write_in(root, f"{pki.rstrip('/')}/minion.pem", priv, 0o600),
        _write_in(root, f"{pki.rstrip('/')}/minion.pub", pub, 0o644),
        _write_in(root, "/etc/salt/minion", _dump(conf), 0o644),
    ]
    cached_master = _guest_path(root, f"{pki.rstrip('/')}/minion_master.pub")
    if os.path.isfile(cached_master):
        os.unlink(cached_master)
        written.append(f"-{pki.rstrip('/')}/minion_master.pub")
    return written


def _install_argv(install_cmd, root, minion_id, image):
    if isinstance(install_cmd, str):
        argv = shlex.split(install_cmd)
    elif isinstance(install_cmd, (list, tuple)) and all(isinstance(a, str) for a in install_cmd):
        argv = list(install_cmd)
    else:
        raise InvalidArgument(f"install command must be a string or a list of strings, not {install_cmd!r}")
    if not argv:
        raise InvalidArgument("install command is empty")
    subst = {"{root}": root, "{id}": minion_id, "{image}": image}
    out = []
    for arg in argv:
        for key, value in subst.items():
            arg = arg.replace(key, value)
        out.append(arg)
    return out


def seed_image(
    image,
    *,
    minion_id,
    master,
    pub_key_pem,
    priv_key_pem,
    extra_minion_config=None,
    install=True,
    install_cmd=None,
    install_timeout=900,
    device=None,
    fmt=None,
    env=None,
    mount_timeout=600,
    umount_timeout=120,
    state_dir=STATE_DIR,
):
    """Seed a disk image with a minion by mounting it (libguestfs), like Salt's ``seed.apply``.

    1. check the arguments (config, keys) -- before spending time on a mount;
    2. mount the filesystem :func:`choose_filesystem` picks (or ``device``);
    3. look for salt-minion (:data:`MINION_PATHS`); if it is missing and ``install`` is true,
       run ``install_cmd`` (a string or argv list; ``{root}`` = the mounted tree, ``{id}``,
       ``{image}``) on the host and check again. Without an install command that is an error;
       with ``install=False`` the config and keys are still written (``seed.apply`` would write
       nothing and return False);
    4. write ``/etc/salt/minion`` and the keys (:func:`write_minion_files`);
    5. unmount and wait for the guestmount daemon to exit -- also when any step failed.

    Returns ``{"device", "fstype", "salt_minion", "installed", "files", "seconds": {...}}``.
    """
    minion_config(minion_id, master, extra_minion_config)
    _check_pem(pub_key_pem, "public")
    _check_pem(priv_key_pem, "private")
    if install and install_cmd is not None:
        _install_argv(install_cmd, "/", minion_id, "/")
    started = time.monotonic()
    result = {"installed": False}
    with mounted(image, device=device, fmt=fmt, env=env, timeout=mount_timeout,
                 umount_timeout=umount_timeout, state_dir=state_dir) as record:
        root = record["mountpoint"]
        result.update(device=record["device"], fstype=record["fstype"])
        mounted_at = time.monotonic()
        minion = find_salt_minion(root)
        if minion is None and install:
            if not install_cmd:
                raise SeedError(
                    f"salt-minion is not installed in {image} ({record['device']}) and no install "
                    "command is configured: set virt:seed_install_cmd (or seed_install_cmd=), pass "
                    "install=False to write only the config and keys, or use an image with salt-minion"
                )
            argv = _install_argv(install_cmd, root, minion_id, image)
            try:
                cmd.run(argv, timeout=install_timeout, env=dict(os.environ, SALTVIRT_SEED_ROOT=root))
            except CommandFailed as exc:
                raise SeedError(f"installing salt-minion into {image} failed: {exc}") from exc
            minion = find_salt_minion(root)
            if minion is None:
                raise SeedError(f"the install command ({argv[0]}) succeeded but there is still no "
                                f"salt-minion in {image} (looked for {', '.join(MINION_PATHS)})")
            result["installed"] = True
        result["salt_minion"] = minion
        try:
            result["files"] = write_minion_files(root, minion_id, master, pub_key_pem, priv_key_pem,
                                                 extra_minion_config)
        except OSError as exc:
            raise SeedError(f"writing the minion config and keys into {image} failed: {exc}") from exc
        written_at = time.monotonic()
    done = time.monotonic()
    result["seconds"] = {
        "mount": round(mounted_at - started, 3),
        "write": round(written_at - mounted_at, 3),
        "umount": round(done - written_at, 3),
        "total": round(done - started, 3),
    }
    if minion is None:
        result["warning"] = ("salt-minion is not installed in the image: the guest will not "
                             "connect until it is")
    return result
