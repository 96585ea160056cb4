"""saltvirt.placement.intents: unfinished inits recorded on the master, and what reconcile decides."""

import os
import stat

import pytest

from saltvirt.errors import InvalidArgument
from saltvirt.placement import intents


def test_records_are_private_and_survive_the_process(tmp_path):
    book = intents.Intents(str(tmp_path / "intents"), clock=lambda: 100.0)
    book.begin("web1", "hypervisor1", jid="20261130", seed=True)
    path = tmp_path / "intents" / "web1.json"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    again = intents.Intents(str(tmp_path / "intents"))
    assert again.get("web1") == {"name": "web1", "host": "hypervisor1", "started": 100.0, "jid": "20261130",
                                 "seed": True}
    assert [r["name"] for r in again.all()] == ["web1"]
    assert again.end("web1") is True and again.end("web1") is False and again.all() == []


@pytest.mark.parametrize("name", ["../x", "a/b", ".hidden", ""])
def test_names_are_checked(tmp_path, name):
    with pytest.raises(InvalidArgument, match="not a VM name"):
        intents.Intents(str(tmp_path)).begin(name, "h")


INTENT = {"name": "web1", "host": "hypervisor1", "jid": "1", "seed": True}


@pytest.mark.parametrize("running, vm, expected, words", [
    (None, None, intents.WAIT, "did not answer"),
    (False, None, intents.WAIT, "did not answer"),
    (True, {"defined": False}, intents.WAIT, "still running"),
    (True, {"defined": True, "minion_pub": "PUB"}, intents.WAIT, "still running"),
    (False, {"defined": True, "minion_pub": "PUB"}, intents.COMPLETE, "was created"),
    (False, {"defined": True, "minion_pub": None}, intents.ROLLBACK, "no public key"),
    (False, {"defined": False, "minion_pub": "PUB"}, intents.ROLLBACK, "was not created"),
])
def test_decide(running, vm, expected, words):
    action, reason = intents.decide(INTENT, running, vm)
    assert action == expected and words in reason


def test_an_unseeded_vm_completes_without_a_key():
    assert intents.decide(dict(INTENT, seed=False), False, {"defined": True, "minion_pub": None})[0] == intents.COMPLETE
