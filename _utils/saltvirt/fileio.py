"""Writing small secret files (keys, certificates) safely; file locks between processes."""

import contextlib
import fcntl
import json
import os
import secrets
import time


def write_atomic(path, data, mode=0o600, gid=None):
    """Replace ``path`` with ``data`` (bytes) through a temporary file in the same directory.

    The temporary file is created 0600 and only then given ``mode``/``gid``, so a key is never
    readable by others, not even for a moment; symlinks at the temporary name are not followed.
    Raises ``OSError`` (the temporary file is removed).
    """
    tmp = f"{path}.tmp-{os.getpid()}-{secrets.token_hex(4)}"  # unique: threads write too
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


def write_json(path, data, mode=0o600):
    """:func:`write_atomic` of ``data`` as JSON."""
    write_atomic(path, json.dumps(data).encode(), mode)


def read_json_object(path, valid=None):
    """The JSON object (a dict) in ``path``; ``{}`` when it is missing, unreadable, not an
    object, or ``valid(data)`` is false."""
    try:
        with open(path) as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) and (valid is None or valid(data)) else {}


@contextlib.contextmanager
def changing_json_object(path, valid=None):
    """:func:`read_json_object` of ``path`` changed in the block under a lock (``path.lock``) and
    written back (0600; a missing directory is made 0700)."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    with locked(path + ".lock"):
        data = read_json_object(path, valid)
        yield data
        write_json(path, data)


@contextlib.contextmanager
def locked(path, timeout=None):
    """Hold an exclusive ``flock`` on ``path`` (created 0600) for the ``with`` block.

    ``timeout=None`` waits as long as it takes; a number of seconds (0: a single try) raises
    ``BlockingIOError`` when another process still holds it by then. A process that dies
    releases its locks.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        if timeout is None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        else:
            deadline = time.monotonic() + timeout
            delay = 0.001
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise
                    time.sleep(delay)
                    delay = min(delay * 2, 0.05)
        yield
    finally:
        os.close(fd)
