"""The one way salt-virt runs an external program (qemu-img, certtool, mkfs...)."""

import shutil
import subprocess

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
