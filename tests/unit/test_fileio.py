"""saltvirt.fileio: atomic secret files and the one file lock used everywhere."""

import os
import stat
import subprocess
import sys
import threading
import time

import pytest

from saltvirt import fileio


def test_write_atomic_mode_and_replace(tmp_path):
    path = tmp_path / "key.pem"
    fileio.write_atomic(str(path), b"one", mode=0o600)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    fileio.write_atomic(str(path), b"two", mode=0o640)
    assert path.read_bytes() == b"two"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    assert os.listdir(tmp_path) == ["key.pem"]


def test_locked_excludes_a_second_holder(tmp_path):
    lock = str(tmp_path / "x.lock")
    with fileio.locked(lock):
        assert stat.S_IMODE(os.stat(lock).st_mode) == 0o600
        with pytest.raises(BlockingIOError):
            with fileio.locked(lock, timeout=0):
                pass
        started = time.monotonic()
        with pytest.raises(BlockingIOError):
            with fileio.locked(lock, timeout=0.3):
                pass
        assert time.monotonic() - started >= 0.3
    with fileio.locked(lock, timeout=0):  # free again
        pass


def test_locked_waits_for_the_holder(tmp_path):
    lock = str(tmp_path / "x.lock")
    order = []
    inside = threading.Event()

    def holder():
        with fileio.locked(lock):
            inside.set()
            time.sleep(0.3)
            order.append("holder done")

    thread = threading.Thread(target=holder)
    thread.start()
    inside.wait(5)
    with fileio.locked(lock, timeout=10):
        order.append("waiter in")
    thread.join()
    assert order == ["holder done", "waiter in"]


def test_locked_is_released_when_the_holder_dies(tmp_path):
    lock = str(tmp_path / "x.lock")
    code = (
        "import fcntl, os, sys, time\n"
        "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "print('held', flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, lock], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(BlockingIOError):
            with fileio.locked(lock, timeout=0):
                pass
    finally:
        proc.kill()
        proc.wait()
    with fileio.locked(lock, timeout=5):
        pass


def test_locked_refuses_a_symlink(tmp_path):
    target = tmp_path / "elsewhere"
    os.symlink(target, tmp_path / "x.lock")
    with pytest.raises(OSError):
        with fileio.locked(str(tmp_path / "x.lock")):
            pass
    assert not target.exists()


def test_a_json_object_changed_under_its_lock(tmp_path):
    path = str(tmp_path / "state" / "doc.json")
    assert fileio.read_json_object(path) == {}  # missing
    with fileio.changing_json_object(path) as data:
        data["a"] = 1
    assert fileio.read_json_object(path) == {"a": 1}
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
    assert fileio.read_json_object(path, valid=lambda d: "b" in d) == {}  # not what the caller keeps
    with open(path, "w") as fh:
        fh.write("[1, 2]")  # not an object
    with fileio.changing_json_object(path) as data:
        assert data == {}
