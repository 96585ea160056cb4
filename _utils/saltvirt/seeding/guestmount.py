"""The guestmount process manager: one filesystem of a disk image mounted on the host (FUSE), and
undone -- unmounted, its daemon and libguestfs appliance gone, the image closed again.

Each mount is recorded in a state directory (its record and the daemon's pid file), so another
process can list (:func:`active_mounts`) and release (:func:`release`) it.
"""

import contextlib
import hashlib
import json
import os
import signal
import tempfile
import time

from saltvirt import cmd, fileio
from saltvirt.errors import CommandFailed, NotFound, VirtError
from saltvirt.seeding.diskprobe import SeedError, choose_filesystem, filesystems, image_format

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
        fmt = image_format(image)
    fs = choose_filesystem(filesystems(image, fmt), device, image)
    created = mountpoint is None
    mountpoint = _mountpoint(mountpoint)
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    record_path, pid_path = _record_paths(mountpoint, state_dir)
    _unlink_all(record_path, pid_path)  # stale
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
    fileio.write_json(record_path, record)
    return record


def _mountpoint(mountpoint):
    """A new temporary directory, or ``mountpoint`` made if missing and checked unused."""
    if mountpoint is None:
        return tempfile.mkdtemp(prefix="saltvirt-guestfs-")
    mountpoint = os.path.abspath(os.fspath(mountpoint))
    os.makedirs(mountpoint, exist_ok=True)
    if _is_mounted(mountpoint) or os.listdir(mountpoint):
        raise SeedError(f"mount point {mountpoint} is in use (mounted or not empty)")
    return mountpoint


def _unlink_all(*paths):
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _remove_created(mountpoint, created):
    """Remove the mount point :func:`guest_mount` created (if it did, and it is empty)."""
    if created:
        with contextlib.suppress(OSError):
            os.rmdir(mountpoint)


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
    _unlink_all(pid_path)
    _remove_created(mountpoint, created)


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
    record = _load_record(record_path) or {}
    pid = _read_pid(pid_path) or record.get("pid")
    if pid and not _alive(pid, "guestmount"):
        pid = None
    errors = []
    if _is_mounted(mountpoint):
        try:
            cmd.run(["guestunmount", mountpoint], timeout=timeout)
        except VirtError as exc:
            errors.append(str(exc))
    killed = _end_processes(pid, {p for p in (disk, record.get("image")) if p}, timeout)
    if _is_mounted(mountpoint):  # the daemon is gone: only a stale FUSE entry can be left
        with contextlib.suppress(VirtError):
            cmd.run(["umount", "-l", mountpoint], timeout=60)
    if _is_mounted(mountpoint):
        raise SeedError(f"{mountpoint} is still mounted: {'; '.join(errors) or 'umount failed'}")
    _unlink_all(record_path, pid_path)
    _remove_created(mountpoint, record.get("created_mountpoint"))
    return {"mountpoint": mountpoint, "pid": pid, "killed": killed,
            "seconds": round(time.monotonic() - started, 3)}


def _end_processes(pid, images, timeout):
    """Wait for the guestmount daemon ``pid`` and then for any libguestfs process naming one of
    ``images`` to exit, killing those still there after ``timeout``: the pids killed."""
    killed = []
    if pid:
        still = _wait_gone([pid], timeout, "guestmount")
        if still:
            killed += still
            _kill(still, "guestmount")
    for image in images:
        others = _wait_gone(_processes_using(image), 30 if killed else timeout)
        if others:
            killed += others
            _kill(others)
    return killed


def _load_record(path):
    """A mount record written by :func:`guest_mount`, or None."""
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


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
        record = _load_record(os.path.join(state_dir, name))
        if record is None:
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
