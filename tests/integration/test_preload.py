"""The hypervisor minion's main process preloads the salt-virt library (``_grains/virt.py``);
a library that ``saltutil.sync_all`` or an operator changed afterwards is read anew by the next
job, never run stale."""

import os

import pytest

import saltvirt

LAB_DIR = os.environ.get("LAB_DIR", "/var/lib/svlab")
VMOPS = f"{LAB_DIR}/hv1/minion/var/cache/salt/minion/extmods/utils/saltvirt/domain/vmops.py"
ORIGINAL = "no domain named {name!r} on this host"
CHANGED = "no domain named {name!r} here (library changed after the preload)"


def _state_error(lab, name):
    proc = lab.run("salt", "hypervisor1", "virt.vm_state", name, "--out=json", check=False)
    assert proc.returncode != 0, proc.stdout
    return proc.stdout


def test_grain_reports_the_preloaded_library(lab):
    grains = lab.salt_json("hypervisor*", "grains.item", "virt_saltvirt", "virt_libvirt")
    for hyper in ("hypervisor1", "hypervisor2"):
        assert grains[hyper]["virt_saltvirt"] == saltvirt.__version__, grains
        assert grains[hyper]["virt_libvirt"].startswith("9."), grains


@pytest.fixture
def restore_library(lab):
    yield
    # A sync puts the repository's file back and makes the main process preload it again.
    lab.run("salt", "hypervisor1", "saltutil.sync_all", timeout=300)


def test_job_reads_library_changed_after_preload(lab, restore_library):
    assert "on this host" in _state_error(lab, "no-such-vm-preload")
    with open(VMOPS, encoding="utf-8") as f:
        text = f.read()
    assert ORIGINAL in text
    # Changed behind the minion's back: its main process still holds the old copy imported.
    with open(VMOPS, "w", encoding="utf-8") as f:
        f.write(text.replace(ORIGINAL, CHANGED))
    out = _state_error(lab, "no-such-vm-preload")
    assert "library changed after the preload" in out, out
    lab.run("salt", "hypervisor1", "saltutil.sync_all", timeout=300)
    with open(VMOPS, encoding="utf-8") as f:
        assert ORIGINAL in f.read()
    out = _state_error(lab, "no-such-vm-preload")
    assert "on this host" in out and "library changed" not in out, out
    grains = lab.salt_json("hypervisor1", "grains.item", "virt_saltvirt")
    assert grains["hypervisor1"]["virt_saltvirt"] == saltvirt.__version__
