"""scripts/subreaper.py: the lab's libvirtds run under it so that an exited QEMU is reaped at once.

A daemon started through it (it forks and its parent exits, as ``libvirtd -d`` does) and what
that daemon leaves behind (QEMU: forked twice, its parent gone) are reparented to the reaper,
not to PID 1; the reaper returns the command's exit status and goes away with its last child.
"""

import os
import subprocess
import sys
import textwrap
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SUBREAPER = os.path.join(REPO, "scripts", "subreaper.py")

# A "daemon" like libvirtd -d: forks, the parent exits; the daemon forks an "emulator" twice
# (orphaned, like QEMU) and records who adopted it, then waits for the test's go.
DAEMON = textwrap.dedent("""
    import os, sys, time
    out, go = sys.argv[1], sys.argv[2]
    if os.fork():
        os._exit(0)
    null = os.open(os.devnull, os.O_RDWR)  # a daemon lets go of its caller's output, as daemon(3)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    if os.fork() == 0:
        if os.fork() == 0:
            time.sleep(0.5)  # the middle process is gone: this one is an orphan now
            with open(out + ".tmp", "w") as fh:
                fh.write(f"{os.getpid()} {os.getppid()}")
            os.rename(out + ".tmp", out)
            while not os.path.exists(go):
                time.sleep(0.05)
            os._exit(0)
        os._exit(0)
    while not os.path.exists(go):
        time.sleep(0.05)
""")


def _wait_for(check, what, timeout=30):
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


@pytest.mark.functional
def test_orphans_of_a_daemon_are_adopted_by_the_reaper_which_leaves_with_them(tmp_path):
    out, go = tmp_path / "adopted", tmp_path / "go"
    script = tmp_path / "daemon.py"
    script.write_text(DAEMON)
    proc = subprocess.run([sys.executable, SUBREAPER, sys.executable, str(script), str(out), str(go)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    _wait_for(out.exists, "the orphaned 'emulator' never reported its parent")
    orphan, parent = map(int, out.read_text().split())
    with open(f"/proc/{parent}/cmdline", "rb") as fh:
        assert SUBREAPER.encode() in fh.read()  # adopted by the reaper, not by PID 1
    assert parent != 1
    go.write_text("")
    # The reaper reaps the orphan (no zombie left) and exits with its last child.
    _wait_for(lambda: not os.path.exists(f"/proc/{orphan}"), f"orphan {orphan} was not reaped")
    _wait_for(lambda: not os.path.exists(f"/proc/{parent}"), f"reaper {parent} did not exit")


@pytest.mark.functional
def test_the_commands_failure_is_the_callers(tmp_path):
    failed = subprocess.run([sys.executable, SUBREAPER, sys.executable, "-c", "raise SystemExit(3)"],
                            capture_output=True, text=True, timeout=60)
    assert failed.returncode == 3
    missing = subprocess.run([sys.executable, SUBREAPER, str(tmp_path / "no-such-daemon")],
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 127 and "cannot run" in missing.stderr
    usage = subprocess.run([sys.executable, SUBREAPER], capture_output=True, text=True, timeout=60)
    assert usage.returncode == 2 and "usage" in usage.stderr
