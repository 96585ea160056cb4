"""Sphinx configuration of the salt-virt documentation (``make docs``)."""

import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(HERE, "_ext"))


def _version():
    """``saltvirt.__version__``, read from the file: importing the package is not needed here."""
    with open(os.path.join(ROOT, "_utils", "saltvirt", "__init__.py"), encoding="utf-8") as fh:
        match = re.search(r'^__version__\s*=\s*["\']([^"\']+)["\']', fh.read(), re.MULTILINE)
    if not match:
        raise RuntimeError("no __version__ in _utils/saltvirt/__init__.py")
    return match.group(1)


project = "salt-virt"
author = "salt-virt contributors"
copyright = "salt-virt contributors"
release = _version()
version = ".".join(release.split(".")[:2])

extensions = ["saltvirt_ref"]
# Where the reference directives find the Salt entry points (_modules, _runners, ...).
saltvirt_root = ROOT

root_doc = "index"
exclude_patterns = ["_build"]
templates_path = []
html_static_path = []
html_theme = "alabaster"
html_theme_options = {"page_width": "1100px", "sidebar_width": "220px"}
html_title = f"salt-virt {release}"
pygments_style = "sphinx"
