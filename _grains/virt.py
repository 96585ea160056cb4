"""Grains of a salt-virt hypervisor.

``virt_libvirt``: the version of the libvirt library a minion can use (e.g. ``'9.0.0'``;
absent without libvirt-python), for targeting hypervisors (``salt -G 'virt_libvirt:*'``).

``virt_saltvirt``: the version of the salt-virt library the hypervisor runs (absent where
libvirt-python or the library is missing).

``virt_implementation``: only where ``saltext-virt`` is installed too (it also ships modules
named ``virt``): which of the two Salt loads as the ``virt`` execution and state modules, e.g.
``{'modules': 'salt-virt', 'states': 'salt-virt', 'saltext_virt': '0.1.0', 'message': ...}``
(see ``docs/install.rst``). saltext-virt has no grains, so this grain is there whichever
implementation is active; the minion's log says the same once at start-up.

Grains load in the minion's main process, at start-up and again after ``saltutil.sync_all``
(the module refresh). Importing libvirt-python and the salt-virt library here spares every
``virt.*`` job that import (about 0.1 s): job processes are forked from the main process. The
library is imported anew on each load, so a sync brings the new code; a job forked between a
sync and the refresh sees the files changed and imports them itself (``saltvirt.stale``).
"""

import logging
import os
import sys

try:
    import libvirt
except ImportError:
    libvirt = None

log = logging.getLogger(__name__)


def virt_libvirt():
    if libvirt is None:
        return {}
    version = libvirt.getVersion()  # major * 1,000,000 + minor * 1,000 + release
    return {"virt_libvirt": f"{version // 1000000}.{version // 1000 % 1000}.{version % 1000}"}


def _library():
    """Import the salt-virt library from where this install keeps it, or return ``None``."""
    utils = os.path.join(__opts__.get("extension_modules") or "", "utils")
    added = os.path.isdir(utils) and utils not in sys.path
    if added:
        sys.path.append(utils)  # where saltutil.sync_utils puts it; appended as Salt's loader does
    try:
        import saltvirt.coexist  # pylint: disable=import-outside-toplevel

        return saltvirt
    except ImportError:
        return None
    finally:
        if added:
            sys.path.remove(utils)


def virt_implementation():
    if __opts__.get("__role") != "minion":
        return {}
    lib = _library()
    if lib is None:
        return {}
    try:
        found = lib.coexist.warn_once(__opts__, ("modules", "states"), "grains")
    except Exception as exc:  # pylint: disable=broad-except
        log.warning("virt grains: could not tell which virt implementation is active: %s", exc)
        return {}
    if found is None:
        return {}  # saltext-virt is not installed: nothing to choose between
    grain = {kind: info["implementation"] for kind, info in found["active"].items()}
    grain.update(saltext_virt=found["saltext_virt"]["version"], message=found["message"])
    return {"virt_implementation": grain}


def virt_saltvirt():
    if libvirt is None or __opts__.get("__role") != "minion":
        return {}  # not a hypervisor (or the master's own grains): nothing to preload
    utils = os.path.join(__opts__.get("extension_modules") or "", "utils")
    added = os.path.isdir(utils) and utils not in sys.path
    if added:
        sys.path.append(utils)  # where saltutil.sync_utils puts it; appended as Salt's loader does
    try:
        if hasattr(sys.modules.get("saltvirt"), "unload"):
            sys.modules["saltvirt"].unload()  # the copy of the previous load: read the files anew
        import saltvirt  # pylint: disable=import-outside-toplevel

        saltvirt.preload()
        return {"virt_saltvirt": saltvirt.__version__}
    except Exception as exc:  # pylint: disable=broad-except
        # A grain must never stop the minion; jobs then import the library themselves.
        log.warning("virt grains: could not preload the salt-virt library: %s", exc)
        return {}
    finally:
        if added:
            sys.path.remove(utils)
