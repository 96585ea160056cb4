"""What every file of the virt execution module shares (saltvirt.saltglue): the load check and
library errors as Salt's."""

import importlib.util
import os

import pytest
from salt.exceptions import CommandExecutionError, SaltInvocationError

from saltvirt import saltglue
from saltvirt.errors import AlreadyExists, InvalidArgument, NotFound, VirtError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize(("error", "salt_error"), [
    (InvalidArgument("bad cpu"), SaltInvocationError), (AlreadyExists("taken"), SaltInvocationError),
    (NotFound("no vm"), SaltInvocationError), (VirtError("libvirt said no"), CommandExecutionError)])
def test_library_errors_become_salt_errors_with_their_message(error, salt_error):
    with pytest.raises(salt_error, match=str(error)) as caught, saltglue.salt_errors():
        raise error
    assert caught.value.__cause__ is error


def test_other_errors_pass_through():
    with pytest.raises(KeyError), saltglue.salt_errors():
        raise KeyError("a bug stays a bug")


def test_the_load_check_refuses_a_minion_without_libvirtd_and_accepts_a_remote_uri(monkeypatch):
    import salt.utils.path

    monkeypatch.setattr(salt.utils.path, "which", lambda name: None)
    monkeypatch.setattr(saltglue.os.path, "exists", lambda path: False)
    opts = {"id": "hv1"}
    local = saltglue.virtual("virt", lambda key, default=None: default, opts, "/x/virt.py")
    assert local[0] is False and "libvirtd is not installed on this minion" in local[1]
    remote = saltglue.virtual("virt", lambda key, default=None: "qemu+tls://hv2/system", opts, "/x/virt.py")
    assert remote == "virt"


def test_every_module_file_shares_the_virtualname_and_the_load_check():
    """The files Salt merges into ``virt``: one name, one load check."""
    for name in ("virt.py", "virt_network.py"):
        spec = importlib.util.spec_from_file_location(f"saltvirt_test_glue_{name[:-3]}",
                                                      os.path.join(REPO, "_modules", name))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        assert module.__virtualname__ == "virt" and module.HAS_SALTVIRT
        module.__salt__ = {"config.get": lambda key, default=None: "qemu+tls://hv2/system"}
        module.__opts__ = {"id": "hv1"}
        assert module.__virtual__() == "virt"
