"""saltvirt.storage.bases with real qemu-img/qemu-io images (no domains: the image files are the users)."""

import os
import stat
import subprocess

import pytest

from saltvirt.errors import InvalidArgument, NotFound
from saltvirt.storage import bases, images


def qemu_io(path, command, readonly=False, fmt="qcow2"):
    argv = ["qemu-io", "-f", fmt] + (["-r"] if readonly else []) + ["-c", command, str(path)]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    assert "failed" not in out.lower(), out
    return out


def make_base(path):
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "16M"], check=True)
    qemu_io(path, "write -P 0x11 0 1M")
    os.chmod(path, 0o444)
    return str(path)


def overlay(path, base):
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base), str(path)],
                   check=True)
    return str(path)


@pytest.fixture
def tree(tmp_path):
    images = tmp_path / "images"
    (images / "a").mkdir(parents=True)
    (images / "b").mkdir()
    base = make_base(tmp_path / "base.qcow2")
    a = overlay(images / "a" / "system.qcow2", base)
    b = overlay(images / "b" / "system.qcow2", base)
    c = overlay(images / "a" / "snap.qcow2", a)  # reaches the base through a
    qemu_io(a, "write -P 0x22 1M 64k")
    qemu_io(b, "write -P 0x33 1M 64k")
    return {"dir": str(images), "base": base, "a": a, "b": b, "c": c}


def test_users_direct_and_indirect(tree):
    users = bases.find_users(None, tree["base"], tree["dir"])
    assert users["direct"] == sorted([tree["a"], tree["b"]])
    assert users["indirect"] == [tree["c"]]
    assert users["domains"] == {}
    assert bases.find_users(None, tree["a"], tree["dir"])["direct"] == [tree["c"]]


def test_backing_files_nearest_first_and_none_for_what_cannot_be_read(tree, tmp_path):
    assert images.backing_files(tree["c"]) == [tree["a"], tree["base"]]
    assert images.backing_files(tree["base"]) == []
    assert images.backing_files(str(tmp_path / "missing.qcow2")) == []
    orphan = tmp_path / "orphan.qcow2"  # its backing file is gone: qemu-img cannot open the chain
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-u", "-b", str(tmp_path / "gone.qcow2"),
                    str(orphan), "16M"], check=True)
    with pytest.raises(InvalidArgument):
        images.info(str(orphan))
    assert images.backing_files(str(orphan)) == []


def test_remove_refuses_a_base_in_use_and_names_the_users(tree):
    with pytest.raises(InvalidArgument) as err:
        bases.remove(None, tree["base"], tree["dir"])
    assert "is the base of 3 image(s)" in str(err.value) and tree["c"] in str(err.value)
    assert os.path.exists(tree["base"])
    with pytest.raises(NotFound):
        bases.remove(None, tree["base"] + ".nope", tree["dir"])


def test_rebase_onto_a_copy_keeps_content_and_frees_the_old_base(tree):
    result = bases.rebase_users(None, tree["base"], tree["dir"])
    new = result["new_base"]
    assert new.startswith(tree["base"] + ".") and os.path.isfile(new)
    assert not os.stat(new).st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
    assert sorted(r["overlay"] for r in result["rebased"]) == sorted([tree["a"], tree["b"]])
    assert all(r["how"] == "rebase" and r["backing"] == new for r in result["rebased"])
    assert result["indirect"] == [tree["c"]]
    # The old base is free: remove it; the overlays read their own data and the base's.
    bases.remove(None, tree["base"], tree["dir"])
    qemu_io(tree["a"], "read -P 0x22 1M 64k", readonly=True)
    qemu_io(tree["b"], "read -P 0x33 1M 64k", readonly=True)
    qemu_io(tree["c"], "read -P 0x11 0 64k", readonly=True)  # through a, onto the copy
    qemu_io(tree["c"], "read -P 0x22 1M 64k", readonly=True)


def test_a_write_protected_intermediate_is_rebased_and_stays_protected(tree):
    os.chmod(tree["a"], 0o444)  # a is c's base: protect_base made it read-only
    result = bases.rebase_users(None, tree["base"], tree["dir"], new_base=tree["base"] + ".v2")
    assert result["new_base"] == tree["base"] + ".v2"
    assert stat.S_IMODE(os.stat(tree["a"]).st_mode) == 0o444
    qemu_io(tree["c"], "read -P 0x22 1M 64k", readonly=True)


def test_rebase_refuses_an_existing_copy_and_a_missing_base(tree):
    open(tree["base"] + ".taken", "w").close()
    with pytest.raises(InvalidArgument, match="already exists"):
        bases.rebase_users(None, tree["base"], tree["dir"], new_base=tree["base"] + ".taken")
    with pytest.raises(NotFound):
        bases.rebase_users(None, tree["base"] + ".missing", tree["dir"])


def test_refuse_if_used_ignores_the_callers_own_images(tree):
    # What virt.purge checks for VM a: its snapshot overlay c is its own, so a may go.
    bases.refuse_if_used(None, [tree["a"]], tree["dir"], ignore=[tree["a"], tree["c"]])
    with pytest.raises(InvalidArgument, match="is the base of 1 image"):
        bases.refuse_if_used(None, [tree["a"]], tree["dir"], ignore=[tree["a"]])


def test_default_copy_name():
    assert bases.default_copy_name("/x/base.qcow2", now=0).startswith("/x/base.qcow2.1970")
