"""The classic SLS examples (tests/data/classic_sls, Salt 3001-3007's ``virt`` state docs).

Every file renders and names the classic state it comes from. The examples the lab cannot
run (``not_on_lab/``: host hardware or servers the lab does not have) are not dropped: each goes
through its state with ``test=True`` on a hypervisor where nothing exists yet, which runs the
state's argument validation, and each one salt-virt refuses by design is refused with the
documented reason, next to the same example without what is refused being accepted. The
examples the lab runs pass the same check (tests/integration/test_classic_sls.py applies them).
"""

import copy
import glob
import importlib.util
import os

import pytest
import salt.utils.yaml

from saltvirt.errors import InvalidArgument
from saltvirt.storage import poolxml, volumes

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = os.path.join(REPO, "tests", "data", "classic_sls")
APPLIED = sorted(glob.glob(os.path.join(DATA, "*.sls")))
NOT_ON_LAB = sorted(glob.glob(os.path.join(DATA, "not_on_lab", "*.sls")))
#: The states the check runs with test=True on an empty hypervisor (the others act on
#: existing VMs / pools: the lab test makes those).
CHECKED = ("defined", "running", "network_defined", "network_running", "pool_defined", "pool_running",
           "volume_defined")
#: Examples of those states that change an existing VM (the lab test defines it beforehand).
ON_EXISTING = ("cls-memtune",)


def load(path):
    """The SLS as Salt's YAML renderer reads it (``mode: 0770`` is the number 770 there)."""
    with open(path) as fh:
        return salt.utils.yaml.safe_load(fh)


def entries(path):
    """``[(state id, function, {argument: value})]`` of an SLS file, in order."""
    out = []
    for sid, body in load(path).items():
        ((fun, args),) = body.items() if isinstance(body, dict) else ((body, None),)
        merged = {}
        for item in args or []:
            merged.update(item)
        out.append((sid, fun, merged))
    return out


def empty_hypervisor():
    """The state module with ``test=True`` over a hypervisor that has no VM, network or pool."""
    spec = importlib.util.spec_from_file_location("saltvirt_test_classic_sls", os.path.join(REPO, "_states", "virt.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.__opts__ = {"test": True}
    module.__salt__ = {
        "virt.list_domains": lambda **kw: [],
        "virt.network_info": lambda name, **kw: {},
        "virt.pool_info": lambda name, **kw: {},
        "virt.list_pools": lambda **kw: [],
    }
    return module


def predict(module, fun, sid, args):
    mod, name = fun.split(".")
    assert mod == "virt", fun
    if fun == "virt.volume_defined":
        return module.volume_defined(**args)
    return getattr(module, name)(sid, **args)


@pytest.mark.parametrize("path", APPLIED + NOT_ON_LAB, ids=os.path.basename)
def test_each_example_file_renders_and_names_its_classic_state(path):
    with open(path) as fh:
        first = fh.readline()
    assert first.startswith("# Classic state: virt."), first
    named = first.split("virt.", 1)[1].split()[0].strip(".:")
    found = entries(path)
    assert found
    assert all(fun.startswith("virt.") for _sid, fun, _args in found)
    if os.path.dirname(path).endswith("not_on_lab"):
        assert "NOT APPLIED ON THE LAB" in open(path).read()
    # The file holds examples of the state it names (stopped.sls also covers the powered_off /
    # unpowered docstrings, which show virt.stopped).
    assert any(fun == f"virt.{named}" for _sid, fun, _args in found), (named, found)


@pytest.mark.parametrize("path", APPLIED, ids=os.path.basename)
def test_applied_examples_pass_the_states_validation(path):
    module = empty_hypervisor()
    for sid, fun, args in entries(path):
        if fun.split(".")[1] not in CHECKED or not args or sid in ON_EXISTING:  # bare: on existing ones
            continue
        ret = predict(module, fun, sid, args)
        assert ret["result"] is None and ret["changes"], (sid, ret)


def _by_id(name):
    return {sid: (fun, args) for sid, fun, args in entries(os.path.join(DATA, "not_on_lab", name))}


def test_not_on_lab_network_examples_are_accepted_or_refused_with_the_fix():
    module = empty_hypervisor()
    examples = {**_by_id("network_running.sls"), **_by_id("network_defined_addresses.sls")}
    for sid, (fun, args) in examples.items():
        ret = predict(module, fun, sid, args)
        if sid in ("cls-netrun-hd", "cls-netdef-hd"):
            # The classic docs' hostdev example puts PCI addresses under "interfaces".
            assert ret["result"] is False and ret["changes"] == {}
            assert "interfaces='0000:04:00.1' is a PCI address: give PCI devices as addresses" in ret["comment"]
            fixed = {k: v for k, v in args.items() if k != "interfaces"} | {"addresses": args["interfaces"]}
            ret = predict(module, fun, sid, fixed)
        assert ret["result"] is None, (sid, ret)
        assert ret["changes"] == {sid: "Network defined, marked for autostart"
                                  + (" and started" if fun.endswith("running") else "")}, ret
    # An interface name is still one: the hint is for PCI addresses only.
    ret = module.network_defined("x", forward="passthrough", interfaces="eth10 not/a/nic")
    assert ret["result"] is False and "is not a host interface name" in ret["comment"]


def test_the_classic_cpu_example_is_refused_for_what_salt_virt_does_not_take():
    module = empty_hypervisor()
    fun, args = _by_id("defined.sls")["cls-cpu"]
    ret = predict(module, fun, "cls-cpu", args)
    assert ret["result"] is False and ret["changes"] == {}
    assert "vcpus" in ret["comment"] or "tuning" in ret["comment"], ret["comment"]
    # Without what docs/upgrading.rst lists as refused (cpu:vcpus, cpu:tuning, NUMA distances),
    # the rest of the example is accepted.
    trimmed = copy.deepcopy(args)
    del trimmed["cpu"]["vcpus"], trimmed["cpu"]["tuning"]
    for cell in trimmed["cpu"]["numa"].values():
        cell.pop("distances")
    ret = predict(module, fun, "cls-cpu", trimmed)
    assert ret["result"] is None and ret["changes"] == {"definition": True}, ret
    for refused in ("vcpus", "tuning"):
        one = copy.deepcopy(trimmed)
        one["cpu"][refused] = args["cpu"][refused]
        assert predict(module, fun, "cls-cpu", one)["result"] is False, refused


def test_the_classic_mem_example_is_accepted():
    module = empty_hypervisor()
    fun, args = _by_id("defined.sls")["cls-mem"]
    ret = predict(module, fun, "cls-mem", args)
    assert ret["result"] is None and ret["changes"] == {"definition": True}, ret


@pytest.mark.parametrize("name", ["defined.sls", "running.sls"])
def test_kvm_hint_dedicated_needs_host_passthrough(name):
    module = empty_hypervisor()
    fun, args = _by_id(name)["cls-kvm-hint"]
    ret = predict(module, fun, "cls-kvm-hint", args)
    assert ret["result"] is False and "host-passthrough" in ret["comment"], ret
    ret = predict(module, fun, "cls-kvm-hint", dict(args, cpu={"mode": "host-passthrough", "maximum": 1}))
    assert ret["result"] is None and ret["changes"]["definition"] is True, ret


def test_the_netfs_example_is_accepted_with_its_listed_permissions():
    module = empty_hypervisor()
    fun, args = _by_id("pool_running.sls")["cls-cifs-run"]
    ret = predict(module, fun, "cls-cifs-run", args)
    assert ret["result"] is None
    assert ret["changes"] == {"cls-cifs-run": "Pool defined, marked for autostart, built, started"}, ret


def test_the_esx_volume_example_is_refused_by_its_name_even_with_test_true():
    module = empty_hypervisor()
    fun, args = _by_id("volume_defined.sls")["esx_volume"]
    ret = predict(module, fun, "esx_volume", args)
    assert ret["result"] is False and ret["changes"] == {}
    assert "volume name 'myvm/myvm.vmdk' is not allowed" in ret["comment"]
    ret = predict(module, fun, "esx_volume", dict(args, name="myvm.vmdk"))
    assert ret["result"] is None and ret["changes"] == {"[local-storage]/myvm.vmdk": {"old": "", "new": "defined"}}


def test_volume_defined_refuses_a_bad_size_before_asking_libvirt():
    module = empty_hypervisor()
    module.__opts__["test"] = False
    module.__salt__["virt.list_pools"] = lambda **kw: pytest.fail("libvirt asked")
    ret = module.volume_defined("images", "data.qcow2", size="big")
    assert ret["result"] is False and "size='big' must be a whole number of MiB" in ret["comment"]


def test_permissions_as_the_classic_docs_list_them_are_one_mapping():
    listed = load(os.path.join(DATA, "pool_defined.sls"))["cls-cifs"]["virt.pool_defined"][2]["permissions"]
    assert listed == [{"mode": 770}, {"owner": 1000}, {"group": 100}]  # Salt's YAML: 0770 is 770
    assert poolxml._permissions("p", listed) == {"mode": "0770", "owner": "1000", "group": "100"}
    assert poolxml._permissions("p", {"mode": "0770", "owner": 1000, "group": 100}) == {
        "mode": "0770", "owner": "1000", "group": "100"}
    with pytest.raises(InvalidArgument, match="names a setting twice"):
        poolxml._permissions("p", [{"mode": "0770"}, {"mode": "0700"}])
    with pytest.raises(InvalidArgument, match="must be a mapping of mode, owner, group, label"):
        poolxml._permissions("p", [{"mode": "0770", "owner": 1000}])
    # Volumes take the same shape.
    assert "<mode>0770</mode>" in volumes.volume_xml("v.qcow2", 1, permissions=listed)


@pytest.mark.parametrize("mode, written", [
    (755, "0755"), (770, "0770"), ("0755", "0755"), ("755", "0755"), (0, "0000"),
    (0o750, "0750"), (0o755, "0755"),  # numbers from Python (488, 493): an 8 or 9 in them
])
def test_a_mode_is_read_as_salt_writes_it(mode, written):
    assert poolxml._permissions("p", {"mode": mode}) == {"mode": written}


@pytest.mark.parametrize("mode", [1755, "4755", "rwx", True, -1, 0o1777])
def test_modes_libvirt_refuses_are_refused_first(mode):
    with pytest.raises(InvalidArgument, match="must be an octal mode like 0755"):
        poolxml._permissions("p", {"mode": mode})
