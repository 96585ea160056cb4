"""The one way salt-virt runs an external program (qemu-img, certtool, mkfs...)."""

import contextlib
import re
import shutil
import subprocess
import threading

from saltvirt.errors import CommandFailed, VirtError


def run(argv, *, input=None, timeout=600, env=None):
    """Run ``argv`` and return its stdout as text; raise :class:`CommandFailed` with stderr on failure."""
    argv = [str(a) for a in argv]
    if shutil.which(argv[0]) is None:
        raise VirtError(f"{argv[0]} is not installed (needed for: {' '.join(argv)})")
    try:
        proc = subprocess.run(
            argv,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise CommandFailed(argv, -1, f"timed out after {timeout}s") from exc
    if proc.returncode != 0:
        raise CommandFailed(argv, proc.returncode, proc.stderr or proc.stdout)
    return proc.stdout


def run_progress(argv, on_output, *, timeout=600, env=None):
    """Like :func:`run` for a program that reports its progress on stdout (``qemu-img -p``):
    each piece of output ended by ``\\r`` or ``\\n`` goes to ``on_output`` as it comes. A failing
    ``on_output`` is ignored: it only shows progress. Returns nothing."""
    argv = [str(a) for a in argv]
    if shutil.which(argv[0]) is None:
        raise VirtError(f"{argv[0]} is not installed (needed for: {' '.join(argv)})")
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env)
    errors = []

    def read_errors():
        errors.append(proc.stderr.read())

    def read_output():
        pending = b""
        for chunk in iter(lambda: proc.stdout.read1(65536), b""):
            *pieces, pending = re.split(rb"[\r\n]", pending + chunk)
            for piece in pieces:
                if piece.strip():
                    with contextlib.suppress(Exception):
                        on_output(piece.decode(errors="replace"))

    readers = [threading.Thread(target=f, daemon=True) for f in (read_errors, read_output)]
    for reader in readers:
        reader.start()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        proc.kill()
        proc.wait()
        raise CommandFailed(argv, -1, f"timed out after {timeout}s") from exc
    finally:
        for reader in readers:
            reader.join(timeout=5)
        proc.stdout.close()
        proc.stderr.close()
    if proc.returncode != 0:
        raise CommandFailed(argv, proc.returncode, (errors[0] if errors else b"").decode(errors="replace"))
