"""Which hypervisor type a domain gets: KVM only when it really runs guests, else QEMU TCG.

libvirt's capabilities list ``kvm`` whenever /dev/kvm opens, but in nested or restricted
environments KVM can still fail to execute guest code: real-mode BIOS code runs, yet a Linux
kernel never prints a line (or QEMU aborts setting MSRs). So the probe boots the host's own
kernel (from /boot) under KVM with ``panic=-1`` and no root disk: a working KVM panics and exits
within a second or two. Without a kernel in /boot, a 512-byte boot sector that writes to QEMU's
``isa-debug-exit`` port is the (weaker) fallback.
"""

import glob
import json
import os
import shutil
import subprocess
import tempfile
import time

from saltvirt import fileio
from saltvirt.errors import InvalidArgument

TYPES = ("kvm", "qemu")
_EXIT_VALUE = 0x42
# mov al, 0x42 ; out 0xf4, al ; hlt ; jmp $-1  (QEMU then exits with (0x42 << 1) | 1)
_BOOT_SECTOR = bytes([0xB0, _EXIT_VALUE, 0xE6, 0xF4, 0xF4, 0xEB, 0xFD]).ljust(510, b"\0") + b"\x55\xaa"
_EXPECTED_RC = (_EXIT_VALUE << 1) | 1


def _qemu_binary():
    for name in ("qemu-system-x86_64", "kvm"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _host_kernel():
    kernels = sorted(glob.glob("/boot/vmlinuz-*"))
    return kernels[-1] if kernels else None


def _run_probe(argv, timeout):
    try:
        # argv is built by probe(): QEMU and fixed options, no shell.
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)  # noqa: S603
    except subprocess.TimeoutExpired:
        return None


def probe(accel="kvm", timeout=10, kernel=None):
    """Run a test guest with ``accel``; return ``(works: bool, reason: str)``."""
    if accel == "kvm" and not os.path.exists("/dev/kvm"):
        return False, "/dev/kvm does not exist"
    qemu = _qemu_binary()
    if qemu is None:
        return False, "qemu-system-x86_64 is not installed"
    kernel = kernel or _host_kernel()
    started = time.monotonic()
    if kernel:
        with tempfile.NamedTemporaryFile(suffix=".log") as serial:
            proc = _run_probe(
                [qemu, "-accel", accel, "-m", "128", "-nodefaults", "-display", "none",
                 "-no-reboot", "-serial", f"file:{serial.name}", "-kernel", kernel,
                 "-append", "console=ttyS0 panic=-1 loglevel=4"],
                timeout,
            )
            printed = serial.read().decode(errors="replace")
        if proc is None:
            return False, f"a test kernel under {accel} printed nothing within {timeout}s"
        if "Kernel panic" in printed or "Linux version" in printed:
            return True, f"a test kernel ran under {accel} in {time.monotonic() - started:.2f}s"
        err = (proc.stderr or "").strip().splitlines()
        return False, f"a test kernel under {accel} failed: {err[-1] if err else proc.returncode}"
    with tempfile.NamedTemporaryFile(suffix=".img") as img:
        img.write(_BOOT_SECTOR)
        img.flush()
        argv = [
            qemu, "-accel", accel, "-m", "16", "-nodefaults", "-display", "none", "-no-reboot",
            "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
            "-drive", f"file={img.name},format=raw,if=floppy",
        ]
        proc = _run_probe(argv, timeout)
    if proc is None:
        return False, f"a test guest under {accel} did not run within {timeout}s"
    if proc.returncode == _EXPECTED_RC:
        return True, f"a test guest ran under {accel} in {time.monotonic() - started:.2f}s"
    err = (proc.stderr or "").strip().splitlines()
    return False, f"a test guest under {accel} failed: {err[-1] if err else proc.returncode}"


def kvm_status(cache_path=None, max_age=86400):
    """KVM probe result, cached in ``cache_path`` (JSON) so it runs once a day, not per call."""
    if cache_path:
        try:
            with open(cache_path) as fh:
                cached = json.load(fh)
            if time.time() - cached["time"] < max_age:
                return cached["works"], cached["reason"]
        except (OSError, ValueError, KeyError):
            pass
    works, reason = probe("kvm")
    if cache_path:
        os.makedirs(os.path.dirname(cache_path), exist_ok=True)
        fileio.write_json(cache_path, {"works": works, "reason": reason, "time": time.time()}, 0o644)
    return works, reason


def choose_type(requested=None, cache_path=None):
    """Return ``(type, reason)``: the forced type, else ``kvm`` if it works, else ``qemu``."""
    if requested:
        if requested not in TYPES:
            raise InvalidArgument(f"hypervisor must be one of {', '.join(TYPES)}, not {requested!r}")
        return requested, f"{requested} requested"
    works, reason = kvm_status(cache_path)
    if works:
        return "kvm", reason
    return "qemu", f"KVM unusable ({reason}); using QEMU TCG"
