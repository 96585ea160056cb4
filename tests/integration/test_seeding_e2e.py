"""End to end on the lab: ``salt-run virt.init`` a Debian guest with a real salt-minion, and
its minion answers ``test.version`` with the key the master pre-accepted (no salt-key -a).

Two seeding methods: ``seed.apply`` here; ``cidata`` on test_tenant.py's guest, which
:func:`boot_minion_vm` boots the same way and :func:`check_minion_vm` checks the same way
(one TCG boot fewer, ~40 s).

The guest image comes from lab/image/build-minion-image.sh (``make minion-image``), cached in
``SALTVIRT_MINION_IMAGE_DIR`` (default /var/cache/salt-virt-lab/minion-image): built once
(~2-3 min cold), a no-op afterwards. Its init gives eth0 10.231.0.N (N from the MAC) on the
lab's br0 and the master is 10.231.0.1, inside the lab's network namespace only.

Under TCG a guest needs 1-3 minutes from domain start to its first answer; the test waits
for the minion's start event (up to 300 s) and prints the timings.
"""

import dataclasses
import json
import os
import subprocess
import time

import pytest

from tests.integration.conftest import BIN, START_TIMEOUT, mac_for


@dataclasses.dataclass
class MinionBoot:
    """What :func:`boot_minion_vm` saw, when it saw it (seconds since virt.init began)."""

    name: str
    seed_cmd: str
    ret: dict  # virt.init's return
    t_init: float
    keys_after_init: dict  # salt-key -L once virt.init returned, before the minion started
    t_start: float | None = None  # None: no start event within START_TIMEOUT
    answer: dict | None = None  # test.version once it started
    t_answer: float | None = None
    console: str = ""  # the serial console then
    keys_after_answer: dict | None = None


def _keys(lab):
    return json.loads(lab.run("salt-key", "-L", "--out=json").stdout)


def boot_minion_vm(lab, name, image, seed_cmd):
    """``salt-run virt.init`` the Debian minion guest ``name`` seeded with ``seed_cmd``, listening
    for its minion's start event from before the VM exists; records what
    :func:`check_minion_vm` asserts. The caller purges the VM."""
    # Listen for the new minion's start event before the VM exists.
    listener = subprocess.Popen(
        [os.path.join(BIN, "salt-run"), "state.event", f"salt/minion/{name}/start", "count=1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        time.sleep(3)
        t0 = time.monotonic()
        _proc, ret = lab.run_json(
            "virt.init", name, 1, 1024, image, f"seed_cmd={seed_cmd}",
            "config=" + json.dumps({"master": "10.231.0.1"}),
            "interfaces=" + json.dumps([{"name": "eth0", "type": "bridge", "source": "br0", "mac": mac_for(name)}]),
            timeout=900,
        )
        boot = MinionBoot(name, seed_cmd, ret, time.monotonic() - t0, _keys(lab))
        # (no minion starts from a VM that does not run or whose key the master did not accept)
        if ret.get("state") == "running" and ret.get("seeded", {}).get("key_accepted") is True:
            try:
                listener.wait(timeout=START_TIMEOUT)
                boot.t_start = time.monotonic() - t0
                boot.answer = lab.salt_json(name, "test.version", "-t", "120", timeout=200)
                boot.t_answer = time.monotonic() - t0
            except subprocess.TimeoutExpired:
                pass  # t_start None: check_minion_vm says so, with the console
        boot.console = lab.serial_log(ret["host"], name)
        boot.keys_after_answer = _keys(lab)
    finally:
        if listener.poll() is None:
            listener.kill()
            listener.wait()
    return boot


def check_minion_vm(boot):
    """The end-to-end assertions on a :func:`boot_minion_vm` record, in the order it was made."""
    vm, seed_cmd, ret = boot.name, boot.seed_cmd, boot.ret
    assert ret["state"] == "running"
    assert ret["seeded"]["method"] == seed_cmd and ret["seeded"]["key_accepted"] is True
    if seed_cmd == "seed.apply":
        assert (ret["seeded"]["device"], ret["seeded"]["fstype"]) == ("/dev/sda2", "ext4")
        assert ret["seeded"]["salt_minion"] == "/usr/bin/salt-minion"
        assert ret["seeded"]["installed"] is False
    keys = boot.keys_after_init
    assert vm in keys["minions"] and vm not in keys.get("minions_pre", [])

    if boot.t_start is None:
        pytest.fail(f"{vm} sent no minion start event within {START_TIMEOUT}s; console:\n" + boot.console[-3000:])
    assert boot.answer == {vm: "3008.4"}, boot.answer
    assert f"SALTVIRT-MINION-ID: {vm}" in boot.console
    assert ("SALTVIRT-SEED: cidata" if seed_cmd == "cidata" else "SALTVIRT-SEED: disk") in boot.console
    # still only the pre-accepted key: nothing was waiting for salt-key -a
    keys = boot.keys_after_answer
    assert vm in keys["minions"] and vm not in keys.get("minions_pre", [])
    print(f"\n{seed_cmd}: virt.init {boot.t_init:.1f}s (seeding {ret['seeded'].get('seconds')}), "
          f"minion start event {boot.t_start:.1f}s, test.version answered {boot.t_answer:.1f}s after virt.init began")


# [cidata]: test_tenant.py's test_vm_minion_answers_with_preaccepted_key_cidata, on its guest.
@pytest.mark.parametrize("seed_cmd", ["seed.apply"])
def test_vm_minion_answers_with_preaccepted_key(lab, vm, minion_image, seed_cmd):
    check_minion_vm(boot_minion_vm(lab, vm, minion_image, seed_cmd))
