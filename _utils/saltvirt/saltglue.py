"""What the execution module's files share: the load check and library errors as Salt's.

The ``virt`` execution module is several files with one ``__virtualname__`` (``_modules/virt.py``
for domains, ``virt_network.py``, ``virt_storage.py``): Salt's loader merges their functions under
``virt.``. Each file's ``__virtual__`` and error handling come from here, so they cannot drift.
"""

import contextlib
import difflib
import functools
import importlib.util
import inspect
import os

from . import coexist
from . import connection as virtconn
from . import errors as verrors
from .errors import InvalidArgument, NotFound, VirtError


def saltext_note(module_file):
    """Added to a refusal when saltext-virt is installed: its ``virt`` is shadowed by this bundle."""
    try:
        found = importlib.util.find_spec("saltext.virt") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        return ""
    return (f"; saltext-virt is installed too, but Salt loads this file ({module_file}) as the virt "
            "module, not saltext-virt's: install what is missing above, or remove salt-virt to use "
            "saltext-virt (docs/install.rst, Coexistence)")


def virtual(name, config_get, opts, module_file):
    """The execution module's ``__virtual__`` answer: ``name``, or ``(False, reason)``."""
    if virtconn.libvirt is None:
        return False, (f"virt: libvirt-python is not installed; {verrors.install_hint('libvirt-python')}"
                       + saltext_note(module_file))
    import salt.utils.path  # noqa: PLC0415 - Salt's which also searches the sbin directories

    uri = config_get("virt:connection:uri", "") or ""
    local = not uri or uri.startswith(("qemu:///", "qemu+unix"))
    if local and not salt.utils.path.which("libvirtd") and not os.path.exists("/run/libvirt/libvirt-sock"):
        return False, "virt: libvirtd is not installed on this minion (install libvirt-daemon)" + saltext_note(
            module_file)
    coexist.warn_once(opts, ("modules", "states"), "execution module")
    return name


def salt_error(exc):
    """The Salt exception for library error ``exc``: bad input -> SaltInvocationError."""
    from salt.exceptions import CommandExecutionError, SaltInvocationError  # noqa: PLC0415

    if isinstance(exc, (InvalidArgument, NotFound)):
        return SaltInvocationError(str(exc))
    return CommandExecutionError(str(exc))


@contextlib.contextmanager
def salt_errors():
    """Library errors become Salt's (the CLI exits non-zero with the message)."""
    try:
        yield
    except VirtError as exc:
        raise salt_error(exc) from exc


CONNECTION_ARGS = ("connection", "username", "password")


def classic_args(alias, strict=True):
    """Decorate an execution module function whose first argument is the domain: accept it
    under its other name too (``alias``: the classic ``vm_`` where this module says ``name``,
    or ``name`` where it says ``vm_``), and (``strict``) refuse unknown keyword arguments by
    name (Salt's ``__pub_*`` and the connection arguments are known)."""

    def decorate(func):
        params = inspect.signature(func).parameters
        first = next(iter(params))
        known = {p.name for p in params.values() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        known |= set(CONNECTION_ARGS)

        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            if alias in kwargs:
                if args or first in kwargs:
                    raise salt_error(InvalidArgument(
                        f"virt.{func.__name__}: the domain is given twice ({first} and {alias})"))
                args = (kwargs.pop(alias),)
            unknown = [k for k in kwargs if k not in known and not k.startswith("__")] if strict else []
            if unknown:
                raise salt_error(InvalidArgument(_unknown(f"virt.{func.__name__}", unknown, known | {alias})))
            return func(*args, **kwargs)

        return wrapper

    return decorate


def refuse_unknown(function, kwargs, extra=()):
    """Raise :class:`InvalidArgument` for keyword arguments other than the connection ones,
    ``extra`` and Salt's ``__pub_*``."""
    known = set(CONNECTION_ARGS) | set(extra)
    unknown = [k for k in kwargs if k not in known and not k.startswith("__")]
    if unknown:
        raise InvalidArgument(_unknown(function, unknown, known))


def _unknown(function, unknown, known):
    hints = []
    for key in sorted(unknown):
        close = difflib.get_close_matches(key, sorted(known), n=1)
        hints.append(f"{key} (did you mean {close[0]}?)" if close else key)
    return f"{function}: unknown argument(s) {', '.join(hints)} (accepted: {', '.join(sorted(known))})"
