"""Runner glue without a master: secrets reach the caller's terminal only, fan-out errors set
the exit status, and host=/names are checked before anything is published."""

import contextlib
import contextvars
import importlib.util
import os
import time

import pytest

from saltvirt.errors import InvalidArgument, VirtError
from saltvirt.fleet import capacities, hosts, locations
from saltvirt.fleet.provision import KeyJob, Provisioner
from tests.unit.attesting import Keys

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


class _Fleet(hosts.Fleet):
    """The hypervisors as the runner's library sees them, answering from a table, without a master."""

    def __init__(self, runner, answers=None):
        super().__init__(runner.__opts__, client_factory=lambda: contextlib.nullcontext(), check_minions=lambda *_a: [],
                         master_event=lambda: _Bus([]), progress=lambda *_a, **_k: None)
        self.calls, self.answers = [], answers or {}

    def fanout(self, fun, arg=(), kwarg=None, tgt=None, tgt_type=None, timeout=None, jid=None):
        self.calls.append(fun)
        return self.answers.get(fun, ({}, {}))


def test_names_and_hosts_are_refused_before_anything_runs(runner, tmp_path, monkeypatch):
    runner.__opts__.update(cachedir=str(tmp_path / "cache"), pki_dir=str(tmp_path / "pki"))
    (tmp_path / "pki" / "minions").mkdir(parents=True)
    (tmp_path / "pki" / "minions" / "web1").write_text("key")
    fleet = _Fleet(runner)
    monkeypatch.setattr(runner, "_fleet", lambda: fleet)
    refused = {
        "hypervisor9": "refusing VM name 'hypervisor9': it matches the hypervisor target",
        "web1": "the master already has a minion key with that id",
    }
    for name, message in refused.items():
        ret = runner.init(name, 1, 128, image="salt://x.qcow2")
        assert ret["result"] is False and message in ret["error"] and runner.__context__["retcode"] == 1
    ret = runner.init("web2", 1, 128, priv_key="-----BEGIN PRIVATE KEY-----")
    assert "pub_key/priv_key are not accepted by the runner" in ret["error"]
    ret = runner.init("web2", 1, 128, image="salt://x.qcow2", disk_profil="small")
    assert "virt.init: unknown argument(s) disk_profil (did you mean disk_profile?)" in ret["error"]
    assert fleet.calls == []  # nothing was asked of any hypervisor
    # The legitimate path goes on to ask the hypervisors (none answer here: a clean error).
    ret = runner.init("web2", 1, 128, image="salt://x.qcow2")
    assert fleet.calls == ["virt.capacity"] and "no hypervisor answered" in ret["error"]
    with pytest.raises(InvalidArgument, match="must be exactly one hypervisor's minion id"):
        runner._exact("hyper*")
    assert runner._exact("hypervisor2") == ["hypervisor2"]


def test_vm_commands_call_the_vms_hypervisor_only(runner, monkeypatch):
    fleet = _Fleet(runner, {"virt.vm_state": ({"hypervisor1": {"web1": "running"}, "hypervisor2": {}}, {})})
    sent = []
    fleet.call = lambda host, fun, arg=(), kwarg=None, timeout=None: sent.append((host, fun, arg, kwarg)) or {
        "name": arg[0], "stopped": True}
    monkeypatch.setattr(runner, "_fleet", lambda: fleet)
    assert runner.stop("web1", timeout=5) == {"name": "web1", "stopped": True, "host": "hypervisor1"}
    assert sent == [("hypervisor1", "virt.stop", ["web1"], {"timeout": 5})]
    ret = runner.start("web9")
    assert ret["result"] is False and "no VM named web9 on any hypervisor" in ret["error"]


def _cached_fleet(runner, tmp_path, states):
    fleet = _Fleet(runner, {"virt.vm_state": (states, {})})
    fleet.locations = locations.Locations(str(tmp_path / "vm-locations.json"))
    sent = []

    def on(host, fun, arg=(), kwarg=None, timeout=None, jid=None):
        sent.append((host, fun))
        if arg and arg[0] in states.get(host, {}):
            return {host: {"name": arg[0], "done": True}}, {}
        return {}, {host: f"Passed invalid arguments: no domain named {arg[0]!r} on this host"}

    fleet.on = on
    return fleet, sent


def test_a_vm_command_is_one_round_trip_when_the_location_is_known(runner, tmp_path, monkeypatch):
    fleet, sent = _cached_fleet(runner, tmp_path, {"hypervisor1": {"web1": "running"}, "hypervisor2": {}})
    monkeypatch.setattr(runner, "_fleet", lambda: fleet)
    assert runner.list_()["hypervisor1"] == {"running": ["web1"]}  # a listing records locations
    fleet.calls.clear()
    assert runner.stop("web1")["host"] == "hypervisor1"
    assert fleet.calls == [] and sent == [("hypervisor1", "virt.stop")]  # no search: one call


def test_a_stale_location_falls_back_to_the_search(runner, tmp_path, monkeypatch):
    fleet, sent = _cached_fleet(runner, tmp_path, {"hypervisor1": {}, "hypervisor2": {"web1": "running"}})
    fleet.locations.set("web1", "hypervisor1")  # it moved behind the master's back
    monkeypatch.setattr(runner, "_fleet", lambda: fleet)
    assert runner.stop("web1")["host"] == "hypervisor2"
    assert sent == [("hypervisor1", "virt.stop"), ("hypervisor2", "virt.stop")]
    assert fleet.calls == ["virt.vm_state"] and fleet.locations.get("web1") == "hypervisor2"


def test_a_name_on_two_hypervisors_is_never_acted_on(runner, tmp_path, monkeypatch):
    states = {"hypervisor1": {"web1": "running"}, "hypervisor2": {"web1": "shutoff"}}
    fleet, sent = _cached_fleet(runner, tmp_path, states)
    monkeypatch.setattr(runner, "_fleet", lambda: fleet)
    runner.list_()
    assert fleet.locations.get("web1") is None  # ambiguous: not cached
    ret = runner.force_off("web1")
    assert ret["result"] is False and "defined on several hypervisors" in ret["error"] and sent == []
    runner.force_off("web1", host="hypervisor2")  # naming the host is the way
    assert sent == [("hypervisor2", "virt.force_off")]


def test_locations_forget_what_an_answering_hypervisor_no_longer_has(tmp_path):
    where = locations.Locations(str(tmp_path / "l.json"))
    where.saw({"hv1": ["a", "b"], "hv2": ["c"]}, complete=True)
    where.saw({"hv1": ["a"]}, complete=False)  # hv2 did not answer: c stays
    assert (where.get("a"), where.get("b"), where.get("c")) == ("hv1", None, "hv2")
    where.saw({"hv1": ["a"]}, complete=True)
    assert where.get("c") is None


def _syndic_fleet(runner, answer):
    fleet, calls = _Fleet(runner), []

    def fanout(fun, arg=(), kwarg=None, tgt=None, tgt_type=None, timeout=None, jid=None):
        calls.append((fun, list(arg), kwarg, tgt, tgt_type))
        return answer

    fleet.fanout = fanout
    return Provisioner(fleet, gen_jid=lambda: "1"), calls


def test_vm_keys_go_to_the_syndic_of_the_vms_hypervisor(runner, tmp_path):
    """virt:syndics: the key step runs saltutil.runner virt.sync_key on the minion of the
    hypervisor's syndic; hypervisors under no syndic keep their VMs' keys here."""
    runner.__opts__.update(cachedir=str(tmp_path), pki_dir=str(tmp_path / "pki"))
    runner.__opts__["virt"]["syndics"] = {"syndic1": "hypervisor[12]"}
    prov, calls = _syndic_fleet(runner, ({"syndic1": {"name": "web1", "host": "hypervisor2", "key": "accepted"}}, {}))
    assert prov.key_on_syndic("web1", "hypervisor2")["key"] == "accepted"
    assert calls == [("saltutil.runner", ["virt.sync_key"], {"kwarg": {"name": "web1", "host": "hypervisor2"}},
                      ["syndic1"], "list")]
    assert prov.key_on_syndic("web1", "hypervisor3") is False  # not under a syndic: this master
    assert len(calls) == 1


def test_a_refusal_on_the_syndic_is_an_error_of_the_call(runner, tmp_path):
    runner.__opts__.update(cachedir=str(tmp_path), pki_dir=str(tmp_path / "pki"))
    runner.__opts__["virt"]["syndics"] = {"syndic1": "hypervisor*"}
    refusal = {"result": False, "error": "not accepting the key of VM web1: the master holds another key",
               "retcode": 1}
    prov, _calls = _syndic_fleet(runner, ({"syndic1": refusal}, {}))
    with pytest.raises(VirtError, match=r"the key of web1 on the master of hypervisor1 \(through "
                                        r"syndic1\): not accepting the key of VM web1"):
        prov.key_on_syndic("web1", "hypervisor1")
    prov, _calls = _syndic_fleet(runner, ({}, {"syndic1": "syndic1 did not answer within 10s (minion down?)"}))
    with pytest.raises(VirtError, match="through syndic1.: syndic1 did not answer within 10s"):
        prov.key_on_syndic("web1", "hypervisor1")
    runner.__opts__["virt"]["syndics"] = {"syndic*": "hypervisor*"}
    with pytest.raises(InvalidArgument, match="virt:syndics: 'syndic\\*' must be exactly one"):
        prov.key_on_syndic("web1", "hypervisor1")


def _events(*pairs):
    """A bus (:class:`_Bus`) with these ``(tag, data)`` events."""
    return _Bus([{"tag": tag, "data": data} for tag, data in pairs])


JID = "20261202063840145699"


def test_the_key_job_under_a_syndic_starts_with_the_creation_and_its_answer_is_used(runner, tmp_path):
    """Under a syndic, virt.sync_key is published before the creation job with that job's id, and
    its answer (accepted, for this VM and host) spares the key step after the creation."""
    runner.__opts__.update(cachedir=str(tmp_path), pki_dir=str(tmp_path / "pki"))
    runner.__opts__["virt"].update(syndics={"syndic1": "hypervisor[12]"}, init_timeout=100)
    prov, calls = _syndic_fleet(runner, ({"syndic1": {"name": "web1", "host": "hypervisor2", "key": "accepted"}}, {}))
    published = []
    prov.fleet.publish = lambda minion, fun, arg=(), kwarg=None: published.append((minion, fun, arg, kwarg)) or "42"
    job = prov.start_key_job("hypervisor2", "web1", JID)
    assert published == [("syndic1", "saltutil.runner", ["virt.sync_key"],
                          {"kwarg": {"name": "web1", "host": "hypervisor2", "jid": JID, "timeout": 110.0}})]
    assert (job.minion, job.jid, job.tag) == ("syndic1", "42", "salt/job/42/ret/syndic1")
    assert prov.start_key_job("hypervisor3", "web1", JID) is None  # under no syndic: this master's key
    prov.fleet.publish = lambda *_a, **_k: None  # Salt did not start it: the key step follows the creation
    assert prov.start_key_job("hypervisor2", "web1", JID) is None

    accepted = {"return": {"name": "web1", "host": "hypervisor2", "key": "accepted"}}
    assert prov.key_on_syndic("web1", "hypervisor2", answer=accepted)["key"] == "accepted"
    assert calls == []  # no second job
    for answer in (None, {"return": {"name": "web1", "host": "hypervisor2", "key": "unchanged", "reason": "x"}},
                   {"return": {"name": "web9", "host": "hypervisor2", "key": "accepted"}},
                   {"return": {"name": "web1", "host": "hypervisor1", "key": "accepted"}},
                   {"return": "ERROR: Passed invalid arguments"}):
        assert prov.key_on_syndic("web1", "hypervisor2", answer=answer)["key"] == "accepted"
    assert len(calls) == 5  # each time run again after the creation, as without the early job


def test_after_a_failed_creation_the_key_job_leaves_no_key(runner, tmp_path):
    """The key job normally saw the failure and accepted nothing; when it answered otherwise (or
    not at all), the key step runs again, which deletes a key the VM no longer has a use for."""
    runner.__opts__.update(cachedir=str(tmp_path), pki_dir=str(tmp_path / "pki"))
    runner.__opts__["virt"].update(syndics={"syndic1": "hypervisor*"}, timeout=0.01)
    prov, calls = _syndic_fleet(runner, ({"syndic1": {"name": "web1", "host": "hypervisor1", "key": "deleted"}}, {}))
    job = KeyJob("syndic1", "42")
    unchanged = {"return": {"name": "web1", "host": "hypervisor1", "key": "unchanged"}}
    prov.undo_key_job(job, _events(), {job.tag: unchanged}, "web1", "hypervisor1")
    assert calls == []
    bus = _events(("salt/job/42/ret/syndic10", {"return": {"key": "unchanged"}}),  # another minion's job
                (job.tag, {"return": {"name": "web1", "host": "hypervisor1", "key": "accepted"}}))
    prov.undo_key_job(job, bus, {job.tag: None}, "web1", "hypervisor1")
    assert calls == [("saltutil.runner", ["virt.sync_key"], {"kwarg": {"name": "web1", "host": "hypervisor1"}},
                      ["syndic1"], "list")]
    prov.undo_key_job(job, _events(), {job.tag: None}, "web1", "hypervisor1")  # no answer in time
    assert len(calls) == 2


def test_the_syndic_side_waits_for_the_hypervisors_signed_answer(runner, tmp_path):
    """virt.sync_key jid=...: an answer in hypervisor1's name that hypervisor1 did not sign is
    ignored; its own (signed) answer ends the wait; a failure, an answer without a key, or none
    at all end it with the reason; an answer already in the job cache counts."""
    keys = Keys(tmp_path, "hypervisor1", "tenant1")
    runner.__opts__.update(cachedir=str(tmp_path / "cache"), pki_dir=keys.pki_dir)
    prov = Provisioner(_Fleet(runner), gen_jid=lambda: "1")
    tag = f"salt/job/{JID}/ret/hypervisor1"

    def answer(signer=None, pub="PUB-web1", jid=JID, **extra):
        seeded = {"minion_pub": pub}
        if signer:
            seeded["minion_pub_signature"] = keys.key_signature("hypervisor1", "web1", pub, jid, signer=signer)
        return dict({"return": {"name": "web1", "seeded": seeded}, "retcode": 0, "success": True}, **extra)

    genuine = answer("hypervisor1")
    # hypervisor1's signed answer to an earlier job (an earlier VM web1's key, replayed) is ignored too.
    replayed = answer("hypervisor1", pub="PUB-earlier-web1", jid="20261201000000000000")
    prov.fleet._master_event = lambda: _events((tag, answer()), (tag, answer("tenant1")), (tag, replayed),
                                             (f"salt/job/{JID}/ret/hypervisor10", genuine), (tag, genuine))
    assert prov.await_init("hypervisor1", "web1", JID, timeout=5) == (None, "PUB-web1")
    prov.fleet._master_event = lambda: _events((tag, answer()), (tag, answer("tenant1")), (tag, replayed))
    assert prov.await_init("hypervisor1", "web1", JID, timeout=0.05) == (
        f"no answer of hypervisor1 to virt.init job {JID} within 0.05s", None)
    prov.fleet._master_event = lambda: _events((tag, {"return": "ERROR: no room", "retcode": 1, "success": False}))
    assert prov.await_init("hypervisor1", "web1", JID, timeout=5) == (f"virt.init job {JID} on hypervisor1 failed",
                                                                      None)
    prov.fleet._master_event = lambda: _events((tag, {"return": {"name": "web1", "seeded": None}, "retcode": 0}))
    assert prov.await_init("hypervisor1", "web1", int(JID), timeout=5) == (
        f"virt.init job {JID} on hypervisor1 made no minion key", None)
    # The answer came before the listener: found in the job cache (a forged one there is skipped too).
    prov.fleet._master_event = _events
    prov.fleet._job_cache = lambda jid: {"hypervisor1": genuine} if jid == JID else {}
    assert prov.await_init("hypervisor1", "web1", JID, timeout=5) == (None, "PUB-web1")
    prov.fleet._job_cache = lambda jid: {"hypervisor1": answer("tenant1")}
    assert "no answer" in prov.await_init("hypervisor1", "web1", JID, timeout=0.05)[0]
    # Salt fires the event before it writes the cache: an answer in neither at first is read later.
    reads = []
    prov.fleet._job_cache = lambda jid: reads.append(jid) or ({"hypervisor1": genuine} if len(reads) > 2 else {})
    assert prov.await_init("hypervisor1", "web1", JID, timeout=5) == (None, "PUB-web1") and len(reads) == 3
    for bad in ("salt/job/x", "2026", None, ["1"]):
        with pytest.raises(InvalidArgument, match="a Salt job id is 20 digits"):
            prov.await_init("hypervisor1", "web1", bad, timeout=1)
    for bad in ("soon", -1, True):
        with pytest.raises(InvalidArgument, match=f"timeout {bad!r}: a number of seconds .at most 910 are waited"):
            prov.await_init("hypervisor1", "web1", JID, timeout=bad)
    waited = []
    prov.fleet.returns_of = lambda jid, host, timeout, accept: waited.append(timeout)
    prov.await_init("hypervisor1", "web1", JID, timeout=10**9)
    assert waited == [910.0]  # virt:init_timeout + virt:timeout: a caller cannot keep the runner longer


def test_a_watched_job_sets_aside_the_events_asked_for(runner):
    """The creation's wait keeps the key job's answer that comes meanwhile; await_return finds it
    there, or on the bus (its exact tag: syndic10's job is not syndic1's)."""
    fleet = _Fleet(runner)
    fleet._client = type("Client", (), {"run_job": lambda self, *a, **k: {"jid": JID, "minions": ["hypervisor1"]}})()
    seen = {"salt/job/42/ret/syndic1": None}
    bus = _events(("salt/job/42/ret/syndic1", {"return": {"key": "accepted"}}),
                (f"salt/job/{JID}/ret/hypervisor1", {"return": {"name": "web1"}, "retcode": 0}))
    done = fleet.watch("hypervisor1", "virt.init", ["web1"], {}, None, None, 5, event=bus, seen=seen)
    assert done["return"] == {"name": "web1"}
    assert fleet.await_return(_events(), "syndic1", "42", 0.01, seen) == {"return": {"key": "accepted"}}
    bus = _events(("salt/job/42/ret/syndic10", {"return": 1}), ("salt/job/42/ret/syndic1", {"return": 2}))
    assert fleet.await_return(bus, "syndic1", "42", 5, {"salt/job/42/ret/syndic1": None}) == {"return": 2}
    assert fleet.await_return(_events(), "syndic1", "42", 0.01) is None


def test_a_master_of_masters_surveys_for_a_migration_by_name(runner, tmp_path):
    """On a master of masters the migration's survey names the hypervisors the capacity copy
    knows (no syndic_wait); when none of them has the VM, or there is no copy, or on one master,
    it asks the glob as before."""
    from saltvirt.fleet import migrate

    runner.__opts__.update(cachedir=str(tmp_path), order_masters=True)
    fleet = _Fleet(runner)
    fleet.capacities = capacities.Capacities(str(tmp_path / "capacities.json"), ttl=60)
    asked = []
    found = {"hypervisor2": {"node_info": {}, "migrate_source": {"vcpus": 1}}}

    def fanout(fun, arg=(), kwarg=None, tgt=None, tgt_type=None, timeout=None, jid=None):
        asked.append((tgt, tgt_type))
        return (found if tgt_type == "list" else {"hypervisor1": {}, "hypervisor3": {"migrate_source": {}}}), {}

    fleet.fanout = fanout
    assert migrate.survey(fleet, "web1")[0] == {"hypervisor1": {}, "hypervisor3": {"migrate_source": {}}}
    assert asked == [(None, None)]  # no copy yet: the glob
    capacity = {"node_info": {"cpus": 2, "phymemory": 4096}, "usage": []}
    fleet.capacities.saw({"hypervisor1": capacity, "hypervisor2": capacity, "evil": capacity},
                         {"hypervisor9": "did not answer"})
    fleet.capacities.clock = lambda: time.time() + 3600  # old: the host list still serves
    asked.clear()
    assert migrate.survey(fleet, "web1") == (found, {})
    assert asked == [(["hypervisor1", "hypervisor2", "hypervisor9"], "list")]  # not one outside the target
    found = {"hypervisor1": {"node_info": {}}, "hypervisor2": {"node_info": {}}}  # none has it: the glob
    asked.clear()
    assert "hypervisor3" in migrate.survey(fleet, "web1")[0]
    assert asked == [(["hypervisor1", "hypervisor2", "hypervisor9"], "list"), (None, None)]
    runner.__opts__["order_masters"] = False  # one master: a glob has no syndic_wait
    asked.clear()
    migrate.survey(fleet, "web1")
    assert asked == [(None, None)]


def test_purge_searches_every_hypervisor_and_refuses_a_vm_left_on_two(runner, tmp_path, monkeypatch):
    """A post-copy migration that failed and was not resumed leaves a copy on each side: purging
    one of them by the cached location would leave the other without its key."""
    runner.__opts__.update(cachedir=str(tmp_path / "cache"), pki_dir=str(tmp_path / "pki"))
    states = {"hypervisor1": {"web1": "paused"}, "hypervisor2": {"web1": "running"}}
    fleet, sent = _cached_fleet(runner, tmp_path, states)
    fleet.locations.set("web1", "hypervisor2")  # where the migration was going
    monkeypatch.setattr(runner, "_fleet", lambda: fleet)
    ret = runner.purge("web1")
    assert ret["result"] is False and "defined on several hypervisors" in ret["error"] and sent == []
    assert fleet.locations.get("web1") is None  # the search saw two: no longer taken as known
    states["hypervisor1"].clear()  # the operator purged the stale copy there (host=hypervisor1)
    ret = runner.purge("web1", delete_key=False)
    assert ret["host"] == "hypervisor2" and sent == [("hypervisor2", "virt.purge")]
    assert fleet.locations.get("web1") is None


@pytest.mark.parametrize(("timeout", "gather", "waited"), [(5, 30, 5), (60, 30, 30), (2, 30, 5), (None, None, 10)])
def test_a_fanouts_timeout_bounds_salts_check_on_silent_minions(timeout, gather, waited):
    """``virt.list timeout=5`` with a stopped minion: Salt's find_job check on it waits at most
    the caller's timeout (never under 5 s), not the master's gather_job_timeout (30 s in the lab)."""
    sent = {}

    class Client:
        def cmd(self, tgt, fun, **kwargs):
            sent.update(kwargs)
            return {"hypervisor1": {"ret": True, "retcode": 0}}

    opts = {"virt": {"hypervisors": "hypervisor*"}}
    if gather is not None:
        opts["gather_job_timeout"] = gather
    fleet = hosts.Fleet(opts, client_factory=None, check_minions=lambda *_a: ["hypervisor1", "hypervisor2"])
    fleet._client = Client()
    answers, errors = fleet.fanout("test.ping", timeout=timeout)
    assert sent["gather_job_timeout"] == waited
    assert sent["timeout"] == (timeout or 10)
    assert answers == {"hypervisor1": True} and "hypervisor2" in errors


def test_a_slow_step_says_what_it_waits_for_and_a_quick_one_prints_nothing():
    seen, who = [], contextvars.ContextVar("who", default="nobody")

    def progress(message, **data):
        seen.append((message, who.get(), data))  # the caller's context, as the runner's __jid_event__

    fleet = hosts.Fleet({}, client_factory=None, check_minions=lambda *_a: [], progress=progress)
    who.set("runner")
    with fleet.progress_after(0.2, "quick"):
        pass
    with fleet.progress_after(0.05, "slow", host="hypervisor1"):
        time.sleep(0.4)
    time.sleep(0.3)  # a cancelled message never comes late
    assert seen == [("slow", "runner", {"host": "hypervisor1"})]


class _Bus:
    """The master's event bus as the runner reads it: the queued events, then nothing."""

    def __init__(self, events):
        self.events, self.destroyed = list(events), False

    def get_event(self, wait=None, full=False, tag=None):
        return self.events.pop(0) if self.events else None

    def destroy(self):
        self.destroyed = True


def _mom_fleet(client, bus):
    """A master of masters' fleet whose Salt client is ``client`` and whose bus is ``bus``."""
    opts = {"virt": {"hypervisors": "hypervisor*"}, "order_masters": True, "syndic_wait": 1}
    fleet = hosts.Fleet(opts, client_factory=None, check_minions=lambda *_a: [], master_event=lambda: bus)
    fleet._client = client
    return fleet


def test_a_listed_job_on_a_master_of_masters_ends_at_the_listed_answers():
    """Salt's client would wait syndic_wait after the answer; the runner stops at it."""
    calls = []

    class Client:
        def run_job(self, tgt, fun, **kwargs):
            calls.append((tgt, fun))
            return {"jid": "20261201", "minions": []}

        def cmd(self, *_a, **_k):
            raise AssertionError("LocalClient.cmd would wait syndic_wait")

    answer = {"id": "hypervisor1", "return": {"web1": "running"}, "retcode": 0}
    bus = _Bus([{"tag": "salt/job/20261201/new", "data": {}},
                {"tag": "salt/job/20261201/ret/hypervisor1", "data": answer}])
    fleet = _mom_fleet(Client(), bus)
    answers, errors = fleet.on("hypervisor1", "virt.vm_info", ["web1"])
    assert answers == {"hypervisor1": {"web1": "running"}} and errors == {}
    assert calls == [(["hypervisor1"], "virt.vm_info")] and bus.destroyed


def test_a_listed_job_that_fails_or_gets_no_answer_on_a_master_of_masters():
    class Client:
        asked = []

        def run_job(self, tgt, fun, **kwargs):
            return {"jid": "77", "minions": []}

        def cmd(self, tgt, fun, arg, tgt_type, timeout):
            self.asked.append((tgt, fun, arg))
            return {}  # nobody runs it any more

    failed = {"tag": "salt/job/77/ret/hypervisor1",
              "data": {"id": "hypervisor1", "return": "no domain named 'web1'", "retcode": 1}}
    other_job = {"tag": "salt/job/78/ret/hypervisor2", "data": {"id": "hypervisor2", "return": {}, "retcode": 0}}
    client = Client()
    fleet = _mom_fleet(client, _Bus([other_job, failed]))
    answers, errors = fleet.fanout("virt.vm_info", ["web1"], tgt=["hypervisor1", "hypervisor2"], tgt_type="list",
                                   timeout=0.2)
    assert answers == {}
    assert errors["hypervisor1"] == "no domain named 'web1'"
    assert errors["hypervisor2"] == "hypervisor2 did not answer within 0.2s (minion down?)"
    assert client.asked == [(["hypervisor2"], "saltutil.find_job", ["77"])]


def test_placement_uses_the_masters_copy_while_it_is_fresh(runner, tmp_path):
    runner.__opts__.update(cachedir=str(tmp_path / "cache"), pki_dir=str(tmp_path / "pki"))
    capacity = {"node_info": {"cpus": 2, "phymemory": 4096}, "disk_free": 10000,
                "usage": [{"name": "web1", "cpu": 1, "memory": 1024, "state": "running"}]}
    fleet = _Fleet(runner, {"virt.capacity": ({"hypervisor1": capacity}, {})})
    fleet.capacities = capacities.Capacities(str(tmp_path / "capacities.json"), ttl=60)
    prov = Provisioner(fleet, lambda: "20261201000000000000")
    assert prov.place("web2", 1, 512, None, {}) == "hypervisor1"
    assert fleet.calls == ["virt.capacity"]  # the first placement asks every hypervisor
    prov.store.release("web2")
    assert prov.place("web3", 1, 512, None, {}) == "hypervisor1"
    assert fleet.calls == ["virt.capacity"]  # the next one within the TTL asks none
    with pytest.raises(InvalidArgument, match="a VM named web1 already exists on hypervisor1"):
        prov.place("web1", 1, 512, None, {})  # names are checked against the copy too
    prov.store.release("web3")
    # A VM the runner created counts at once: 3 GiB left, so 3.5 GiB does not fit any more.
    fleet.capacities.defined("hypervisor1", {"name": "web4", "cpu": 1, "memory": 512, "state": "running"})
    with pytest.raises(VirtError, match="web5"):
        prov.place("web5", 1, 3000, None, {})
    fleet.capacities.discard()  # e.g. a failed virt.init: the next placement asks again
    prov.place("web5", 1, 256, None, {})
    assert fleet.calls == ["virt.capacity", "virt.capacity"]
    prov.store.release("web5")
    # A hypervisor the caller names that the copy lacks (down at the survey, back since?) is asked.
    fleet.answers["virt.capacity"] = ({"hypervisor1": capacity, "hypervisor2": capacity}, {})
    assert prov.place("web6", 1, 256, "hypervisor2", {}) == "hypervisor2"
    assert fleet.calls == ["virt.capacity"] * 3


def test_a_vms_key_is_accepted_only_with_its_hypervisors_signature(runner, tmp_path):
    """Any minion can put a ``salt/job/<jid>/ret/hypervisor1`` event on the master's bus: a
    ``virt.init`` answer whose minion key hypervisor1 did not sign is refused, the VM removed
    again, and nothing kept; the signed answer gets the key accepted."""
    keys = Keys(tmp_path, "hypervisor1", "hypervisor2", "tenant1")
    runner.__opts__.update(cachedir=str(tmp_path / "cache"), pki_dir=keys.pki_dir)
    capacity = {"node_info": {"cpus": 2, "phymemory": 4096}, "disk_free": 10000, "usage": []}
    fleet = _Fleet(runner, {"virt.capacity": ({"hypervisor1": capacity}, {})})
    purged = []
    fleet.on = lambda host, fun, arg=(), kwarg=None, timeout=None, jid=None: purged.append((host, fun, arg)) or (
        {host: {}}, {})
    pub = "-----BEGIN PUBLIC KEY-----\nMIIB-the-vms-key\n-----END PUBLIC KEY-----\n"
    answer = {}
    fleet.watch = lambda *_a, **_k: {"return": {"name": "web1", "state": "shutoff", "seeded": dict(answer)},
                                     "success": True}
    jid = "20261202000000000000"
    prov = Provisioner(fleet, lambda: jid)
    accepted = os.path.join(keys.pki_dir, "minions", "web1")
    forged = [
        {"minion_pub": pub},  # no signature (an answer another minion made up)
        {"minion_pub": pub,
         "minion_pub_signature": keys.key_signature("hypervisor1", "web1", pub, jid, signer="tenant1")},
        {"minion_pub": pub, "minion_pub_signature": keys.key_signature("hypervisor1", "web2", pub, jid)},
        {"minion_pub": pub.replace("the-vms", "another"),
         "minion_pub_signature": keys.key_signature("hypervisor1", "web1", pub, jid)},
        # hypervisor1's own signature, given in its answer to another job: an earlier VM web1's
        # key (whose private half its owner may hold), replayed
        {"minion_pub": pub, "minion_pub_signature": keys.key_signature("hypervisor1", "web1", pub,
                                                                       "20261201000000000000")},
        {"minion_pub": pub, "minion_pub_signature": keys.key_signature("hypervisor1", "web1", pub, None)},
    ]
    for seeded in forged:
        answer.clear()
        answer.update(seeded)
        with pytest.raises(VirtError, match="not accepting the minion key of web1: .*hypervisor1's signature|"
                                            "not accepting the minion key of web1: .*is not signed"):
            prov.init("web1", 1, 512, image="salt://x.qcow2", enable_qcow=True, start=False)
        assert purged[-1] == ("hypervisor1", "virt.purge", ["web1"])  # the VM went again
        assert not os.path.exists(accepted) and prov.store.entries() == [] and prov.intents.all() == []
    answer.clear()
    answer.update(minion_pub=pub, minion_pub_signature=keys.key_signature("hypervisor1", "web1", pub, jid))
    purged.clear()
    result = prov.init("web1", 1, 512, image="salt://x.qcow2", enable_qcow=True, start=False)
    assert result["seeded"] == {"key_accepted": True} and purged == []
    assert open(accepted).read().strip() == pub.strip()


def test_a_watched_job_ignores_answers_its_host_did_not_sign(monkeypatch):
    """Another minion's return in hypervisor1's name is skipped and the real one taken; when only
    such answers come and the job has ended there, the error says so instead of waiting it out."""
    now = [1000.0]

    class Clock:
        @staticmethod
        def monotonic():
            now[0] += 0.5  # each look at the clock is half a second later
            return now[0]

    monkeypatch.setattr(hosts, "time", Clock)

    class Client:
        asked = []

        def run_job(self, tgt, fun, **kwargs):
            return {"jid": "42", "minions": tgt}

        def cmd(self, tgt, fun, arg=(), **kwargs):
            self.asked.append((tgt, fun, list(arg)))
            return {}  # find_job: no longer running there

    forged = {"tag": "salt/job/42/ret/hypervisor1", "data": {"id": "hypervisor1", "return": {"forged": True}}}
    real = {"tag": "salt/job/42/ret/hypervisor1", "data": {"id": "hypervisor1", "return": {"forged": False}}}

    def genuine(data):
        return not data["return"]["forged"]

    fleet = hosts.Fleet({"virt": {"hypervisors": "hypervisor*"}}, client_factory=None,
                        check_minions=lambda *_a: ["hypervisor1"], master_event=lambda: _Bus([forged, real]))
    fleet._client = Client()
    done = fleet.watch("hypervisor1", "virt.init", ["web1"], {}, None, None, 600, genuine=genuine)
    assert done["return"] == {"forged": False} and Client.asked == []
    fleet._master_event = lambda: _Bus([forged])
    with pytest.raises(VirtError, match="virt.init on hypervisor1 ended with no answer signed by hypervisor1"):
        fleet.watch("hypervisor1", "virt.init", ["web1"], {}, None, None, 600, genuine=genuine)
    assert Client.asked == [("hypervisor1", "saltutil.find_job", ["42"])]  # asked after seconds, not minutes
    assert now[0] < 1000.0 + 60


def test_a_crashed_vm_is_restarted_only_on_its_hypervisors_signed_word(runner, tmp_path):
    from saltvirt.fleet import operations

    keys = Keys(tmp_path, "hypervisor1", "hypervisor2", "tenant1")
    runner.__opts__.update(cachedir=str(tmp_path / "cache"), pki_dir=keys.pki_dir)
    fleet = _Fleet(runner)
    started = []
    fleet.call = lambda host, fun, arg=(), kwarg=None, timeout=None: started.append((host, fun, arg)) or {
        "name": arg[0], "started": True}
    crashed = {"xml": "<domain/>", "state": "shutoff", "seen": 5.0, "event": "stopped", "detail": "crashed"}
    refused = {
        "is not signed": dict(crashed),
        "does not carry hypervisor1's signature": keys.definition("hypervisor1", "web1", crashed, signer="tenant1"),
        "did not say that web1 crashed": keys.definition("hypervisor1", "web1", dict(crashed, detail="destroyed")),
    }
    for message, definition in refused.items():
        with pytest.raises(VirtError, match=message):
            operations.restart_crashed(fleet, "hypervisor1", "web1", definition)
    with pytest.raises(InvalidArgument, match="tenant1"):  # not a hypervisor, even if signed by it
        operations.restart_crashed(fleet, "tenant1", "web1", keys.definition("tenant1", "web1", crashed))
    assert started == []
    ret = operations.restart_crashed(fleet, "hypervisor1", "web1", keys.definition("hypervisor1", "web1", crashed))
    assert ret == {"name": "web1", "started": True, "host": "hypervisor1"}
    assert started == [("hypervisor1", "virt.start", ["web1"])]


def test_one_failed_call_does_not_mark_the_next_ones_failed(runner, monkeypatch):
    """The reactor's runner client keeps __context__ between calls and Salt takes each call's
    success from its retcode: a refusal must not make the next, successful call report failure."""
    fleet = _Fleet(runner, {"virt.vm_state": ({"hypervisor1": {"web1": "running"}}, {})})
    fleet.call = lambda host, fun, arg=(), kwarg=None, timeout=None: {"name": arg[0], "started": True}
    monkeypatch.setattr(runner, "_fleet", lambda: fleet)
    assert runner.start("web9")["result"] is False and runner.__context__["retcode"] == 1
    assert runner.start("web1")["started"] is True and "retcode" not in runner.__context__
