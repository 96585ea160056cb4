"""The VM states as glue over the execution module (``__salt__`` recorded): the classic
argument names reach ``virt.init`` as the profiles, and secrets never reach ``changes``."""

import importlib.util
import os

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def state_module(init_return):
    spec = importlib.util.spec_from_file_location("saltvirt_test_state_glue", os.path.join(REPO, "_states", "virt.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    calls = []

    def init(name, cpu, mem, **kwargs):
        calls.append(("virt.init", name, cpu, mem, kwargs))
        return dict(init_return, host="hypervisor1")

    module.__opts__ = {"test": False}
    module.__salt__ = {"virt.list_domains": lambda **kw: [], "virt.init": init}
    return module, calls


def test_classic_disk_profile_and_nic_profile_are_the_profiles():
    module, calls = state_module({"graphics": []})
    ret = module.defined("web1", cpu=1, mem=512, image="salt://centos.qcow2", disk_profile="small",
                         nic_profile="dual", vm_type="qemu")
    assert ret["result"] is True and ret["changes"] == {"definition": True}, ret
    (_, name, cpu, mem, kwargs), = calls
    assert (name, cpu, mem) == ("web1", 1, 512)
    assert kwargs["disk"] == "small" and kwargs["nic"] == "dual" and kwargs["hypervisor"] == "qemu"
    assert "disk_profile" not in kwargs and "nic_profile" not in kwargs


def test_a_console_password_shows_as_set_only():
    module, _calls = state_module({"graphics": [{"type": "vnc", "password_set": True}]})
    ret = module.running("web1", cpu=1, mem=512, image="salt://centos.qcow2", enable_vnc=True)
    assert ret["changes"]["vnc_password"] == "set (not shown)"
    module, _calls = state_module({"graphics": [{"type": "vnc", "password_set": False}]})
    ret = module.running("web1", cpu=1, mem=512, image="salt://centos.qcow2", enable_vnc=True)
    assert "vnc_password" not in ret["changes"]


def test_unknown_arguments_are_refused_by_name_even_with_test_true():
    module, calls = state_module({"graphics": []})
    module.__opts__["test"] = True
    ret = module.defined("web1", cpu=1, mem=512, image="salt://centos.qcow2", disk_profil="small")
    assert ret["result"] is False and "unknown argument(s) disk_profil (did you mean disk_profile?)" in ret["comment"]
    assert ret["changes"] == {} and calls == []
    ret = module.defined("web1", cpu=1, mem=512, image="salt://centos.qcow2", disk_profile="small")
    assert ret["result"] is None and ret["changes"] == {"definition": True}  # the legitimate path
