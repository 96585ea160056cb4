"""salt-virt and saltext-virt side by side: which ``virt`` module does Salt use?

``saltext-virt`` (the Salt extension that carries Salt's classic ``virt`` modules) and this
bundle both ship an execution module, a runner and a state module in files named ``virt.py``.
Salt's loader keys modules by file name and takes, for each name, the file in the first
directory of its search path that has one; the other file is never imported, so its
``__virtual__`` never runs. The search path is, in this order:

1. ``module_dirs`` (``salt-call -m DIR``);
2. ``extension_modules``: what ``saltutil.sync_*`` copied from the file server (file_roots'
   ``_modules``, ``_runners``, ``_states``...);
3. the ``<kind>_dirs`` options (``runner_dirs``, ``states_dirs``...);
4. the packages registered under the ``salt.loader`` entry point (pip/``salt-pip``
   installs), in the order Python lists the installed distributions: not a documented one;
5. Salt's own modules.

``disable_modules: [virt]`` (and ``disable_runners``, ``disable_states``) match the file
name too, so they turn both implementations off, not one of them.

This module answers "which file is that?" with Salt's own code (the directory list of
:func:`salt.loader._module_dirs` and the file mapping of a
:class:`salt.loader.lazy.LazyLoader`, which imports nothing), and says how to choose.
"""

import importlib.metadata
import importlib.util
import logging
import os

log = logging.getLogger(__name__)

SALT_VIRT = "salt-virt"
SALTEXT_VIRT = "saltext-virt"

#: Loader kind -> (``ext_type``, ``tag``, extra arguments) as ``salt.loader`` builds that loader.
KINDS = {
    "modules": ("modules", "module", {}),
    "states": ("states", "states", {}),
    "runners": ("runners", "runner", {"ext_type_dirs": "runner_dirs"}),
}

#: What each kind is called in messages.
KIND_NAMES = {"modules": "execution module", "states": "state module", "runners": "runner"}

# Callers that already logged the coexistence warning in this process or the one it was forked
# from (the minion's jobs are): one line per minion or master start, not one per job.
_WARNED = set()


def saltext_virt():
    """``{'version': ..., 'path': ...}`` of the installed saltext-virt, or ``None``.

    ``path`` is the directory of the ``saltext.virt`` package.
    """
    try:
        spec = importlib.util.find_spec("saltext.virt")
    except (ImportError, ValueError):  # no ``saltext`` namespace at all
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.realpath(list(spec.submodule_search_locations)[0])
    try:
        version = importlib.metadata.version("saltext.virt")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return {"version": version, "path": path}


def salt_virt():
    """``{'version': ..., 'path': ...}`` of this library (where it was imported from)."""
    import saltvirt

    return {"version": saltvirt.__version__, "path": os.path.dirname(os.path.realpath(saltvirt.__file__))}


def owner(path, saltext_path=None):
    """Which implementation the module file ``path`` belongs to.

    ``saltext-virt`` for a file inside the saltext.virt package (``saltext_path``), ``salt-virt``
    for one of this bundle's files (they import the ``saltvirt`` library, saltext-virt's never
    do), ``None`` for no file, ``other`` for anything else (a site's own ``virt`` module).
    """
    if not path:
        return None
    real = os.path.realpath(path)
    if saltext_path and real.startswith(os.path.realpath(saltext_path) + os.sep):
        return SALTEXT_VIRT
    try:
        with open(real, "rb") as fh:
            text = fh.read(65536)
    except OSError:
        return "other"
    if b"from saltvirt" in text or b"import saltvirt" in text:
        return SALT_VIRT
    return "other"


def active_file(opts, kind):
    """The file Salt's loader would load as ``virt`` for ``kind`` (see :data:`KINDS`), or ``None``.

    ``None`` also when ``disable_<kind>`` lists ``virt``.
    """
    import salt.loader
    import salt.loader.lazy

    ext_type, tag, extra = KINDS[kind]
    dirs = salt.loader._module_dirs(opts, ext_type, tag, **extra)
    loader = salt.loader.lazy.LazyLoader(dirs, opts, tag=tag)
    entry = loader.file_mapping.get("virt")
    return entry[0] if entry else None


def report(opts, kinds):
    """Which implementation of ``virt`` is active for each of ``kinds``, and what else is installed.

    Returns ``{'salt_virt': {...}, 'saltext_virt': {...} or None, 'active': {kind: {'implementation':
    ..., 'path': ...}}, 'conflict': bool, 'message': str}``. ``conflict`` is True when saltext-virt
    is installed next to this bundle: then exactly one of them serves each kind, and ``message``
    says which and how to choose.
    """
    ext = saltext_virt()
    active = {}
    for kind in kinds:
        try:
            path = active_file(opts, kind)
        except Exception as exc:  # a report must not fail its caller
            log.debug("virt: could not resolve the %s search path: %s", kind, exc)
            path = None
        active[kind] = {"implementation": owner(path, ext and ext["path"]), "path": path}
    return {
        "salt_virt": salt_virt(),
        "saltext_virt": ext,
        "active": active,
        "conflict": ext is not None,
        "message": message(ext, active),
    }


def message(ext, active):
    """The sentence :func:`report` returns: what is active, what is shadowed, how to choose."""
    if ext is None:
        return "saltext-virt is not installed: salt-virt is the only virt implementation here"
    parts = []
    for kind, info in active.items():
        impl = info["implementation"] or "none (disabled or missing)"
        parts.append(f"{KIND_NAMES[kind]}: {impl}")
    winners = {info["implementation"] for info in active.values()}
    text = (f"saltext-virt {ext['version']} ({ext['path']}) is installed next to salt-virt; both "
            f"provide modules named virt and Salt loads one file per name, so the active virt "
            f"implementation is: {', '.join(parts)}.")
    if len(winners) > 1:
        text += " The implementations are MIXED: their functions and arguments differ."
    return text + " " + CHOOSE


#: How to choose, in one sentence (docs/install.rst says it at length).
CHOOSE = ("To choose salt-virt, sync it from file_roots (saltutil.sync_all: synced modules come "
          "before pip-installed ones) or uninstall saltext-virt (salt-pip uninstall saltext.virt); "
          "to choose saltext-virt, remove salt-virt (salt-pip uninstall salt-virt, and drop its "
          "_modules/_states/_runners virt.py from file_roots, then saltutil.sync_all). "
          "disable_modules: [virt] turns both off.")


def warn_once(opts, kinds, where):
    """Log the coexistence :func:`message` once when saltext-virt is installed too.

    ``where`` names the caller (``execution module``, ``runner``...). Returns the report, or
    ``None`` when saltext-virt is not installed (nothing is logged then).
    """
    if saltext_virt() is None:
        return None
    result = report(opts, kinds)
    if where not in _WARNED:
        _WARNED.add(where)
        log.warning("virt %s: %s", where, result["message"])
    return result
