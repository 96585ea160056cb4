"""The one way salt-virt opens a libvirt connection."""

import contextlib

from saltvirt.errors import NotFound, VirtError, install_hint, libvirt_message

try:
    import libvirt
except ImportError:  # reported by the Salt modules' __virtual__
    libvirt = None

DEFAULT_URI = "qemu:///system"

if libvirt is not None:
    # libvirt prints every error to stderr by default; we raise them as exceptions instead.
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


def connect(uri=None, username=None, password=None):
    """Open a libvirt connection; ``username``/``password`` answer SASL/ssh authentication prompts."""
    if libvirt is None:
        raise VirtError(f"libvirt-python is not installed; {install_hint('libvirt-python')}")
    uri = uri or DEFAULT_URI
    try:
        if username is None and password is None:
            return libvirt.open(uri)

        def _answer(creds, _data):
            for cred in creds:
                if cred[0] == libvirt.VIR_CRED_AUTHNAME:
                    cred[4] = username
                elif cred[0] == libvirt.VIR_CRED_PASSPHRASE:
                    cred[4] = password
            return 0

        auth = [[libvirt.VIR_CRED_AUTHNAME, libvirt.VIR_CRED_PASSPHRASE], _answer, None]
        return libvirt.openAuth(uri, auth, 0)
    except libvirt.libvirtError as exc:
        raise VirtError(f"cannot connect to libvirt at {uri}: {exc.get_error_message()}") from exc


@contextlib.contextmanager
def opened(uri=None, username=None, password=None):
    """Context manager around :func:`connect` that always closes the connection."""
    conn = connect(uri, username, password)
    try:
        yield conn
    finally:
        with contextlib.suppress(Exception):
            conn.close()


@contextlib.contextmanager
def libvirt_errors(what):
    """libvirt's errors inside the block become :class:`VirtError` ``"<what>: <libvirt's message>"``."""
    try:
        yield
    except libvirt.libvirtError as exc:
        raise VirtError(f"{what}: {libvirt_message(exc)}") from exc


def act(what, call, *args):
    """``call(*args)`` (a libvirt object's method: ``net.create``, ``pool.destroy``...), libvirt's
    errors a :class:`VirtError` about ``what``; True, the classic answer of such an action."""
    with libvirt_errors(what):
        call(*args)
    return True


def lookup(find, name, missing_code, missing, what):
    """``find(name)`` (a libvirt lookup); libvirt's "no such object" (``missing_code``) becomes
    :class:`NotFound` with the ``missing`` message, any other error a :class:`VirtError` about
    ``what``."""
    try:
        return find(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == missing_code:
            raise NotFound(missing) from None
        raise VirtError(f"{what}: {libvirt_message(exc)}") from exc


def inactive_xml(obj, flag):
    """The persistent definition's XML of a network or pool (``XMLDesc(flag)``), or its one
    definition where the driver has no such flag (libvirt's test driver)."""
    try:
        return obj.XMLDesc(flag)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() not in (libvirt.VIR_ERR_INVALID_ARG, libvirt.VIR_ERR_NO_SUPPORT):
            raise
        return obj.XMLDesc(0)
