"""A hypervisor's base of a salt:// image, used without asking the master when the master's hash
(passed by ``salt-run virt.init``) names the version it fetched last -- and only then."""

import hashlib
import json
import os
import stat
import subprocess

import pytest

from saltvirt import settings as vsettings
from saltvirt.provision import sources

IMAGE = "salt://centos.qcow2"


def digest(path):
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


@pytest.fixture
def host(tmp_path):
    cache = tmp_path / "cache" / "files" / "base"
    cache.mkdir(parents=True)
    cached = cache / "centos.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(cached), "16M"], check=True)
    return vsettings.from_dict({"virt": {"images": str(tmp_path / "images")}}), str(cached)


def test_the_last_fetched_version_is_found_and_nothing_else(host):
    settings, cached = host
    first = sources.base_for_overlay(settings, IMAGE, cached, "qcow2", saltenv="base")
    old = digest(cached)
    assert sources.known_base(settings, IMAGE, "base", f"sha256={old}") == first
    assert sources.known_base(settings, IMAGE, "base", f"sha256={old.upper()}") == first
    record_dir = os.path.join(settings.images_dir, "base", ".sources")
    (record,) = os.listdir(record_dir)
    assert stat.S_IMODE(os.stat(record_dir).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(os.path.join(record_dir, record)).st_mode) == 0o600
    # Hints that do not name exactly that version of exactly that image mean a normal fetch.
    for image, saltenv, hint in [
        (IMAGE, "base", "sha256=" + "0" * 64),           # another version
        (IMAGE, "dev", f"sha256={old}"),                # another environment
        ("salt://other.qcow2", "base", f"sha256={old}"),  # another image
        ("/srv/images/centos.qcow2", "base", f"sha256={old}"),  # not from the file server
        (IMAGE, "base", f"md5={old}"),
        (IMAGE, "base", old),
        (IMAGE, "base", "sha256=../../etc/passwd"),
        (IMAGE, "base", None),
    ]:
        assert sources.known_base(settings, image, saltenv, hint) is None, (image, saltenv, hint)

    # The master's file changes: the next fetch makes a new base and records it. The older
    # version can no longer be selected by its hash, although its base is still on disk.
    subprocess.run(["qemu-img", "resize", "-q", "-f", "qcow2", cached, "32M"], check=True)
    second = sources.base_for_overlay(settings, IMAGE, cached, "qcow2", saltenv="base")
    assert second != first and os.path.isfile(first)
    assert sources.known_base(settings, IMAGE, "base", f"sha256={old}") is None
    assert sources.known_base(settings, IMAGE, "base", f"sha256={digest(cached)}") == second
    # A base removed since (virt.remove_image) is not used: the fetch makes it again.
    os.chmod(second, 0o644)
    os.unlink(second)
    assert sources.known_base(settings, IMAGE, "base", f"sha256={digest(cached)}") is None


def test_a_record_pointing_outside_the_base_directory_is_ignored(host):
    settings, cached = host
    sources.base_for_overlay(settings, IMAGE, cached, "qcow2", saltenv="base")
    record_dir = os.path.join(settings.images_dir, "base", ".sources")
    (record,) = os.listdir(record_dir)
    path = os.path.join(record_dir, record)
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    assert sources.known_base(settings, IMAGE, "base", f"sha256={digest(cached)}") == data["base"]
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(dict(data, base=cached), fh)  # an existing file, not a base
    assert sources.known_base(settings, IMAGE, "base", f"sha256={digest(cached)}") is None
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("not json")
    assert sources.known_base(settings, IMAGE, "base", f"sha256={digest(cached)}") is None
