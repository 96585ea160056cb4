"""Exceptions of the salt-virt library.

The Salt entry points translate these into ``CommandExecutionError`` / ``SaltInvocationError``.
"""


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
