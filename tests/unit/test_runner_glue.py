"""Runner glue without a master: secrets reach the caller's terminal only, fan-out errors set
the exit status, and host=/names are checked before anything is published."""

import importlib.util
import os

import pytest
from salt.exceptions import SaltInvocationError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def runner():
    path = os.path.join(REPO, "_runners", "virt.py")
    spec = importlib.util.spec_from_file_location("saltvirt_test_runner_glue", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.__opts__ = {"virt": {"hypervisors": "hypervisor*"}, "__cli": "salt-master"}
    module.__context__ = {}
    return module


def test_secrets_are_printed_for_a_salt_run_caller_only(runner, capsys):
    secrets = [("web console URL", "http://127.0.0.1:6080/vnc.html#x&password=Ab3dEf7h")]
    assert runner._to_caller("web1", secrets) is False  # salt-api, eauth: the master's process
    assert capsys.readouterr().out == ""
    runner.__opts__["__cli"] = "salt-run"
    assert runner._to_caller("web1", secrets) is True
    assert capsys.readouterr().out == (
        "web1: web console URL (shown here only, not returned): "
        "http://127.0.0.1:6080/vnc.html#x&password=Ab3dEf7h\n")


def test_fanout_errors_make_salt_run_exit_non_zero(runner):
    data = runner._with_errors({"hypervisor1": {"vms": 1}}, {"hypervisor2": "did not answer"})
    assert data == {"hypervisor1": {"vms": 1}, "hypervisor2": {"error": "did not answer"}, "retcode": 1}
    assert runner.__context__["retcode"] == 1
    assert runner._with_errors({"hypervisor1": {}}, {}) == {"hypervisor1": {}}


def test_names_and_hosts_are_refused_before_anything_runs(runner):
    runner._known_minions = lambda: {"hypervisor1", "web1"}
    with pytest.raises(SaltInvocationError, match="refusing VM name 'hypervisor9': it matches the hypervisor target"):
        runner._check_new_name("hypervisor9", {})
    with pytest.raises(SaltInvocationError, match="the master already has a minion key with that id"):
        runner._check_new_name("web1", {})
    with pytest.raises(SaltInvocationError, match="pub_key/priv_key are not accepted by the runner"):
        runner._check_new_name("web2", {"priv_key": "-----BEGIN PRIVATE KEY-----"})
    runner._check_new_name("web2", {})  # the legitimate path
    with pytest.raises(SaltInvocationError, match="must be exactly one hypervisor's minion id"):
        runner._exact("hyper*")
    assert runner._exact("hypervisor2") == ["hypervisor2"]


def test_vm_keys_go_to_the_syndic_of_the_vms_hypervisor(runner):
    """virt:syndics: the key step runs saltutil.runner virt.sync_key on the minion of the
    hypervisor's syndic; hypervisors under no syndic keep their VMs' keys here."""
    runner.__opts__["virt"]["syndics"] = {"syndic1": "hypervisor[12]"}
    calls = []

    def fanout(fun, arg=(), kwarg=None, tgt=None, tgt_type=None, **_kw):
        calls.append((fun, list(arg), kwarg, tgt, tgt_type))
        return {"syndic1": {"name": "web1", "host": "hypervisor2", "key": "accepted"}}, {}

    runner._fanout = fanout
    assert runner._key_on_syndic("web1", "hypervisor2")["key"] == "accepted"
    assert calls == [("saltutil.runner", ["virt.sync_key"], {"kwarg": {"name": "web1", "host": "hypervisor2"}},
                      ["syndic1"], "list")]
    assert runner._key_on_syndic("web1", "hypervisor3") is False  # not under a syndic: this master
    assert len(calls) == 1


def test_a_refusal_on_the_syndic_is_an_error_of_the_call(runner):
    runner.__opts__["virt"]["syndics"] = {"syndic1": "hypervisor*"}
    refusal = {"result": False, "error": "not accepting the key of VM web1: the master holds another key",
               "retcode": 1}
    runner._fanout = lambda *a, **k: ({"syndic1": refusal}, {})
    with pytest.raises(runner.SaltRunnerError, match=r"the key of web1 on the master of hypervisor1 \(through "
                                                     r"syndic1\): not accepting the key of VM web1"):
        runner._key_on_syndic("web1", "hypervisor1")
    runner._fanout = lambda *a, **k: ({}, {"syndic1": "syndic1 did not answer within 10s (minion down?)"})
    with pytest.raises(runner.SaltRunnerError, match="through syndic1.: syndic1 did not answer within 10s"):
        runner._key_on_syndic("web1", "hypervisor1")
    runner.__opts__["virt"]["syndics"] = {"syndic*": "hypervisor*"}
    with pytest.raises(SaltInvocationError, match="master config virt:syndics: 'syndic\\*' must be exactly one"):
        runner._key_on_syndic("web1", "hypervisor1")
