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


def snapshot_module(test=False):
    """The state module over a fake hypervisor: web1 (running, snapshots s1 < s2) and web2."""
    module, _calls = state_module({})
    calls = []
    snaps = {"web1": ["s1", "s2"], "web2": []}

    def revert(domain, vm_snapshot=None, cleanup=False, test=False, **_conn):
        calls.append(("revert", domain, vm_snapshot, cleanup, test))
        if not snaps[domain]:
            from salt.exceptions import SaltInvocationError  # noqa: PLC0415
            raise SaltInvocationError(f"{domain} has no snapshot to revert to")
        return {"reverted": vm_snapshot or "s1", "deleted": ["s2"] if cleanup else "N/A"}

    def snapshot(domain, name=None, **_conn):
        calls.append(("snapshot", domain, name))
        snaps[domain].append(name)
        return {"name": domain, "snapshot": name}

    module.__opts__ = {"test": test}
    module.__salt__ = {
        "virt.list_domains": lambda **kw: sorted(snaps),
        "virt.vm_state": lambda *a, **kw: {"web1": "running", "web2": "shutoff"},
        "virt.list_snapshots": lambda domain, **kw: {domain: list(snaps[domain])},
        "virt.snapshot": snapshot,
        "virt.revert_snapshot": revert,
        "virt.force_off": lambda domain, **kw: calls.append(("force_off", domain)) or {"destroyed": True},
    }
    return module, calls


def test_saved_takes_the_suffixed_snapshot_once():
    module, calls = snapshot_module(test=True)
    ret = module.saved("web*", suffix="periodic")
    assert ret["result"] is None and calls == []
    assert ret["changes"] == {"saved": [{"domain": "web1"}, {"domain": "web2"}]}
    module.__opts__["test"] = False
    ret = module.saved("web*", suffix="periodic")
    assert ret["result"] is True and ret["comment"].startswith("Snapshots has been taken")
    assert ret["changes"] == {"saved": [{"domain": "web1", "snapshot": "web1-periodic"},
                                        {"domain": "web2", "snapshot": "web2-periodic"}]}
    assert module.saved("web*", suffix="periodic")["changes"] == {}


def test_unpowered_pulls_the_plug_of_running_vms_only():
    module, calls = snapshot_module()
    ret = module.unpowered("web*")
    assert ret["result"] is True and ret["changes"] == {"unpowered": [{"domain": "web1", "stop": True}]}
    assert calls == [("force_off", "web1")]


def test_reverted_predicts_reverts_and_reports_like_the_classic_state():
    module, calls = snapshot_module(test=True)
    ret = module.reverted("web1", snapshot="s1", cleanup=True)
    assert ret["result"] is None and ret["changes"] == {"domain": "web1", "current": "s1", "deleted": ["s2"]}
    assert calls == [("revert", "web1", "s1", True, True)] and "would be reverted" in ret["comment"]
    module.__opts__["test"] = False
    calls.clear()
    ret = module.reverted("web1", snapshot="s1")
    assert ret["result"] is True and ret["changes"] == {"domain": "web1", "current": "s1", "deleted": "N/A"}
    assert calls == [("revert", "web1", "s1", False, False)]
    # Several VMs: one reverted, one without snapshots ignored.
    ret = module.reverted("web*")
    assert ret["result"] is True
    assert ret["changes"] == {"reverted": [{"domain": "web1", "current": "s1", "deleted": "N/A"}],
                              "ignored": [{"domain": "web2", "issue": "web2 has no snapshot to revert to"}]}
    assert module.reverted("db*") == {"name": "db*", "changes": {}, "result": False,
                                      "comment": 'No domains found for criteria "db*"'}
    ret = module.reverted("web1", snapshot="s1", clenaup=True)
    assert ret["result"] is False and "unknown argument(s) clenaup" in ret["comment"]
