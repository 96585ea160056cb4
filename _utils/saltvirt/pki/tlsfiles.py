"""Write a hypervisor's libvirt/QEMU TLS files (from the ``libvirt`` pillar) under ``/etc/pki``.

libvirt reads ``CA/cacert.pem``, ``libvirt/servercert.pem``, ``libvirt/private/serverkey.pem``,
``libvirt/clientcert.pem`` and ``libvirt/private/clientkey.pem``; QEMU's own TLS (migration and
NBD streams) reads ``qemu/ca-cert.pem``, ``qemu/server-cert.pem``, ``qemu/server-key.pem``,
``qemu/client-cert.pem`` and ``qemu/client-key.pem``. QEMU runs as an unprivileged user, so its
keys are group-readable by ``libvirt-qemu`` when that group exists; they are QEMU's own pairs
(another DN), which libvirtd's ``tls_allowed_dn_list`` refuses: reading them opens no libvirtd.
libvirt's keys are root's alone (0600).

:func:`sync` is idempotent and reports what it changed (or would change with ``test=True``) by
path — never file contents.
"""

import collections
import grp
import os
import stat

from saltvirt import fileio
from saltvirt.errors import InvalidArgument, VirtError

DEFAULT_BASEPATH = "/etc/pki"
QEMU_GROUP = "libvirt-qemu"

#: Pillar key -> where it goes, relative to the base path.
TARGETS = (
    ("cacert.pem", "CA/cacert.pem"),
    ("servercert.pem", "libvirt/servercert.pem"),
    ("serverkey.pem", "libvirt/private/serverkey.pem"),
    ("clientcert.pem", "libvirt/clientcert.pem"),
    ("clientkey.pem", "libvirt/private/clientkey.pem"),
    ("cacert.pem", "qemu/ca-cert.pem"),
    ("qemu-servercert.pem", "qemu/server-cert.pem"),
    ("qemu-serverkey.pem", "qemu/server-key.pem"),
    ("qemu-clientcert.pem", "qemu/client-cert.pem"),
    ("qemu-clientkey.pem", "qemu/client-key.pem"),
)

MATERIAL_KEYS = tuple(dict.fromkeys(key for key, _ in TARGETS))

# Directories this module creates: libvirtd (root) alone reads libvirt/private; QEMU's user must
# be able to enter qemu/.
_DIR_MODES = {"libvirt/private": 0o700}
_DEFAULT_DIR_MODE = 0o755

TLSFile = collections.namedtuple("TLSFile", "path pillar_key mode gid")


def _is_key(pillar_key):
    return pillar_key.endswith("key.pem")


def qemu_gid(group=QEMU_GROUP):
    """The gid of ``group``, or ``None`` if there is no such group."""
    if not group:
        return None
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        return None


def layout(basepath=DEFAULT_BASEPATH, qemu_group=QEMU_GROUP):
    """The files to write, as :class:`TLSFile` (absolute path, pillar key, mode, gid or ``None``).

    Certificates are 0644. libvirt's keys are 0600; QEMU's own keys are 0640 with group
    ``qemu_group`` if it exists, else 0600.
    """
    if not basepath or not os.path.isabs(basepath):
        raise InvalidArgument(f"basepath must be an absolute path, got {basepath!r}")
    gid = qemu_gid(qemu_group)
    files = []
    for pillar_key, relpath in TARGETS:
        path = os.path.join(os.path.normpath(basepath), relpath)
        if not _is_key(pillar_key):
            files.append(TLSFile(path, pillar_key, 0o644, None))
        elif pillar_key.startswith("qemu-") and gid is not None:
            files.append(TLSFile(path, pillar_key, 0o640, gid))
        else:
            files.append(TLSFile(path, pillar_key, 0o600, None))
    return files


def check_material(material):
    """Return the five PEM texts of ``material`` as a dict, or raise :class:`InvalidArgument`.

    The message names missing or malformed entries, never their contents.
    """
    if not isinstance(material, dict):
        raise InvalidArgument("the libvirt pillar is not a mapping")
    missing = [k for k in MATERIAL_KEYS if not material.get(k)]
    if missing:
        raise InvalidArgument(f"the libvirt pillar lacks {', '.join(missing)}")
    checked = {}
    for key in MATERIAL_KEYS:
        value = material[key]
        if isinstance(value, bytes):
            value = value.decode("ascii", "replace")
        expected = "PRIVATE KEY-----" if _is_key(key) else "-----BEGIN CERTIFICATE-----"
        if not isinstance(value, str) or expected not in value or "-----END" not in value:
            raise InvalidArgument(
                f"the libvirt pillar's {key} is not PEM data"
                " (masked pillar values read as '**********')"
            )
        checked[key] = value if value.endswith("\n") else value + "\n"
    return checked


def _describe(path, content, mode, gid):
    """What differs between ``path`` on disk and the wanted state (``[]`` if nothing)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return ["created"]
    except OSError as exc:
        raise VirtError(f"cannot inspect {path}: {exc.strerror}") from exc
    if not stat.S_ISREG(st.st_mode):
        return ["replaced (was not a regular file)"]
    diffs = []
    try:
        with open(path, "rb") as handle:
            if handle.read() != content:
                diffs.append("content updated")
    except OSError as exc:
        raise VirtError(f"cannot read {path}: {exc.strerror}") from exc
    current = stat.S_IMODE(st.st_mode)
    if current != mode:
        diffs.append(f"mode {current:04o} -> {mode:04o}")
    if st.st_uid != os.geteuid():
        diffs.append(f"owner uid {st.st_uid} -> {os.geteuid()}")
    if gid is not None and st.st_gid != gid:
        diffs.append(f"group gid {st.st_gid} -> {gid}")
    return diffs


def _write(path, content, mode, gid):
    try:
        fileio.write_atomic(path, content, mode, gid)
    except OSError as exc:
        raise VirtError(f"cannot write {path}: {exc.strerror or exc}") from exc


def _fix_metadata(path, mode, gid):
    try:
        os.chown(path, os.geteuid(), -1 if gid is None else gid, follow_symlinks=False)
        os.chmod(path, mode, follow_symlinks=False)
    except OSError as exc:
        raise VirtError(f"cannot set owner/mode of {path}: {exc.strerror or exc}") from exc


def _ensure_dirs(files, basepath, test, changes):
    wanted = sorted({os.path.dirname(f.path) for f in files})
    for directory in wanted:
        if os.path.isdir(directory):
            continue
        if os.path.lexists(directory):
            raise VirtError(f"cannot use {directory} as a directory: something else is there")
        rel = os.path.relpath(directory, basepath)
        mode = _DIR_MODES.get(rel, _DEFAULT_DIR_MODE)
        changes[directory] = f"directory created (mode {mode:04o})"
        if test:
            continue
        try:
            os.makedirs(directory, mode=_DEFAULT_DIR_MODE, exist_ok=True)
            os.chmod(directory, mode)
        except OSError as exc:
            raise VirtError(f"cannot create {directory}: {exc.strerror or exc}") from exc


def sync(material, basepath=DEFAULT_BASEPATH, test=False, qemu_group=QEMU_GROUP):
    """Make the files of :func:`layout` hold ``material``; return ``{path: description}``.

    ``material`` is the ``libvirt`` pillar (see :func:`check_material`). Files whose content,
    mode, owner and group are already right are left alone, so a second run returns ``{}``.
    With ``test=True`` nothing is written and the result says what would change.
    """
    material = check_material(material)
    files = layout(basepath, qemu_group)
    basepath = os.path.normpath(basepath)
    changes = {}
    _ensure_dirs(files, basepath, test, changes)
    for tls_file in files:
        content = material[tls_file.pillar_key].encode()
        diffs = _describe(tls_file.path, content, tls_file.mode, tls_file.gid)
        if not diffs:
            continue
        changes[tls_file.path] = ", ".join(diffs)
        if test:
            continue
        if diffs[0] in ("created", "content updated") or diffs[0].startswith("replaced"):
            _write(tls_file.path, content, tls_file.mode, tls_file.gid)
        else:
            _fix_metadata(tls_file.path, tls_file.mode, tls_file.gid)
    return changes
