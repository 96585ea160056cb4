"""The CA directory's files: private directories, atomic writes, reads -- errors as VirtError."""

import os

from saltvirt import fileio
from saltvirt.errors import VirtError


def os_error(action, path, exc):
    return VirtError(f"cannot {action} {path}: {exc.strerror or exc}")


def make_private_dir(path):
    """Create ``path`` (and parents) with mode 0700; an existing directory is left as it is."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    except FileExistsError as exc:
        raise VirtError(f"cannot use {path} as a directory: a file of that name exists") from exc
    except OSError as exc:
        raise os_error("create directory", path, exc) from exc
    if not os.path.isdir(path):
        raise VirtError(f"cannot use {path} as a directory: it is not one")
    if not os.access(path, os.R_OK | os.W_OK | os.X_OK):
        raise VirtError(
            f"cannot use {path}: the salt-master user (uid {os.geteuid()}) cannot read and write it"
        )


def write_file(path, data, mode):
    """Write ``data`` to ``path`` via a temporary file; it never exists with a wider mode."""
    try:
        fileio.write_atomic(path, data, mode)
    except OSError as exc:
        raise os_error("write", path, exc) from exc


def read(path):
    """Bytes of ``path``, or ``None`` if it does not exist."""
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise os_error("read", path, exc) from exc
