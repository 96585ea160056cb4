"""saltvirt.storage.images against the real qemu-img / qemu-io (qemu-utils); no libvirt needed."""

import concurrent.futures
import hashlib
import os
import shutil
import stat
import struct
import threading
import time

import pytest

from saltvirt import cmd
from saltvirt.errors import CommandFailed, InvalidArgument, NotFound, VirtError
from saltvirt.storage import images

# qemu-img and qemu-io (qemu-utils) are installed by `make install`; a missing one fails.

MIB = 1024 * 1024


def qemu_io(path, command, fmt="qcow2"):
    return cmd.run(["qemu-io", "-f", fmt, "-c", command, str(path)])


def pattern_ok(path, pattern, offset, length, fmt="qcow2"):
    try:
        qemu_io(path, f"read -P {pattern} {offset} {length}", fmt=fmt)
    except CommandFailed:
        return False
    return True


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(MIB), b""):
            digest.update(block)
    return digest.hexdigest()


def listing(directory):
    return sorted(os.listdir(directory))


@pytest.fixture
def base(tmp_path):
    """A 64 MiB qcow2 base whose first 4 MiB hold the byte 0xcd."""
    path = tmp_path / "base.qcow2"
    cmd.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "64M"])
    qemu_io(path, "write -P 0xcd 0 4M")
    return str(path)


# --- info -----------------------------------------------------------------------------------


def test_info_standalone(base):
    details = images.info(base)
    assert details["format"] == "qcow2"
    assert details["virtual_size"] == 64 * MIB
    assert details["actual_size"] > 0
    assert details["backing_chain"] == []
    assert details["backing_file"] is None
    assert details["filename"] == base


def test_info_missing_file(tmp_path):
    with pytest.raises(NotFound, match="does not exist"):
        images.info(tmp_path / "nope.qcow2")


def test_info_directory(tmp_path):
    with pytest.raises(InvalidArgument, match="not a regular file"):
        images.info(tmp_path)


def test_info_missing_backing_file(tmp_path, base):
    overlay = images.clone(base, tmp_path / "vm.qcow2", overlay=True)["filename"]
    os.unlink(base)
    with pytest.raises(InvalidArgument, match="not a usable disk image"):
        images.info(overlay)


# --- overlays -------------------------------------------------------------------------------


def test_overlay_clone_records_backing_and_never_writes_base(tmp_path, base):
    images.protect_base(base)
    before = sha256(base)
    started = time.perf_counter()
    details = images.clone(base, tmp_path / "vm.qcow2", overlay=True)
    elapsed = time.perf_counter() - started
    print(f"\noverlay clone (info + create + info): {elapsed * 1000:.1f} ms")

    assert details["format"] == "qcow2"
    assert details["virtual_size"] == 64 * MIB
    assert details["backing_file"] == base
    assert details["backing_format"] == "qcow2"
    assert details["backing_chain"] == [{"filename": base, "format": "qcow2"}]

    overlay = details["filename"]
    assert pattern_ok(overlay, "0xcd", 0, "4M")  # sees the base's data
    qemu_io(overlay, "write -P 0xab 0 1M")
    assert pattern_ok(overlay, "0xab", 0, "1M")
    assert pattern_ok(overlay, "0xcd", "1M", "3M")
    assert sha256(base) == before
    assert pattern_ok(base, "0xcd", 0, "4M")


def test_overlay_with_bigger_size(tmp_path, base):
    details = images.clone(base, tmp_path / "vm.qcow2", overlay=True, size="128M")
    assert details["virtual_size"] == 128 * MIB
    assert details["backing_format"] == "qcow2"


def test_overlay_on_raw_base(tmp_path):
    raw = tmp_path / "base.raw"
    images.create_blank(raw, "16M", fmt="raw")
    details = images.clone(raw, tmp_path / "vm.qcow2", overlay=True)
    assert details["backing_chain"] == [{"filename": str(raw), "format": "raw"}]
    assert details["backing_format"] == "raw"


def test_overlay_chain_of_two(tmp_path, base):
    mid = images.clone(base, tmp_path / "mid.qcow2", overlay=True)["filename"]
    top = images.clone(mid, tmp_path / "top.qcow2", overlay=True)
    assert [item["filename"] for item in top["backing_chain"]] == [mid, base]


def test_overlay_refuses_other_base_formats(tmp_path):
    vmdk = tmp_path / "base.vmdk"
    cmd.run(["qemu-img", "create", "-q", "-f", "vmdk", str(vmdk), "16M"])
    with pytest.raises(InvalidArgument, match="qcow2 or raw base"):
        images.clone(vmdk, tmp_path / "vm.qcow2", overlay=True)
    assert not (tmp_path / "vm.qcow2").exists()


def test_overlay_refuses_non_qcow2_format(tmp_path, base):
    with pytest.raises(InvalidArgument, match="always qcow2"):
        images.clone(base, tmp_path / "vm.raw", overlay=True, fmt="raw")


# --- full copies ----------------------------------------------------------------------------


def test_full_copy_is_independent(tmp_path, base):
    details = images.clone(base, tmp_path / "copy.qcow2")
    assert details["format"] == "qcow2"
    assert details["backing_chain"] == []
    assert details["virtual_size"] == 64 * MIB
    assert pattern_ok(details["filename"], "0xcd", 0, "4M")
    os.unlink(base)
    assert pattern_ok(details["filename"], "0xcd", 0, "4M")


def test_full_copy_flattens_an_overlay(tmp_path, base):
    overlay = images.clone(base, tmp_path / "vm.qcow2", overlay=True)["filename"]
    qemu_io(overlay, "write -P 0xab 0 1M")
    flat = images.clone(overlay, tmp_path / "flat.qcow2")
    assert flat["backing_chain"] == []
    assert pattern_ok(flat["filename"], "0xab", 0, "1M")
    assert pattern_ok(flat["filename"], "0xcd", "1M", "3M")


def test_full_copy_to_raw_with_growth_is_sparse(tmp_path, base):
    details = images.clone(base, tmp_path / "copy.raw", fmt="raw", size="1G")
    assert details["format"] == "raw"
    assert details["virtual_size"] == 1024 * MIB
    assert os.path.getsize(details["filename"]) == 1024 * MIB
    assert details["actual_size"] < 64 * MIB  # sparse
    assert pattern_ok(details["filename"], "0xcd", 0, "4M", fmt="raw")


def test_full_copy_growth_qcow2(tmp_path, base):
    details = images.clone(base, tmp_path / "copy.qcow2", size=128 * MIB)
    assert details["virtual_size"] == 128 * MIB


def test_clone_refuses_shrinking(tmp_path, base):
    for overlay in (False, True):
        with pytest.raises(InvalidArgument, match="shrinking"):
            images.clone(base, tmp_path / "small.qcow2", size="32M", overlay=overlay)
    assert listing(tmp_path) == ["base.qcow2"]


def test_clone_refuses_existing_dest(tmp_path, base):
    dest = tmp_path / "vm.qcow2"
    dest.write_bytes(b"precious")
    for overlay in (False, True):
        with pytest.raises(InvalidArgument, match="already exists"):
            images.clone(base, dest, overlay=overlay)
    assert dest.read_bytes() == b"precious"
    assert listing(tmp_path) == ["base.qcow2", "vm.qcow2"]


def test_shared_base_is_read_only_and_reused(tmp_path, base):
    dest = str(tmp_path / "base-1234.qcow2")
    made = images.shared_base(base, dest)
    assert made["filename"] == dest and made["backing_chain"] == []
    assert stat.S_IMODE(os.stat(dest).st_mode) == 0o444
    assert pattern_ok(dest, "0xcd", 0, 4 * MIB)
    inode = os.stat(dest).st_ino
    assert images.shared_base(base, dest)["filename"] == dest
    assert os.stat(dest).st_ino == inode  # reused, not rebuilt
    assert listing(tmp_path) == ["base-1234.qcow2", "base.qcow2"]


def test_shared_base_concurrent_callers_all_get_it(tmp_path, base):
    # Concurrent virt.init calls on one hypervisor publish the same content-addressed base:
    # every caller must get it, whichever one wins the race.
    dest = str(tmp_path / "base-5678.qcow2")
    barrier = threading.Barrier(4)

    def make():
        barrier.wait()
        return images.shared_base(base, dest)["filename"]

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: make(), range(4)))
    assert results == [dest] * 4
    assert stat.S_IMODE(os.stat(dest).st_mode) == 0o444
    assert listing(tmp_path) == ["base-5678.qcow2", "base.qcow2"]  # no temporary left


def test_clone_refuses_missing_source_and_dest_dir(tmp_path, base):
    with pytest.raises(NotFound):
        images.clone(tmp_path / "nope.qcow2", tmp_path / "vm.qcow2")
    with pytest.raises(NotFound, match="directory"):
        images.clone(base, tmp_path / "no" / "vm.qcow2")


# --- no partial file after a failure --------------------------------------------------------


def test_failed_convert_leaves_nothing(tmp_path, base):
    before = listing(tmp_path)
    with pytest.raises(CommandFailed):
        images.clone(base, tmp_path / "copy.img", fmt="nosuchformat")
    assert listing(tmp_path) == before


def test_failure_after_a_complete_copy_leaves_nothing(tmp_path, base, monkeypatch):
    real_run = cmd.run

    def failing_resize(argv, **kwargs):
        if argv[:2] == ["qemu-img", "resize"]:
            raise CommandFailed(argv, 1, "simulated resize failure")
        return real_run(argv, **kwargs)

    monkeypatch.setattr(cmd, "run", failing_resize)
    before = listing(tmp_path)
    with pytest.raises(CommandFailed, match="simulated"):
        images.clone(base, tmp_path / "copy.qcow2", size="128M")
    assert listing(tmp_path) == before


def test_failed_overlay_create_leaves_nothing(tmp_path, base, monkeypatch):
    real_run = cmd.run

    def failing_create(argv, **kwargs):
        if argv[:2] == ["qemu-img", "create"]:
            real_run(argv, **kwargs)  # the temporary file is really written...
            raise CommandFailed(argv, 1, "simulated failure after create")
        return real_run(argv, **kwargs)

    monkeypatch.setattr(cmd, "run", failing_create)
    before = listing(tmp_path)
    with pytest.raises(CommandFailed, match="simulated"):
        images.clone(base, tmp_path / "vm.qcow2", overlay=True)
    assert listing(tmp_path) == before


def test_full_copy_refused_without_space(tmp_path, base, monkeypatch):
    monkeypatch.setattr(images, "free_space_mib", lambda directory: 0)
    with pytest.raises(VirtError, match="not enough space"):
        images.clone(base, tmp_path / "copy.qcow2")
    assert listing(tmp_path) == ["base.qcow2"]


# --- check_source ---------------------------------------------------------------------------


def test_check_source_accepts_a_good_qcow2(base):
    details = images.check_source(base)
    assert details["format"] == "qcow2"


def test_check_source_refuses_missing(tmp_path):
    with pytest.raises(NotFound):
        images.check_source(tmp_path / "missing.img")


def test_check_source_refuses_text_file(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("just some notes\n" * 100)
    with pytest.raises(InvalidArgument, match="not recognised as a disk image"):
        images.check_source(text)
    assert images.check_source(text, allow_unrecognised=True)["format"] == "raw"


def test_check_source_refuses_empty_file(tmp_path):
    empty = tmp_path / "empty.img"
    empty.touch()
    for allow in (False, True):
        with pytest.raises(InvalidArgument, match="empty"):
            images.check_source(empty, allow_unrecognised=allow)


def _overwrite(path, offset, data):
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(data)


def test_check_source_refuses_broken_qcow2_header(tmp_path, base):
    broken = tmp_path / "broken.qcow2"
    shutil.copy(base, broken)
    _overwrite(broken, 40, b"\xff" * 8)  # l1_table_offset
    with pytest.raises(InvalidArgument, match="not a usable disk image"):
        images.check_source(broken)


def test_check_source_refuses_truncated_qcow2(tmp_path, base):
    truncated = tmp_path / "truncated.qcow2"
    shutil.copy(base, truncated)
    os.truncate(truncated, 100)
    with pytest.raises(InvalidArgument, match="not a usable disk image"):
        images.check_source(truncated)


def test_check_source_refuses_qcow2_with_corrupt_metadata(tmp_path, base):
    corrupt = tmp_path / "corrupt.qcow2"
    shutil.copy(base, corrupt)
    with open(corrupt, "rb") as handle:
        header = handle.read(56)
    refcount_table_offset = struct.unpack(">Q", header[48:56])[0]
    with open(corrupt, "rb") as handle:
        handle.seek(refcount_table_offset)
        first_refcount_block = struct.unpack(">Q", handle.read(8))[0]
    _overwrite(corrupt, first_refcount_block, b"\0" * 64)  # clusters now "unreferenced"
    assert images.info(corrupt)["format"] == "qcow2"  # the header itself still opens
    with pytest.raises(InvalidArgument, match="is corrupt"):
        images.check_source(corrupt)


def test_check_source_qcow2_with_missing_backing_file(tmp_path, base):
    overlay = images.clone(base, tmp_path / "vm.qcow2", overlay=True)["filename"]
    os.unlink(base)
    with pytest.raises(InvalidArgument):
        images.check_source(overlay)


def test_check_source_accepts_raw_with_partition_table(tmp_path):
    disk = tmp_path / "disk.raw"
    with open(disk, "wb") as handle:
        handle.truncate(8 * MIB)
        handle.seek(510)
        handle.write(b"\x55\xaa")
    assert images.check_source(disk)["signature"] == "MBR/GPT boot sector"


def test_check_source_accepts_raw_ext4(tmp_path):
    disk = tmp_path / "root.ext4"
    with open(disk, "wb") as handle:
        handle.truncate(16 * MIB)
    cmd.run(["mkfs.ext4", "-q", "-F", str(disk)])
    assert images.check_source(disk)["signature"] == "ext2/3/4 superblock"


def test_check_source_accepts_iso_and_xfs_magic(tmp_path):
    iso = tmp_path / "seed.iso"
    with open(iso, "wb") as handle:
        handle.truncate(64 * 1024)
        handle.seek(32769)
        handle.write(b"CD001")
    assert images.check_source(iso)["signature"] == "ISO 9660 volume descriptor"
    xfs = tmp_path / "xfs.raw"
    with open(xfs, "wb") as handle:
        handle.write(b"XFSB")
        handle.truncate(MIB)
    assert images.check_source(xfs)["signature"] == "XFS superblock"


# --- blank images, resize, protect ----------------------------------------------------------


def test_create_blank_and_resize(tmp_path):
    details = images.create_blank(tmp_path / "data.qcow2", "512M")
    assert details["format"] == "qcow2"
    assert details["virtual_size"] == 512 * MIB
    grown = images.resize(details["filename"], "1G")
    assert grown["virtual_size"] == 1024 * MIB
    with pytest.raises(InvalidArgument, match="shrinking"):
        images.resize(details["filename"], "512M")
    with pytest.raises(InvalidArgument, match="already exists"):
        images.create_blank(tmp_path / "data.qcow2", "1G")
    with pytest.raises(InvalidArgument):
        images.create_blank(tmp_path / "bad.qcow2", "lots")
    assert listing(tmp_path) == ["data.qcow2"]


def test_protect_base(tmp_path, base):
    os.chmod(base, 0o664)
    mode = images.protect_base(base)
    assert mode == 0o444
    assert stat.S_IMODE(os.stat(base).st_mode) == 0o444
    with pytest.raises(InvalidArgument, match="write-protected"):
        images.resize(base, "128M")


def test_free_space_mib(tmp_path):
    free = images.free_space_mib(tmp_path)
    assert isinstance(free, int) and free > 0
    with pytest.raises(NotFound):
        images.free_space_mib(tmp_path / "nope")


# --- users_of and rebase --------------------------------------------------------------------


def test_users_of(tmp_path, base):
    ov1 = images.clone(base, tmp_path / "ov1.qcow2", overlay=True)["filename"]
    ov2 = images.clone(ov1, tmp_path / "ov2.qcow2", overlay=True)["filename"]
    alone = images.create_blank(tmp_path / "alone.qcow2", "1M")["filename"]
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    candidates = [base, ov1, ov2, alone, str(text), str(tmp_path / "missing.qcow2")]
    assert images.users_of(base, candidates) == [ov1, ov2]
    assert images.users_of(ov1, candidates) == [ov2]
    assert images.users_of(alone, candidates) == []
    # a symlinked path to the base still counts
    link = tmp_path / "link.qcow2"
    link.symlink_to(base)
    assert images.users_of(str(link), candidates) == [ov1, ov2]


def test_users_of_survives_a_broken_chain(tmp_path, base):
    ov1 = images.clone(base, tmp_path / "ov1.qcow2", overlay=True)["filename"]
    ov2 = images.clone(ov1, tmp_path / "ov2.qcow2", overlay=True)["filename"]
    os.unlink(base)
    assert images.users_of(ov1, [ov1, ov2]) == [ov2]


def test_rebase_onto_a_copy_of_the_base(tmp_path, base):
    overlay = images.clone(base, tmp_path / "vm.qcow2", overlay=True)["filename"]
    qemu_io(overlay, "write -P 0xab 0 1M")
    new_base = images.clone(base, tmp_path / "base2.qcow2")["filename"]

    details = images.rebase(overlay, new_base)
    assert details["backing_chain"] == [{"filename": new_base, "format": "qcow2"}]
    assert images.users_of(base, [overlay]) == []
    assert images.users_of(new_base, [overlay]) == [overlay]

    os.unlink(base)  # the old base is gone: data must come from overlay + new base
    assert pattern_ok(overlay, "0xab", 0, "1M")
    assert pattern_ok(overlay, "0xcd", "1M", "3M")


def test_safe_rebase_onto_a_different_base_keeps_content(tmp_path, base):
    overlay = images.clone(base, tmp_path / "vm.qcow2", overlay=True)["filename"]
    qemu_io(overlay, "write -P 0xab 0 1M")
    blank = images.create_blank(tmp_path / "blank.qcow2", "64M")["filename"]
    images.rebase(overlay, blank)
    os.unlink(base)
    assert pattern_ok(overlay, "0xab", 0, "1M")
    assert pattern_ok(overlay, "0xcd", "1M", "3M")  # copied into the overlay by safe mode


def test_unsafe_rebase_after_the_base_moved(tmp_path, base):
    overlay = images.clone(base, tmp_path / "vm.qcow2", overlay=True)["filename"]
    qemu_io(overlay, "write -P 0xab 0 1M")
    moved = str(tmp_path / "moved.qcow2")
    os.rename(base, moved)
    with pytest.raises(InvalidArgument):
        images.info(overlay)
    details = images.rebase(overlay, moved, safe=False)
    assert details["backing_chain"] == [{"filename": moved, "format": "qcow2"}]
    assert pattern_ok(overlay, "0xab", 0, "1M")
    assert pattern_ok(overlay, "0xcd", "1M", "3M")


def test_rebase_flatten_and_loop(tmp_path, base):
    overlay = images.clone(base, tmp_path / "vm.qcow2", overlay=True)["filename"]
    top = images.clone(overlay, tmp_path / "top.qcow2", overlay=True)["filename"]
    with pytest.raises(InvalidArgument, match="loop"):
        images.rebase(overlay, top)
    qemu_io(overlay, "write -P 0xab 0 1M")
    details = images.rebase(overlay, None)
    assert details["backing_chain"] == []
    assert pattern_ok(overlay, "0xab", 0, "1M")
    assert pattern_ok(overlay, "0xcd", "1M", "3M")
