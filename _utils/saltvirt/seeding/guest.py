"""The mount seeder: writes into a guest's filesystem -- minion config, keys, and if needed an
installed salt-minion -- through a guestmount (:func:`seed_image`).

Every guest path is resolved inside the mounted tree the way the guest would resolve it: a
symbolic link in an image can never make the seeder read or write outside the image.
"""

import contextlib
import os
import secrets
import shlex
import time

from saltvirt import cmd
from saltvirt.errors import CommandFailed, InvalidArgument
from saltvirt.seeding.config import check_pem, dump_yaml, minion_config
from saltvirt.seeding.diskprobe import SeedError
from saltvirt.seeding.guestmount import STATE_DIR, mounted

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
    """Replace ``guest_file`` (a guest path) with ``text``, through a temporary file beside it.

    Not :func:`saltvirt.fileio.write_atomic`: the directory is resolved inside the guest tree,
    and a FAT filesystem refuses the mode (the file is written all the same).
    """
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
    pub, priv = check_pem(pub_key_pem, "public"), check_pem(priv_key_pem, "private")
    pki = conf.get("pki_dir") or "/etc/salt/pki/minion"
    if not isinstance(pki, str) or not pki.startswith("/"):
        raise InvalidArgument(f"pki_dir {pki!r} must be an absolute path")
    _makedirs_in(root, "/etc/salt", 0o755)
    _makedirs_in(root, pki, 0o700)
    written = [
        _write_in(root, f"{pki.rstrip('/')}/minion.pem", priv, 0o600),
        _write_in(root, f"{pki.rstrip('/')}/minion.pub", pub, 0o644),
        _write_in(root, "/etc/salt/minion", dump_yaml(conf), 0o644),
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
    # Check the arguments before spending time on a mount.
    minion_config(minion_id, master, extra_minion_config)
    check_pem(pub_key_pem, "public")
    check_pem(priv_key_pem, "private")
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
            minion = _install_minion(image, record, install_cmd, minion_id, install_timeout)
            result["installed"] = True
        result["salt_minion"] = minion
        try:
            result["files"] = write_minion_files(root, minion_id, master, pub_key_pem, priv_key_pem,
                                                 extra_minion_config)
        except OSError as exc:
            raise SeedError(f"writing the minion config and keys into {image} failed: {exc}") from exc
        written_at = time.monotonic()
    result["seconds"] = _timings(started, mounted_at, written_at, time.monotonic())
    if minion is None:
        result["warning"] = ("salt-minion is not installed in the image: the guest will not "
                             "connect until it is")
    return result


def _install_minion(image, record, install_cmd, minion_id, timeout):
    """Run the install command on the mounted tree; the guest path of salt-minion after it."""
    root = record["mountpoint"]
    if not install_cmd:
        raise SeedError(
            f"salt-minion is not installed in {image} ({record['device']}) and no install "
            "command is configured: set virt:seed_install_cmd (or seed_install_cmd=), pass "
            "install=False to write only the config and keys, or use an image with salt-minion"
        )
    argv = _install_argv(install_cmd, root, minion_id, image)
    try:
        cmd.run(argv, timeout=timeout, env=dict(os.environ, SALTVIRT_SEED_ROOT=root))
    except CommandFailed as exc:
        raise SeedError(f"installing salt-minion into {image} failed: {exc}") from exc
    minion = find_salt_minion(root)
    if minion is None:
        raise SeedError(f"the install command ({argv[0]}) succeeded but there is still no "
                        f"salt-minion in {image} (looked for {', '.join(MINION_PATHS)})")
    return minion


def _timings(started, mounted_at, written_at, done):
    return {
        "mount": round(mounted_at - started, 3),
        "write": round(written_at - mounted_at, 3),
        "umount": round(done - written_at, 3),
        "total": round(done - started, 3),
    }
