"""Functional tests: the bundle's Salt modules loaded in-process against this host's libvirtd.

``make test`` starts libvirtd (scripts/host-libvirtd.sh); a missing libvirtd is a failure, not
a skip. Every domain a test creates is named ``svtest-*`` and removed afterwards.
"""

import copy
import os
import pathlib
import shutil
import tempfile
import uuid

import pytest
import salt.config
from saltfactories.utils.functional import Loaders

from saltvirt import connection

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IMAGE_BUILD = os.path.join(REPO, "lab", "image", "build.sh")


@pytest.fixture(scope="session")
def libvirt_conn():
    try:
        conn = connection.connect("qemu:///system")
    except Exception as exc:  # a hard failure: functional tests need the real daemon
        pytest.fail(f"this host's libvirtd is not reachable ({exc}); run scripts/host-libvirtd.sh")
    yield conn
    conn.close()


@pytest.fixture(scope="session")
def guest_images(tmp_path_factory):
    """The lab's bootable test guest (centos.img raw + centos.qcow2), built once per session."""
    out = tmp_path_factory.mktemp("guest-images")
    import subprocess

    subprocess.run(["bash", IMAGE_BUILD, str(out)], check=True, capture_output=True, timeout=600)
    return out


@pytest.fixture(scope="session")
def qemu_dir():
    """A scratch directory QEMU (running as libvirt-qemu) can reach: pytest's tmp is 0700."""
    path = tempfile.mkdtemp(prefix="salt-virt-functional-", dir="/var/tmp")
    os.chmod(path, 0o755)  # noqa: S103  (QEMU, running as libvirt-qemu, must reach it)
    yield pathlib.Path(path)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def minion_opts(qemu_dir, guest_images):
    root = qemu_dir / "minion"
    root.mkdir()
    fileserver = root / "srv"
    fileserver.mkdir()
    for name in ("centos.img", "centos.qcow2"):
        shutil.copyfile(guest_images / name, fileserver / name)
    opts = salt.config.minion_config(None)
    opts.update(
        id="functional-hypervisor",
        root_dir=str(root),
        cachedir=str(root / "cache"),
        pki_dir=str(root / "pki"),
        sock_dir=str(root / "sock"),
        file_client="local",
        file_roots={"base": [str(fileserver)]},
        module_dirs=[REPO],
        master="127.0.0.1",
        # This host has no br0: the default NIC profile uses QEMU user networking here.
        virt={
            "images": str(root / "images"),
            "vnc": {"listen": "127.0.0.1"},
            "nic": {"default": [{"name": "eth0", "type": "user"}]},
            # The operator's roots: the tests' scratch directories hold their images and files.
            "image_roots": [str(qemu_dir), tempfile.gettempdir()],
            "attach_roots": [str(qemu_dir), tempfile.gettempdir()],
            # Seeding a call may choose, never invent: what the fault tests use.
            "seed_cmds": ["test.arg"],
            "seed_install_cmds": {"no-network": "sh -c 'echo no network >&2; exit 3'"},
            # Storage pools callers may define: under the tests' scratch directory only.
            "pools": {"allowed_targets": [str(qemu_dir / "pools")]},
        },
    )
    for key in ("cachedir", "pki_dir", "sock_dir"):
        os.makedirs(opts[key], exist_ok=True)
    return opts


@pytest.fixture(scope="session")
def loaders(minion_opts):
    return Loaders(minion_opts)


@pytest.fixture
def virt(loaders):
    return loaders.modules.virt


@pytest.fixture
def virt_with(minion_opts, tmp_path):
    """``virt_with(**settings)``: the virt module of a hypervisor whose ``virt:`` configuration
    has ``settings`` too, with a cache directory of its own: a loader empties its cache
    directory when it starts, and the session's one holds the synced modules and the KVM probe's
    answer (given to it: the probe runs once a session, not per loader)."""

    def make(**settings):
        opts = copy.deepcopy(minion_opts)
        opts["virt"].update(settings)
        opts["cachedir"] = str(tmp_path / f"cache-{uuid.uuid4().hex[:6]}")
        loaders = Loaders(opts)
        probe = os.path.join(minion_opts["cachedir"], "saltvirt", "kvm-probe.json")
        if os.path.exists(probe):
            os.makedirs(os.path.join(opts["cachedir"], "saltvirt"), exist_ok=True)
            shutil.copyfile(probe, os.path.join(opts["cachedir"], "saltvirt", "kvm-probe.json"))
        return loaders.modules.virt

    return make


@pytest.fixture
def vm_name(libvirt_conn):
    """A unique domain name; whatever exists under it afterwards is destroyed and undefined."""
    name = f"svtest-{uuid.uuid4().hex[:8]}"
    yield name
    try:
        dom = libvirt_conn.lookupByName(name)
    except Exception:
        return
    if dom.isActive():
        dom.destroy()
    dom.undefine()
