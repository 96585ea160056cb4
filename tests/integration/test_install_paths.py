"""Two install paths on the lab: file_roots + ``saltutil.sync_all``, and the hypervisor formula
making a minion whose Python has nothing but Salt in it usable (``state.apply virt`` alone).

The pip/wheel path is tested without the lab: tests/functional/test_install.py.
"""

import filecmp
import json
import os
import shutil
import subprocess
import sys
import time
import uuid

import pytest
import salt.version

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LAB_DIR = os.environ.get("LAB_DIR", "/var/lib/svlab")
LABCTL = os.path.join(REPO, "lab", "labctl.py")
MINION_CACHE = os.path.join(LAB_DIR, "hv{n}", "minion", "var", "cache", "salt", "minion", "extmods")
MASTER_CACHE = os.path.join(LAB_DIR, "master", "var", "cache", "salt", "master", "extmods")
WHEELHOUSE = os.path.join(LAB_DIR, "wheelhouse")
# What libvirt-python the lab's own virtualenv runs (requirements-dev.txt pins it).
LIBVIRT_PYTHON = next(line.strip() for line in open(os.path.join(REPO, "requirements-dev.txt"))
                      if line.startswith("libvirt-python"))


def _same(path_a, path_b):
    return filecmp.cmp(path_a, path_b, shallow=False)


def test_file_roots_sync_all_installs_every_kind(lab):
    extmods = MINION_CACHE.format(n=1)
    synced = os.path.join(extmods, "modules", "virt.py")
    os.unlink(synced)  # sync_all must bring it back from the master's file_roots (this repository)
    ret = lab.salt_json("hypervisor1", "saltutil.sync_all")["hypervisor1"]
    assert "modules.virt" in ret["modules"]
    for src in ("_modules/virt.py", "_modules/guestfs.py", "_states/virt.py", "_grains/virt.py",
                "_utils/saltvirt/coexist.py"):
        assert _same(os.path.join(extmods, src[1:]), os.path.join(REPO, src)), src
    # The minion's loader takes the synced files (extension_modules), and the synced grains run.
    report = lab.salt_json("hypervisor1", "virt.implementation")["hypervisor1"]
    assert report["active"] == {
        "modules": {"implementation": "salt-virt", "path": synced},
        "states": {"implementation": "salt-virt", "path": os.path.join(extmods, "states", "virt.py")},
    }
    assert report["conflict"] is False
    grains = lab.salt_json("hypervisor1", "grains.item", "virt_saltvirt", "virt_libvirt")["hypervisor1"]
    assert grains["virt_saltvirt"] == report["salt_virt"]["version"]
    assert grains["virt_libvirt"].count(".") == 2
    # The master: runner, outputters and ext_pillar synced the same way.
    lab.run("salt-run", "saltutil.sync_all")
    for src in ("_runners/virt.py", "_output/virt_query.py", "_output/virt_progress.py", "_pillar/libvirt.py"):
        assert _same(os.path.join(MASTER_CACHE, src[1:]), os.path.join(REPO, src)), src
    _, runner = lab.run_json("virt.implementation")
    assert runner["active"]["runners"] == {
        "implementation": "salt-virt", "path": os.path.join(MASTER_CACHE, "runners", "virt.py")}


def _run(argv, timeout=600, **kw):
    proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout, **kw)
    assert proc.returncode == 0, f"{' '.join(map(str, argv))}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def _pip_names(python):
    out = _run([python, "-m", "pip", "list", "--format=json"]).stdout
    return {p["name"].lower() for p in json.loads(out)}


@pytest.fixture
def bare_hypervisor(lab):
    """hypervisor2's salt-minion restarted from a new virtualenv with only Salt in it.

    The packages the formula will install are put into the lab's wheelhouse first (pip inside
    the lab's namespace reaches no index; libvirt-python as its source release, which the
    formula then builds on the hypervisor). Afterwards the minion runs from the lab's virtualenv
    again and the throw-away one is removed.
    """
    t0 = time.monotonic()
    venv = os.path.join(LAB_DIR, f"bare-python-{uuid.uuid4().hex[:6]}")
    _run([sys.executable, "-m", "venv", venv])
    python = os.path.join(venv, "bin", "python3")
    _run([python, "-m", "pip", "install", "-q", "--no-compile", f"salt=={salt.version.__version__}"])
    _run([python, "-m", "pip", "download", "-q", "-d", WHEELHOUSE, "--no-binary", "libvirt-python",
          LIBVIRT_PYTHON, "pycdlib", "cryptography", "setuptools", "wheel"])
    _run([sys.executable, LABCTL, "minion", "hypervisor2", venv], timeout=300)
    print(f"\nhypervisor2 runs from {venv} (ready in {time.monotonic() - t0:.1f}s)")
    try:
        yield {"id": "hypervisor2", "venv": venv, "python": python}
    finally:
        _run([sys.executable, LABCTL, "minion", "hypervisor2"], timeout=300)
        shutil.rmtree(venv, ignore_errors=True)


def _minion_pid(n):
    with open(os.path.join(LAB_DIR, f"hv{n}", "minion", "var", "run", "salt-minion.pid")) as fh:
        return int(fh.read().strip())


def test_formula_makes_a_bare_salt_python_a_hypervisor(lab, bare_hypervisor):
    hv, python = bare_hypervisor["id"], bare_hypervisor["python"]
    grains = lab.salt_json(hv, "grains.item", "pythonexecutable", "package")[hv]
    assert grains["pythonexecutable"] == python
    assert grains["package"] != "onedir"
    before = _pip_names(python)
    assert "salt" in before and not {"libvirt-python", "pycdlib"} & before
    # Salt 3008 itself needs cryptography: it is there from the start (the formula checks it).
    assert "cryptography" in before
    pid = _minion_pid(2)

    refused = lab.run("salt", hv, "virt.node_info", check=False)
    assert refused.returncode != 0
    assert "'virt' __virtual__ returned False" in refused.stdout
    # The refusal says how to install into the Python that runs this minion.
    assert f"{python} -m pip install" in refused.stdout

    t0 = time.monotonic()
    states = lab.salt_json(hv, "state.apply", "virt", "-t", "900", timeout=960)[hv]
    took = time.monotonic() - t0
    assert isinstance(states, dict), states
    failed = {k: v["comment"] for k, v in states.items() if v["result"] is not True}
    assert not failed, failed
    libs = next(v for k, v in states.items() if k.startswith("pip_|-salt-virt-python-libs_|-"))
    installed = {name.split("==")[0].lower() for name in libs["changes"]}
    assert installed == {"libvirt-python", "pycdlib"}, libs
    print(f"\nstate.apply virt on the bare Python: {took:.1f}s")

    # Same minion process, no restart: virt.* answers now.
    info = lab.salt_json(hv, "virt.node_info")[hv]
    assert isinstance(info, dict), info
    assert info["hostname"] == hv and info["libvirt_version"].count(".") == 2
    assert _minion_pid(2) == pid
    assert {"libvirt-python", "pycdlib"} <= _pip_names(python)
    # The library the job used is the one synced from file_roots, now with libvirt-python.
    grains = lab.salt_json(hv, "grains.item", "virt_libvirt", "virt_saltvirt")[hv]
    assert grains["virt_libvirt"] == info["libvirt_version"]
    assert grains["virt_saltvirt"]
    # Applying it again changes nothing.
    again = lab.salt_json(hv, "state.apply", "virt", "-t", "300")[hv]
    assert all(v["result"] is True and not v["changes"] for v in again.values()), again
