"""The advice given when a Python library salt-virt needs is missing: install it into Salt's Python."""

import sys

from saltvirt import errors


def test_hint_names_the_python_salt_runs_on(monkeypatch):
    monkeypatch.delattr(sys, "RELENV", raising=False)
    monkeypatch.setattr(sys, "executable", "/opt/venv/bin/python3")
    hint = errors.install_hint("pycdlib")
    assert "/opt/venv/bin/python3 -m pip install pycdlib" in hint
    assert "salt-pip" not in hint


def test_hint_on_onedir_salt_is_salt_pip(monkeypatch):
    monkeypatch.setattr(sys, "RELENV", "/opt/saltstack/salt", raising=False)
    hint = errors.install_hint("libvirt-python")
    assert "salt-pip install libvirt-python" in hint
    assert "libvirt-dev" in hint and "pkg-config" in hint  # it is built on install


def test_import_advice_maps_modules_to_packages(monkeypatch):
    monkeypatch.setattr(sys, "RELENV", "/opt/saltstack/salt", raising=False)
    advice = errors.import_advice(ImportError("No module named 'libvirt'", name="libvirt"))
    assert advice.startswith("libvirt-python is missing") and "salt-pip install libvirt-python" in advice
    assert "salt-pip install pyyaml" in errors.import_advice(ModuleNotFoundError("x", name="yaml"))
    missing = "saltvirt.storage.bases"
    unsynced = errors.import_advice(ModuleNotFoundError(f"No module named {missing!r}", name=missing))
    assert "saltutil.sync_all" in unsynced and "pip install" not in unsynced
