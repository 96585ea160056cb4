"""Writing small secret files (keys, certificates) safely."""

import contextlib
import os


def write_atomic(path, data, mode=0o600, gid=None):
    """Replace ``path`` with ``data`` (bytes) through a temporary file in the same directory.

    The temporary file is created 0600 and only then given ``mode``/``gid``, so a key is never
    readable by others, not even for a moment; symlinks at the temporary name are not followed.
    Raises ``OSError`` (the temporary file is removed).
    """
    tmp = f"{path}.tmp-{os.getpid()}"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)  # left over by a crashed writer that had the same pid
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            if gid is not None:
                os.fchown(fd, -1, gid)
            os.fchmod(fd, mode)
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
