"""The execution module as glue, through Salt's loader mock: arguments become one VM spec and
one library call, library errors become Salt's, unknown arguments are refused by name."""

import contextlib
import importlib.util
import os

import pytest
from salt.exceptions import CommandExecutionError, SaltInvocationError

from saltvirt.errors import InvalidArgument, VirtError
from saltvirt.provision.spec import UpdateSpec, VmSpec

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _load():
    path = os.path.join(REPO, "_modules", "virt.py")
    spec = importlib.util.spec_from_file_location("saltvirt_test_module_glue", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


virt = _load()


@pytest.fixture
def configure_loader_modules(tmp_path):
    config = {"virt:images": str(tmp_path / "images")}
    return {virt: {
        "__salt__": {"config.get": lambda key, default=None: config.get(key, default)},
        "__opts__": {"id": "hypervisor1", "cachedir": str(tmp_path / "cache"), "master": "salt"},
        "__grains__": {},
        "__context__": {},
    }}


@pytest.fixture
def library(monkeypatch):
    """The library calls the module makes, recorded (no libvirt)."""
    calls = []

    @contextlib.contextmanager
    def opened(kwargs):
        calls.append(("connect", dict(kwargs)))
        yield "conn"

    monkeypatch.setattr(virt, "_connection", opened)
    return calls


def test_init_is_one_spec_and_one_library_call(library, monkeypatch):
    made = []
    fired = []
    monkeypatch.setitem(virt.__salt__, "event.fire_master", lambda data, tag: fired.append((tag, data)))

    def create_vm(conn, spec, settings, progress):
        made.append((conn, spec, settings.minion_id))
        progress({"step": "copy", "percent": 50.0})
        return {"name": spec.name}

    monkeypatch.setattr(virt.provision_vm, "create_vm", create_vm)
    ret = virt.init("web1", 2, 512, image="salt://c.qcow2", enable_qcow=True, vm_type="qemu",
                    disk_profile="small", connection="qemu:///system", __pub_jid="123", progress_tag="t/1/progress")
    assert ret == {"name": "web1"}
    # Progress goes to the master's bus under the caller's tag, with the VM and the host named.
    assert fired == [("t/1/progress", {"step": "copy", "percent": 50.0, "host": "hypervisor1", "name": "web1"})]
    (conn, spec, host), = made
    assert conn == "conn" and host == "hypervisor1" and isinstance(spec, VmSpec)
    assert (spec.name, spec.cpu, spec.mem, spec.image, spec.enable_qcow) == ("web1", 2, 512, "salt://c.qcow2", True)
    assert spec.hypervisor == "qemu" and spec.disk == "small"  # classic names mapped
    assert library == [("connect", {"connection": "qemu:///system"})]


def test_init_refuses_unknown_arguments_by_name_before_connecting(library, monkeypatch):
    monkeypatch.setattr(virt.provision_vm, "create_vm", lambda *a: pytest.fail("must not be called"))
    unknown = r"virt.init: unknown argument\(s\) enable_qcw \(did you mean enable_qcow\?\)"
    with pytest.raises(SaltInvocationError, match=unknown):
        virt.init("web1", 1, 128, enable_qcw=True)
    with pytest.raises(SaltInvocationError, match="disk_profile and disk both given"):
        virt.init("web1", 1, 128, disk="a", disk_profile="b")
    assert library == []


@pytest.mark.parametrize(("error", "salt_error"), [
    (InvalidArgument("image /etc/shadow is outside the image roots"), SaltInvocationError),
    (VirtError("libvirt said no"), CommandExecutionError),
])
def test_library_errors_become_salt_errors(library, monkeypatch, error, salt_error):
    def fail(*_args, **_kwargs):
        raise error

    monkeypatch.setattr(virt.provision_vm, "create_vm", fail)
    with pytest.raises(salt_error, match=str(error)):
        virt.init("web1", 1, 128)


def test_update_passes_an_update_spec(library, monkeypatch):
    seen = []
    monkeypatch.setattr(virt.provision_change, "update_vm",
                        lambda conn, spec, settings: seen.append(spec) or ([], None))
    ret = virt.update("web1", mem=1024, test=True)
    assert isinstance(seen[0], UpdateSpec) and seen[0].mem == 1024 and seen[0].test is True
    assert ret["comment"] == "web1 is up to date" and ret["changes"] == {}
    with pytest.raises(SaltInvocationError, match=r"virt.update: unknown argument\(s\) memory"):
        virt.update("web1", memory=1024)


def test_lifecycle_calls_go_to_the_library_with_settings(library, monkeypatch, tmp_path):
    seen = []
    monkeypatch.setattr(virt.lifecycle, "purge", lambda conn, name, settings: seen.append(
        (name, settings.vm_dir(name))) or {"name": name, "purged": True})
    assert virt.purge("web1") == {"name": "web1", "purged": True}
    assert seen == [("web1", str(tmp_path / "images" / "web1"))]


def test_relative_images_dir_is_refused_clearly(configure_loader_modules):
    virt.__salt__["config.get"] = lambda key, default=None: "images" if key == "virt:images" else default
    with pytest.raises(SaltInvocationError, match="images"):
        virt._images_dir()


@pytest.mark.parametrize(("function", "args", "target", "answer"), [
    ("vm_diskstats", ("vm1",), (virt.stats, "per_domain"), {"vm1": {}}),
    ("vm_netstats", (), (virt.stats, "per_domain"), {}),
    ("domain_capabilities", (), (virt.hostcaps, "domain_capabilities"), {"domain": "kvm"}),
    ("all_capabilities", (), (virt.hostcaps, "all_capabilities"), {"host": {}, "domains": []}),
    ("node_devices", (), (virt.hostdevices, "node_devices"), []),
])
def test_classic_host_functions_pass_the_connection_arguments(library, monkeypatch, function, args, target,
                                                              answer):
    seen = []
    monkeypatch.setattr(*target, lambda conn, *a, **kw: seen.append(conn) or answer)
    kwargs = {"connection": "qemu+ssh://h2/system", "username": "u", "password": "p"}
    assert getattr(virt, function)(*args, **kwargs) == answer
    assert library == [("connect", kwargs)] and seen == ["conn"]


def test_classic_functions_map_library_errors(library, monkeypatch):
    def missing(conn, name):
        raise virt.NotFound(f"no domain named {name!r} on this host")

    monkeypatch.setattr(virt.vmops, "lookup", missing)
    with pytest.raises(SaltInvocationError, match="'vm9'"):
        virt.ctrl_alt_del("vm9")
    monkeypatch.setattr(virt.hostcaps, "cpu_baseline", lambda *a: (_ for _ in ()).throw(VirtError("broken")))
    with pytest.raises(CommandExecutionError, match="broken"):
        virt.cpu_baseline()


def test_classic_first_argument_keyword_and_unknown_arguments(library, monkeypatch):
    module = virt
    seen = []
    monkeypatch.setattr(module, "_domain_call", lambda name, action, kwargs, **extra: seen.append(
        (name, action, kwargs, extra)) or True)
    assert module.pause(vm_="web1") == {"name": "web1", "paused": True}
    assert module.setmem(vm_="web1", memory=512, config=True, connection="qemu:///system")["set"] is True
    assert seen[-1] == ("web1", "setmem", {"connection": "qemu:///system"}, {"memory_mib": 512})
    assert module.purge.__wrapped__.__name__ == "purge"  # Salt reads the real signature
    with pytest.raises(SaltInvocationError, match=r"virt.pause: unknown argument\(s\) vm \(did you mean vm_\?\)"):
        module.pause("web1", vm="web1")
    with pytest.raises(SaltInvocationError, match="given twice"):
        module.reset("web1", vm_="web2")
    assert module.pause("web1", __pub_fun="virt.pause")["paused"] is True  # Salt's own keywords pass
