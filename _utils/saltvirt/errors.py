"""Exceptions of the salt-virt library, and the advice given when a Python library is missing.

The Salt entry points translate these into ``CommandExecutionError`` / ``SaltInvocationError``.
"""

import sys

#: Python module -> the PyPI package that provides it, for the libraries salt-virt needs.
PACKAGES = {
    "libvirt": "libvirt-python",
    "pycdlib": "pycdlib",
    "cryptography": "cryptography",
    "yaml": "pyyaml",
    "jinja2": "jinja2",
}


def libvirt_message(exc):
    """The message of a libvirt error (or of any exception)."""
    return exc.get_error_message() if hasattr(exc, "get_error_message") else str(exc)


def install_hint(package):
    """How to install ``package`` into the Python that this process (Salt) runs on.

    Onedir Salt (3006 and later) runs its own Python, which cannot import the distribution's
    ``python3-*`` packages: there ``salt-pip`` installs into it. Elsewhere the hint names the
    interpreter Salt runs on (a virtualenv, or the system's Python).
    """
    if hasattr(sys, "RELENV"):  # onedir Salt: a relenv Python of its own
        command = f"salt-pip install {package}"
    else:
        command = f"{sys.executable or 'python3'} -m pip install {package}"
    hint = f"install it into the Python that runs Salt: {command}"
    if package == "libvirt-python":
        hint += (" (libvirt-python has no wheels: it is built on install and needs a C compiler, "
                 "pkg-config and the libvirt development headers, e.g. apt-get install gcc "
                 "pkg-config libvirt-dev)")
    return hint


def import_advice(exc):
    """What to do about ``exc``, an :class:`ImportError` met while importing the library."""
    top = (getattr(exc, "name", None) or "").split(".")[0]
    if top in PACKAGES:
        return f"{PACKAGES[top]} is missing ({exc}); {install_hint(PACKAGES[top])}"
    return (f"the salt-virt library could not be imported ({exc}); run saltutil.sync_all, or "
            "install salt-virt into the Python that runs Salt")


class VirtError(Exception):
    """A libvirt, image or host operation failed."""


class InvalidArgument(VirtError, ValueError):
    """The caller passed something that cannot work (bad name, size, profile...)."""


class AlreadyExists(InvalidArgument):
    """The file or domain to create is already there (nothing was replaced)."""


class NotFound(VirtError, LookupError):
    """A domain, image, profile or host does not exist."""


class CommandFailed(VirtError):
    """An external command exited non-zero; the message carries its stderr."""

    def __init__(self, argv, returncode, stderr):
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr
        super().__init__(
            f"{' '.join(self.argv)} exited with {returncode}: {stderr.strip() or '(no output)'}"
        )
