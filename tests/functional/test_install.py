"""The pip install path, and salt-virt next to saltext-virt, in a Python that only Salt is in.

One fresh virtualenv per session (``salt_venv``): Salt at the version the tests run with, then the
wheel ``pip wheel .`` builds from this repository, with its dependencies (libvirt-python is
compiled here: it has no wheels). Nothing of the repository is on that Python's path: whatever
Salt's loader finds, it finds through the ``salt.loader`` entry point of the installed package,
exactly as on a minion or master where ``salt-pip install salt-virt`` (onedir) or ``pip install``
(a virtualenv) put it.

saltext-virt, the Salt extension that also ships modules named ``virt``, is installed from PyPI
into a separate directory that only the coexistence tests put on ``PYTHONPATH``.

The file_roots install path (``saltutil.sync_all``) is tested on the lab:
tests/integration/test_install_paths.py.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time

import pytest
import salt.version

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SALT_VERSION = salt.version.__version__

#: Loads each kind of Salt module through Salt's own loader functions and reports, for each, which
#: file the bundle's functions came from. argv: cache dir, then optional extension_modules dir.
PROBE = textwrap.dedent("""
    import json, os, sys
    import salt.config, salt.loader

    cache = sys.argv[1]
    extmods = sys.argv[2] if len(sys.argv) > 2 else os.path.join(cache, "extmods")
    opts = salt.config.minion_config(None)
    opts.update(file_client="local", cachedir=cache, extension_modules=extmods, id="probe",
                __role="minion")
    master = salt.config.master_config(None)
    master.update(cachedir=cache, extension_modules=extmods)

    def origin(loader, name):
        if name not in loader:
            return None
        func = loader[name]
        return getattr(func, "func", func).__code__.co_filename

    utils = salt.loader.utils(opts)
    mods = salt.loader.minion_mods(opts, utils=utils)
    runners = salt.loader.runner(master)
    states = salt.loader.states(opts, mods, utils, {})
    outputters = salt.loader.outputters(master)
    pillars = salt.loader.pillars(master, mods)
    grains = salt.loader.grains(opts)
    import saltvirt
    found = {
        "library": saltvirt.__file__,
        "version": saltvirt.__version__,
        "module": origin(mods, "virt.node_info"),
        "module_implementation": origin(mods, "virt.implementation"),
        "guestfs": origin(mods, "guestfs.filesystems"),
        "runner": origin(runners, "virt.query"),
        "runner_implementation": origin(runners, "virt.implementation"),
        "state": origin(states, "virt.keys"),
        "outputter": origin(outputters, "virt_query"),
        "outputter_progress": origin(outputters, "virt_progress"),
        "ext_pillar": origin(pillars, "libvirt"),
        "grains": {k: v for k, v in grains.items() if k.startswith("virt_")},
    }
    if "virt.implementation" in mods:
        found["module_report"] = mods["virt.implementation"]()
    if "virt.implementation" in runners:
        found["runner_report"] = runners["virt.implementation"]()
    print(json.dumps(found, default=str))
""")


def _pip(python, *args, timeout=900):
    proc = subprocess.run([python, "-m", "pip", *args], capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"pip {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="session")
def wheel(tmp_path_factory):
    """``pip wheel .`` of this repository (its own build: no dependencies, no network)."""
    out = tmp_path_factory.mktemp("wheel")
    src = out / "src"
    # A copy of the working tree (without ignored files), so the build leaves nothing (build/,
    # *.egg-info) in it.
    listing = ["git", "-C", REPO, "ls-files", "-z", "--cached", "--others", "--exclude-standard"]
    files = subprocess.run(listing, capture_output=True, check=True).stdout
    for rel in filter(None, files.decode().split("\0")):
        dest = src / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if os.path.isfile(os.path.join(REPO, rel)):
            shutil.copy2(os.path.join(REPO, rel), dest)
    _pip(sys.executable, "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out), str(src), timeout=300)
    (built,) = out.glob("salt_virt-*.whl")
    return built


@pytest.fixture(scope="session")
def salt_venv(tmp_path_factory, wheel):
    """A fresh virtualenv with only Salt in it, then the wheel installed as a Salt user would."""
    t0 = time.monotonic()
    venv = tmp_path_factory.mktemp("salt-venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    _pip(python, "install", "-q", "--no-compile", f"salt=={SALT_VERSION}")  # compiled on first import instead
    before = _pip(python, "list", "--format=json").stdout
    _pip(python, "install", "-q", str(wheel))
    print(f"\nsalt venv with the wheel ready in {time.monotonic() - t0:.1f}s")
    return {"python": python, "site": _site(python), "before": {p["name"].lower() for p in json.loads(before)}}


@pytest.fixture(scope="session")
def saltext_dir(tmp_path_factory, salt_venv):
    """saltext-virt from PyPI, in a directory of its own (its only dependency, Salt, is in the venv)."""
    target = tmp_path_factory.mktemp("saltext")
    _pip(salt_venv["python"], "install", "-q", "--no-deps", "--target", str(target), "saltext-virt")
    assert (target / "saltext" / "virt" / "modules" / "virt.py").is_file()
    return target


def _site(python):
    return subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()


def _probe(salt_venv, tmp_path, extra_path=None, extmods=None):
    cache = tmp_path / "cache"
    cache.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    if extra_path:
        env["PYTHONPATH"] = str(extra_path)
    argv = [salt_venv["python"], "-c", PROBE, str(cache)] + ([str(extmods)] if extmods else [])
    proc = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-5000:]
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def test_a_fresh_salt_venv_lacks_what_the_wheel_brings(salt_venv):
    # The starting point is Salt alone: the wheel is what brings the bundle and libvirt-python.
    assert "salt" in salt_venv["before"]
    assert not {"salt-virt", "libvirt-python", "pycdlib"} & salt_venv["before"]


def test_wheel_registers_every_kind_with_salts_loader(salt_venv, tmp_path):
    found, _ = _probe(salt_venv, tmp_path)
    ext = os.path.join(salt_venv["site"], "saltvirt", "ext")
    assert found["library"] == os.path.join(salt_venv["site"], "saltvirt", "__init__.py")
    expected = {
        "module": "modules/virt.py",
        "module_implementation": "modules/virt.py",
        "guestfs": "modules/guestfs.py",
        "runner": "runners/virt.py",
        "runner_implementation": "runners/virt.py",
        "state": "states/virt.py",
        "outputter": "output/virt_query.py",
        "outputter_progress": "output/virt_progress.py",
        "ext_pillar": "pillar/libvirt.py",
    }
    assert {key: found[key] for key in expected} == {key: os.path.join(ext, rel) for key, rel in expected.items()}
    # Grains run from saltvirt/ext/grains: the libvirt version and the preloaded library's.
    assert found["grains"]["virt_saltvirt"] == found["version"]
    assert found["grains"]["virt_libvirt"].count(".") == 2
    # Without saltext-virt there is nothing to choose between: no grain, and the report says so.
    assert "virt_implementation" not in found["grains"]
    assert found["module_report"]["conflict"] is False
    assert found["module_report"]["active"]["modules"] == {
        "implementation": "salt-virt", "path": os.path.join(ext, "modules", "virt.py")}
    assert found["runner_report"]["active"]["runners"]["implementation"] == "salt-virt"


def test_saltext_virt_pip_installed_too_is_reported(salt_venv, saltext_dir, tmp_path):
    """Both pip-installed: the one listed first wins (here saltext-virt, on PYTHONPATH); the grain says so."""
    found, _ = _probe(salt_venv, tmp_path, extra_path=saltext_dir)
    saltext = os.path.join(str(saltext_dir), "saltext", "virt")
    # Salt's loader really took saltext-virt's files (both have virt.node_info, virt.query and
    # virt.keys); salt-virt's virt.implementation is gone with salt-virt's files.
    assert found["module"] == os.path.join(saltext, "modules", "virt.py")
    assert found["runner"] == os.path.join(saltext, "runners", "virt.py")
    assert found["state"] == os.path.join(saltext, "states", "virt.py")
    assert found["module_implementation"] is None and found["runner_implementation"] is None
    # salt-virt's own modules with other names still load from the wheel.
    assert found["ext_pillar"].startswith(salt_venv["site"])
    # The grain (saltext-virt has none of its own) tells which implementation is active.
    grain = found["grains"]["virt_implementation"]
    assert grain["modules"] == grain["states"] == "saltext-virt"
    assert grain["saltext_virt"] == _saltext_version(salt_venv, saltext_dir)
    assert "execution module: saltext-virt" in grain["message"]
    assert "salt-pip uninstall saltext.virt" in grain["message"]


def test_file_roots_sync_wins_over_pip_installed_saltext_virt(salt_venv, saltext_dir, tmp_path):
    """salt-virt synced into extension_modules (file_roots) comes before any pip-installed package."""
    extmods = tmp_path / "extmods"
    # What saltutil.sync_all puts there (the lab test checks sync_all itself).
    for src, kind in (("_modules", "modules"), ("_states", "states"), ("_runners", "runners"),
                      ("_grains", "grains")):
        shutil.copytree(os.path.join(REPO, src), extmods / kind, ignore=shutil.ignore_patterns("__pycache__"))
    found, log = _probe(salt_venv, tmp_path, extra_path=saltext_dir, extmods=extmods)
    assert found["module"] == str(extmods / "modules" / "virt.py")
    assert found["runner"] == str(extmods / "runners" / "virt.py")
    assert found["state"] == str(extmods / "states" / "virt.py")
    report = found["module_report"]
    assert report["conflict"] is True
    assert report["saltext_virt"]["path"] == os.path.join(str(saltext_dir), "saltext", "virt")
    assert {k: v["implementation"] for k, v in report["active"].items()} == {
        "modules": "salt-virt", "states": "salt-virt"}
    assert found["runner_report"]["active"]["runners"] == {
        "implementation": "salt-virt", "path": str(extmods / "runners" / "virt.py")}
    grain = found["grains"]["virt_implementation"]
    assert grain["modules"] == grain["states"] == "salt-virt"
    # The modules' __virtual__ say it in the log once, too.
    assert "virt execution module: saltext-virt" in log
    assert "virt runner: saltext-virt" in log


def _saltext_version(salt_venv, saltext_dir):
    code = "import importlib.metadata as m; print(m.version('saltext.virt'))"
    env = dict(os.environ, PYTHONPATH=str(saltext_dir))
    return subprocess.run([salt_venv["python"], "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.strip()
