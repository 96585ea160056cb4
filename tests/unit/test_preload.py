"""saltvirt.preload / stale / unload_if_stale, in a fresh interpreter on a copy of the library."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

LIBRARY = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                       "_utils", "saltvirt")

SCRIPT = textwrap.dedent("""
    import os, sys, json
    sys.path.insert(0, sys.argv[1])
    import saltvirt
    loaded = saltvirt.preload()
    out = {"loaded": loaded, "stale_before": saltvirt.stale(),
           "unloaded_fresh": saltvirt.unload_if_stale()}
    units = os.path.join(sys.argv[1], "saltvirt", "units.py")
    with open(units, "a") as f:
        f.write("\\nPRELOAD_TEST_MARK = 'new'\\n")
    st = os.stat(units)
    os.utime(units, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    import saltvirt.units
    out["old_has_mark"] = hasattr(saltvirt.units, "PRELOAD_TEST_MARK")
    out["stale_after"] = saltvirt.stale()
    out["unloaded"] = saltvirt.unload_if_stale()
    out["left"] = sorted(n for n in sys.modules if n.startswith("saltvirt"))
    import saltvirt.units
    out["new_has_mark"] = getattr(saltvirt.units, "PRELOAD_TEST_MARK", None)
    print(json.dumps(out))
""")


def test_preload_then_stale_after_change(tmp_path):
    shutil.copytree(LIBRARY, tmp_path / "saltvirt", ignore=shutil.ignore_patterns("__pycache__"))
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True,
                          check=True)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {"saltvirt", "saltvirt.migration", "saltvirt.domain.vmops", "saltvirt.units"} <= set(out["loaded"])
    assert not any(name.startswith("saltvirt.ext") for name in out["loaded"])
    assert out["stale_before"] is False and out["unloaded_fresh"] is False
    assert out["old_has_mark"] is False
    assert out["stale_after"] is True and out["unloaded"] is True
    assert out["left"] == []
    assert out["new_has_mark"] == "new"


def test_removed_file_is_stale(tmp_path):
    shutil.copytree(LIBRARY, tmp_path / "saltvirt", ignore=shutil.ignore_patterns("__pycache__"))
    code = ("import sys, os; sys.path.insert(0, sys.argv[1]); import saltvirt; saltvirt.preload(); "
            "os.unlink(os.path.join(sys.argv[1], 'saltvirt', 'cmd.py')); print(saltvirt.stale())")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "True"


def test_every_library_package_is_in_the_wheel():
    """setup.cfg lists packages one by one: a new package directory must be listed too."""
    import configparser

    config = configparser.ConfigParser()
    config.read(os.path.join(os.path.dirname(os.path.dirname(LIBRARY)), "setup.cfg"))
    listed = set(config["options"]["packages"].split())
    found = {"saltvirt"} | {
        "saltvirt." + os.path.relpath(root, LIBRARY).replace(os.sep, ".")
        for root, _dirs, files in os.walk(LIBRARY) if "__init__.py" in files and root != LIBRARY
    }
    assert found <= listed, sorted(found - listed)
