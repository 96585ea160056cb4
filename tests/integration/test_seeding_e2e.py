"""End to end on the lab: ``salt-run virt.init`` a Debian guest with a real salt-minion, and
its minion answers ``test.version`` with the key the master pre-accepted (no salt-key -a).

The guest image comes from lab/image/build-minion-image.sh (``make minion-image``), cached in
``SALTVIRT_MINION_IMAGE_DIR`` (default /var/cache/salt-virt-lab/minion-image): built once
(~2-3 min cold), a no-op afterwards. Its init gives eth0 10.231.0.N (N from the MAC) on the
lab's br0 and the master is 10.231.0.1, inside the lab's network namespace only.

Under TCG a guest needs 1-3 minutes from domain start to its first answer; the test waits
for the minion's start event (up to 300 s) and prints the timings.
"""

import json
import os
import subprocess
import time

import pytest

from tests.integration.conftest import BIN, START_TIMEOUT, mac_for


@pytest.mark.parametrize("seed_cmd", ["cidata", "seed.apply"])
def test_vm_minion_answers_with_preaccepted_key(lab, vm, minion_image, seed_cmd):
    # Listen for the new minion's start event before the VM exists.
    listener = subprocess.Popen(
        [os.path.join(BIN, "salt-run"), "state.event", f"salt/minion/{vm}/start", "count=1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        time.sleep(3)
        t0 = time.monotonic()
        proc, ret = lab.run_json(
            "virt.init", vm, 1, 1024, minion_image, f"seed_cmd={seed_cmd}",
            "config=" + json.dumps({"master": "10.231.0.1"}),
            "interfaces=" + json.dumps([{"name": "eth0", "type": "bridge", "source": "br0", "mac": mac_for(vm)}]),
            timeout=900,
        )
        t_init = time.monotonic() - t0
        host = ret["host"]
        assert ret["state"] == "running"
        assert ret["seeded"]["method"] == seed_cmd and ret["seeded"]["key_accepted"] is True
        if seed_cmd == "seed.apply":
            assert (ret["seeded"]["device"], ret["seeded"]["fstype"]) == ("/dev/sda2", "ext4")
            assert ret["seeded"]["salt_minion"] == "/usr/bin/salt-minion"
            assert ret["seeded"]["installed"] is False
        keys = json.loads(lab.run("salt-key", "-L", "--out=json").stdout)
        assert vm in keys["minions"] and vm not in keys.get("minions_pre", [])

        try:
            listener.wait(timeout=START_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{vm} sent no minion start event within {START_TIMEOUT}s; console:\n"
                        + lab.serial_log(host, vm)[-3000:])
        t_start = time.monotonic() - t0
        answer = lab.salt_json(vm, "test.version", "-t", "120", timeout=200)
        t_answer = time.monotonic() - t0
        assert answer == {vm: "3008.4"}, answer
        console = lab.serial_log(host, vm)
        assert f"SALTVIRT-MINION-ID: {vm}" in console
        assert ("SALTVIRT-SEED: cidata" if seed_cmd == "cidata" else "SALTVIRT-SEED: disk") in console
        # still only the pre-accepted key: nothing was waiting for salt-key -a
        keys = json.loads(lab.run("salt-key", "-L", "--out=json").stdout)
        assert vm in keys["minions"] and vm not in keys.get("minions_pre", [])
        print(f"\n{seed_cmd}: virt.init {t_init:.1f}s (seeding {ret['seeded'].get('seconds')}), "
              f"minion start event {t_start:.1f}s, test.version answered {t_answer:.1f}s after virt.init began")
    finally:
        if listener.poll() is None:
            listener.kill()
            listener.wait()
