"""Statements of a hypervisor signed with its minion key and checked with the key the master accepted."""

import os

import pytest

from saltvirt.pki import attest
from tests.unit.attesting import Keys


def test_a_key_statement_holds_only_for_the_job_that_reported_it(tmp_path):
    keys = Keys(tmp_path, "hypervisor1")
    verifier = attest.Verifier(keys.pki_dir)
    said = attest.key_statement("PUB\n", 20261202000000000001)
    assert said == {"minion_pub": "PUB", "jid": "20261202000000000001"}
    sig = attest.sign(keys.private("hypervisor1"), attest.KEY, "hypervisor1", "web1", said)
    verifier.check(attest.KEY, "hypervisor1", "web1", attest.key_statement("PUB", "20261202000000000001"), sig)
    for other in ("20261202000000000002", None):  # another job's answer; none (salt-call)
        with pytest.raises(attest.Unattested, match="refused"):
            verifier.check(attest.KEY, "hypervisor1", "web1", attest.key_statement("PUB", other), sig)


def test_a_statement_holds_only_for_its_host_purpose_vm_and_content(tmp_path):
    keys = Keys(tmp_path, "hypervisor1", "hypervisor2")
    verifier = attest.Verifier(keys.pki_dir)
    sig = attest.sign(keys.private("hypervisor1"), attest.KEY, "hypervisor1", "web1", "PUB")
    verifier.check(attest.KEY, "hypervisor1", "web1", "PUB", sig)  # the legitimate statement
    for purpose, host, name, payload in [
        (attest.DEFINITION, "hypervisor1", "web1", "PUB"),  # another purpose
        (attest.KEY, "hypervisor2", "web1", "PUB"),  # another host's name
        (attest.KEY, "hypervisor1", "web2", "PUB"),  # another VM
        (attest.KEY, "hypervisor1", "web1", "PUB2"),  # another key
    ]:
        with pytest.raises(attest.Unattested, match="refused"):
            verifier.check(purpose, host, name, payload, sig)
    for bad in (None, "", "not base64!", sig[:-8] + "AAAAAAA="):
        with pytest.raises(attest.Unattested):
            verifier.check(attest.KEY, "hypervisor1", "web1", "PUB", bad)


def test_records_carry_their_signature_and_come_back_without_it(tmp_path):
    keys = Keys(tmp_path, "hypervisor1")
    record = {"xml": "<domain/>", "state": "running", "autostart": False, "seen": 1764633600.25}
    signed = attest.signed(keys.private("hypervisor1"), attest.DEFINITION, "hypervisor1", "web1", record)
    assert set(signed) == {*record, attest.SIGNATURE}
    body = attest.Verifier(keys.pki_dir).check_record(attest.DEFINITION, "hypervisor1", "web1", signed)
    assert body == record
    with pytest.raises(attest.Unattested, match="is not signed"):
        attest.Verifier(keys.pki_dir).check_record(attest.DEFINITION, "hypervisor1", "web1", record)


def test_a_host_without_an_accepted_key_cannot_be_checked(tmp_path):
    keys = Keys(tmp_path, "hypervisor1")
    keys.add("hypervisor3", accepted=False)  # e.g. a top master: the key is on the syndic's master
    sig = attest.sign(keys.private("hypervisor3"), attest.KEY, "hypervisor3", "web1", "PUB")
    with pytest.raises(attest.Unattested, match="this master holds no accepted key of hypervisor3"):
        attest.Verifier(keys.pki_dir).check(attest.KEY, "hypervisor3", "web1", "PUB", sig)


def test_an_unreadable_private_key_is_a_clear_error(tmp_path):
    with pytest.raises(attest.VirtError, match="cannot sign for the master with .*minion.pem"):
        attest.sign(str(tmp_path / "minion.pem"), attest.KEY, "hypervisor1", "web1", "PUB")


def test_a_replaced_private_key_is_read_again(tmp_path):
    """The key is read once and kept, but a minion whose key was replaced signs with the new one."""
    keys = Keys(tmp_path, "hypervisor1", "hypervisor2")
    verifier = attest.Verifier(keys.pki_dir)
    path = keys.private("hypervisor1")
    first = attest.sign(path, attest.KEY, "hypervisor1", "web1", "PUB")
    verifier.check(attest.KEY, "hypervisor1", "web1", "PUB", first)
    with open(keys.private("hypervisor2"), "rb") as src, open(path, "wb") as dst:
        dst.write(src.read())
    os.utime(path, ns=(1, 1))  # whatever the file system's clock resolution
    with pytest.raises(attest.Unattested):
        verifier.check(attest.KEY, "hypervisor1", "web1", "PUB",
                       attest.sign(path, attest.KEY, "hypervisor1", "web1", "PUB"))
