"""saltvirt.storage.paths: the roots a call may name files under, disk names, the images directory."""

import os

import pytest

from saltvirt.errors import InvalidArgument
from saltvirt.storage import paths


@pytest.fixture
def roots(tmp_path):
    images = tmp_path / "images"
    for sub in ("images/base", "images/web1", "pool", "golden", "attach"):
        (tmp_path / sub).mkdir(parents=True)
    return paths.Roots(str(images), pool_targets=[str(tmp_path / "pool")],
                       image_roots=[str(tmp_path / "golden")], attach_roots=[str(tmp_path / "attach")])


def test_images_may_come_from_bases_pools_and_image_roots(roots, tmp_path):
    for path in ("images/base/centos-1f.qcow2", "pool/x.qcow2", "golden/centos.qcow2"):
        assert roots.image(str(tmp_path / path)) == str(tmp_path / path)


@pytest.mark.parametrize("path, message", [
    ("/etc/shadow", "is outside the allowed directories"),
    ("images/web1/system.qcow2", "where VMs keep their disks and keys: refused"),
    ("golden/../images/web1/system.qcow2", "where VMs keep their disks and keys"),
    ("attach/data.img", "is outside the allowed directories"),
])
def test_images_elsewhere_are_refused(roots, tmp_path, path, message):
    with pytest.raises(InvalidArgument, match=message):
        roots.image(path if path.startswith("/") else str(tmp_path / path))


def test_symlinks_are_followed(roots, tmp_path):
    link = tmp_path / "golden" / "innocent.qcow2"
    os.symlink("/etc/shadow", link)
    with pytest.raises(InvalidArgument, match=r"image .*innocent.qcow2 is outside the allowed directories"):
        roots.image(str(link))


def test_attach_and_disk_dirs(roots, tmp_path):
    assert roots.attach(str(tmp_path / "attach" / "d.img")) == str(tmp_path / "attach" / "d.img")
    assert roots.attach(str(tmp_path / "pool" / "d.img"))
    with pytest.raises(InvalidArgument, match="add its directory to virt:attach_roots"):
        roots.attach(str(tmp_path / "golden" / "centos.qcow2"))
    assert roots.disk_dir(str(tmp_path / "pool")) == str(tmp_path / "pool")
    for bad in ("/etc/cron.d", str(tmp_path / "images" / "web1"), "relative/dir"):
        with pytest.raises(InvalidArgument, match="pool"):
            roots.disk_dir(bad)


def test_no_attach_roots_means_only_pools(tmp_path):
    roots = paths.Roots(str(tmp_path), pool_targets=[])
    with pytest.raises(InvalidArgument, match=r"\(none configured\)"):
        roots.attach("/var/lib/libvirt/images/x.img")


@pytest.mark.parametrize("name", ["system", "data-1", "x.y_z+2"])
def test_good_disk_names(name):
    assert paths.validate_disk_name(name) == name


@pytest.mark.parametrize("name", ["../../../etc/cron.d/x", "a/b", ".hidden", "", None, "x" * 65, "a..b"])
def test_bad_disk_names(name):
    with pytest.raises(InvalidArgument, match="is not allowed: use 1 to 64 letters"):
        paths.validate_disk_name(name)


def test_images_dir_must_be_absolute():
    assert paths.images_dir(None) == paths.DEFAULT_IMAGES
    assert paths.images_dir("/srv/x/") == "/srv/x"
    with pytest.raises(InvalidArgument, match=r"virt:images is 'rel': it must be an absolute directory"):
        paths.images_dir("rel")


def test_disk_stem_is_per_vm_in_shared_pools():
    assert paths.disk_stem("web1", "data", pooled=True) == "web1-data"
    assert paths.disk_stem("web1", "data", pooled=False) == "data"
