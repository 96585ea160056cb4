"""salt-virt domain library: the logic behind the ``virt`` Salt module, runner, states and pillar.

Everything here is plain Python, importable and testable without a running Salt master or minion.
The Salt entry points under ``_modules``, ``_runners``, ``_states``, ``_pillar`` and ``_output`` are
thin glue over these modules.
"""

import importlib
import importlib.util
import os
import pkgutil
import sys

__version__ = "0.1.0"

#: ``{module name: (file, mtime_ns)}`` of the modules :func:`preload` imported.
PRELOADED = {}


def preload():
    """Import every module of the library now and remember each file's modification time.

    The minion's main process calls this (see ``_grains/virt.py``): ``virt.*`` jobs are forked
    from it and then start with the library already imported, instead of importing it anew in
    every job (about 0.1 s each). :func:`stale` tells a job when ``saltutil.sync_all`` has
    replaced the files since.
    """
    _import_tree(__path__, __name__)
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if path and (name == __name__ or name.startswith(__name__ + ".")):
            PRELOADED[name] = (path, os.stat(path).st_mtime_ns)
    return sorted(PRELOADED)


def _import_tree(path, prefix):
    for info in pkgutil.iter_modules(path):
        name = f"{prefix}.{info.name}"
        if name == f"{__name__}.ext":  # the Salt entry points: Salt's loader reads those
            continue
        module = importlib.import_module(name)
        if info.ispkg:
            _import_tree(module.__path__, name)


def stale():
    """True when a file :func:`preload` imported has been changed or removed since."""
    for path, mtime in PRELOADED.values():
        try:
            if os.stat(path).st_mtime_ns != mtime:
                return True
        except OSError:
            return True
    return False


def missing_now_importable():
    """True when libvirt-python was missing as the library was imported and can be imported now.

    The hypervisor formula (``virt/python.sls``) installs it into the running minion's Python and
    asks for a module refresh: the library imported before (with ``connection.libvirt`` unset)
    must then be read anew, or ``virt.*`` would stay unavailable until the minion restarts.
    """
    conn = sys.modules.get(f"{__name__}.connection")
    if conn is None or getattr(conn, "libvirt", True) is not None:
        return False
    importlib.invalidate_caches()
    return importlib.util.find_spec("libvirt") is not None


def unload():
    """Forget the imported library, so that the next import reads the files again."""
    for name in [n for n in sys.modules if n == __name__ or n.startswith(__name__ + ".")]:
        del sys.modules[name]


def unload_if_stale():
    """Called by the Salt modules before they import the library: see :func:`preload`."""
    if stale() or missing_now_importable():
        unload()
        return True
    return False
