"""Both install paths: pip (Salt's salt.loader entry point) and file_roots (tested by the lab)."""

import json
import os
import subprocess
import sys
import textwrap

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PROBE = textwrap.dedent("""
    import json, sys, salt.config, salt.loader
    opts = salt.config.minion_config(None)
    opts.update(file_client="local", cachedir=sys.argv[1], extension_modules=sys.argv[1] + "/ext")
    mods = salt.loader.minion_mods(opts)
    master = salt.config.master_config(None)
    master.update(cachedir=sys.argv[1], extension_modules=sys.argv[1] + "/ext")
    runners = salt.loader.runner(master)
    states = salt.loader.states(opts, mods, salt.loader.utils(opts), {})
    outputters = salt.loader.outputters(master)
    grains = salt.loader.grains(opts)
    import saltvirt
    print(json.dumps({
        "module": "virt.init" in mods and "virt.vm_info" in mods,
        "runner": "virt.query" in runners and "virt.init" in runners,
        "state": "virt.keys" in states,
        "outputter": "virt_query" in outputters,
        "grains": isinstance(grains.get("virt_libvirt"), str) and grains.get("virt_saltvirt") == saltvirt.__version__,
        "pillar_dir": any(p.endswith("saltvirt/ext/pillar")
                          for p in salt.loader._module_dirs(master, "pillar")),
        "library": saltvirt.__file__,
    }))
""")


def test_pip_install_registers_the_bundle_with_salts_loader(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(wheels), REPO],
        check=True, capture_output=True, text=True, timeout=300,
    )
    (wheel,) = wheels.glob("salt_virt-*.whl")
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
        check=True, capture_output=True, text=True, timeout=300,
    )
    # A fresh interpreter that sees the installed bundle but not the repository checkout.
    env = dict(os.environ, PYTHONPATH=str(target))
    cache = tmp_path / "cache"
    cache.mkdir()
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, str(cache)], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert found["library"].startswith(str(target))
    assert {k: v for k, v in found.items() if k != "library"} == {
        "module": True, "runner": True, "state": True, "outputter": True, "grains": True,
        "pillar_dir": True,
    }
