#!/usr/bin/env python3
"""Run a daemonizing command (libvirtd -d) under a process that reaps its orphans at once.

    subreaper.py COMMAND [ARG...]

On a real hypervisor libvirtd's QEMU processes are reparented to an init (systemd) that reaps
them as soon as they exit. This machine's PID 1 reaps orphans only every ~2 s, and libvirt waits
for the reaping before it reports a domain off: every destroy, shutdown and migration's end cost
up to 2 s more here than on a hypervisor. This script stays behind as a child subreaper
(prctl PR_SET_CHILD_SUBREAPER) of the daemon and of everything the daemon leaves behind, and
reaps them at once; it exits when none is left.

Exit status: COMMAND's (the script returns as soon as COMMAND itself has exited).
"""

import ctypes
import os
import sys

PR_SET_CHILD_SUBREAPER = 36


def main(argv):
    if not argv:
        sys.stderr.write("usage: subreaper.py COMMAND [ARG...]\n")
        return 2
    read_end, write_end = os.pipe()
    if os.fork():
        # The caller's process: report COMMAND's exit status, leave the reaper behind.
        os.close(write_end)
        status = os.read(read_end, 16)
        return int(status) if status else 1
    os.close(read_end)
    os.setsid()
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        os.write(write_end, b"1")
        sys.stderr.write("subreaper.py: prctl(PR_SET_CHILD_SUBREAPER) failed\n")
        os._exit(1)
    child = os.fork()
    if child == 0:
        os.close(write_end)
        try:
            os.execvp(argv[0], argv)  # noqa: S606 -- the operator's command, no shell
        except OSError as exc:
            sys.stderr.write(f"subreaper.py: cannot run {argv[0]}: {exc}\n")
            os._exit(127)
    _, status = os.waitpid(child, 0)
    os.write(write_end, str(os.waitstatus_to_exitcode(status)).encode())
    os.close(write_end)
    # Detach from the caller's terminal and files: the reaper lives as long as the daemon.
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    while True:
        try:
            os.wait()
        except ChildProcessError:
            os._exit(0)
        except InterruptedError:
            continue


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
