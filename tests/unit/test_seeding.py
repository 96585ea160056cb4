"""saltvirt.seeding: cloud-init NoCloud seed ISOs and Salt minion keys."""

import io
import os
import stat
import time

import pycdlib
import pytest
import salt.crypt
import salt.utils.crypt
import yaml

from saltvirt import seeding
from saltvirt.errors import InvalidArgument, NotFound
from saltvirt.provision.spec import VmSpec
from saltvirt.seeding import methods


@pytest.fixture(scope="module")
def keys():
    return seeding.gen_minion_keys()


def read_iso_file(iso, name):
    out = io.BytesIO()
    iso.get_file_from_iso_fp(out, rr_path="/" + name)
    rock_ridge = out.getvalue()
    out = io.BytesIO()
    iso.get_file_from_iso_fp(out, joliet_path="/" + name)
    assert out.getvalue() == rock_ridge
    return rock_ridge.decode("utf-8")


def test_make_cidata(tmp_path, keys):
    priv, pub = keys
    dest = tmp_path / "vm1-cidata.iso"
    result = seeding.make_cidata(
        dest,
        minion_id="vm1.example.com",
        master="10.0.2.2",
        pub_key_pem=pub,
        priv_key_pem=priv,
        extra_minion_config={"multiprocessing": False, "grains": {"role": "web"}},
    )
    assert result == str(dest)
    assert stat.S_IMODE(os.stat(dest).st_mode) == 0o600
    assert sorted(os.listdir(tmp_path)) == ["vm1-cidata.iso"]

    iso = pycdlib.PyCdlib()
    iso.open(str(dest))
    try:
        assert iso.pvd.volume_identifier.decode().strip() == "cidata"
        user_data = read_iso_file(iso, "user-data")
        meta_data = read_iso_file(iso, "meta-data")
    finally:
        iso.close()

    assert user_data.startswith("#cloud-config\n")
    doc = yaml.safe_load(user_data)
    minion = doc["salt_minion"]
    assert minion["conf"] == {
        "id": "vm1.example.com",
        "master": "10.0.2.2",
        "multiprocessing": False,
        "grains": {"role": "web"},
    }
    assert minion["public_key"] == pub
    assert minion["private_key"] == priv
    assert "public_key: |\n    -----BEGIN PUBLIC KEY-----" in user_data  # literal PEM block

    meta = yaml.safe_load(meta_data)
    assert meta == {"instance-id": "vm1.example.com", "local-hostname": "vm1.example.com"}


def test_make_cidata_hostname_instance_id_and_replace(tmp_path, keys):
    priv, pub = keys
    dest = tmp_path / "seed.iso"
    dest.write_bytes(b"old seed")
    seeding.make_cidata(
        dest,
        minion_id="vm_2",
        master=["salt1", "salt2"],
        pub_key_pem=pub,
        priv_key_pem=priv,
        hostname="vm-2",
        instance_id="i-0042",
    )
    iso = pycdlib.PyCdlib()
    iso.open(str(dest))
    try:
        meta = yaml.safe_load(read_iso_file(iso, "meta-data"))
        conf = yaml.safe_load(read_iso_file(iso, "user-data"))["salt_minion"]["conf"]
    finally:
        iso.close()
    assert meta == {"instance-id": "i-0042", "local-hostname": "vm-2"}
    assert conf == {"id": "vm_2", "master": ["salt1", "salt2"]}
    assert stat.S_IMODE(os.stat(dest).st_mode) == 0o600


def test_make_cidata_speed(tmp_path, keys):
    priv, pub = keys
    rounds = 50
    started = time.perf_counter()
    for index in range(rounds):
        seeding.make_cidata(
            tmp_path / f"seed{index}.iso",
            minion_id=f"vm{index}",
            master="salt",
            pub_key_pem=pub,
            priv_key_pem=priv,
        )
    per_image = (time.perf_counter() - started) / rounds
    print(f"\nmake_cidata: {per_image * 1000:.2f} ms per image ({rounds} images)")
    assert len(os.listdir(tmp_path)) == rounds


def test_make_cidata_refusals_leave_nothing(tmp_path, keys):
    priv, pub = keys
    good = {"minion_id": "vm1", "master": "salt", "pub_key_pem": pub, "priv_key_pem": priv}
    bad_calls = [
        dict(good, minion_id="../etc/passwd"),
        dict(good, minion_id="a\nb"),
        dict(good, master=""),
        dict(good, pub_key_pem=priv),  # private key where the public one belongs
        dict(good, priv_key_pem=pub),
        dict(good, priv_key_pem="not a key"),
        dict(good, extra_minion_config={"id": "someone-else"}),
        dict(good, minion_id="under_score"),  # not a valid hostname: needs hostname=
    ]
    for kwargs in bad_calls:
        with pytest.raises(InvalidArgument):
            seeding.make_cidata(tmp_path / "seed.iso", **kwargs)
    with pytest.raises(NotFound):
        seeding.make_cidata(tmp_path / "no" / "seed.iso", **good)
    assert os.listdir(tmp_path) == []


def test_make_cidata_write_failure_leaves_nothing(tmp_path, keys, monkeypatch):
    priv, pub = keys

    def broken_write(self, fp, *args, **kwargs):
        fp.write(b"partial")
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(pycdlib.PyCdlib, "write_fp", broken_write)
    with pytest.raises(OSError, match="simulated"):
        seeding.make_cidata(
            tmp_path / "seed.iso", minion_id="vm1", master="salt", pub_key_pem=pub,
            priv_key_pem=priv,
        )
    assert os.listdir(tmp_path) == []


def test_minion_config_text():
    text = seeding.minion_config_text("vm1", "salt.example.com", {"log_level": "debug"})
    assert yaml.safe_load(text) == {"id": "vm1", "master": "salt.example.com", "log_level": "debug"}
    assert text.startswith("id: vm1\nmaster: salt.example.com\n")
    assert yaml.safe_load(seeding.minion_config_text("vm1", "salt", None)) == {
        "id": "vm1",
        "master": "salt",
    }
    # repeating the same id/master in extra is harmless; a different one is refused
    assert "id: vm1" in seeding.minion_config_text("vm1", "salt", {"id": "vm1"})
    with pytest.raises(InvalidArgument):
        seeding.minion_config_text("vm1", "salt", {"master": "other"})


def test_keys_are_salt_compatible(tmp_path, keys):
    priv, pub = keys
    assert priv.startswith("-----BEGIN RSA PRIVATE KEY-----\n")
    assert pub.startswith("-----BEGIN PUBLIC KEY-----\n")
    assert priv.endswith("\n") and pub.endswith("\n")

    # as a minion's pki dir and a master's pki/minions/<id> would hold them
    pki = tmp_path / "pki"
    pki.mkdir()
    (pki / "minion.pem").write_text(priv)
    (pki / "minion.pub").write_text(pub)
    (pki / "vm1").write_text(pub)

    private = salt.crypt.PrivateKey.from_file(str(pki / "minion.pem"))
    public = salt.crypt.PublicKey.from_file(str(pki / "minion.pub"))
    assert private.key.key_size == 2048
    assert salt.crypt.PrivateKeyString(priv).key.private_numbers() == private.key.private_numbers()
    assert salt.crypt.PublicKeyString(pub).key.public_numbers() == public.key.public_numbers()
    assert salt.crypt.get_rsa_pub_key(str(pki / "vm1")).public_numbers() == (
        private.key.public_key().public_numbers()
    )

    # the minion signs, the master verifies with the stored key; and the reverse for secrets
    signature = private.sign(b"minion_start")
    assert public.verify(b"minion_start", signature)
    assert private.decrypt(public.encrypt(b"aes session key")) == b"aes session key"

    # what the minion presents (clean_key of its .pub) matches the master's copy
    assert salt.crypt.clean_key((pki / "minion.pub").read_text()) == salt.crypt.clean_key(
        (pki / "vm1").read_text()
    )

    # salt-key fingerprints
    finger = salt.utils.crypt.pem_finger(path=str(pki / "vm1"))
    assert len(finger.split(":")) == 32
    assert finger == salt.utils.crypt.pem_finger(path=str(pki / "minion.pub"))
    body = "".join(line + "\n" for line in pub.strip().splitlines()[1:-1])
    assert finger == salt.utils.crypt.pem_finger(key=body)


def test_keys_match_salt_gen_keys_format(tmp_path, keys):
    priv, pub = keys
    salt_priv, salt_pub = salt.crypt.gen_keys(2048)
    for ours, theirs in ((priv, salt_priv), (pub, salt_pub)):
        assert ours.splitlines()[0] == theirs.splitlines()[0]
        assert ours.splitlines()[-1] == theirs.splitlines()[-1]
    # Salt serialising our key writes exactly our bytes: the files are interchangeable
    private = salt.crypt.PrivateKeyString(priv)
    private.write_private(str(tmp_path), "minion")
    private.write_public(str(tmp_path), "minion")
    assert (tmp_path / "minion.pem").read_text() == priv
    assert (tmp_path / "minion.pub").read_text() == pub


def test_gen_minion_keys_sizes():
    priv, _ = seeding.gen_minion_keys(3072)
    assert salt.crypt.PrivateKeyString(priv).key.key_size == 3072
    for bad in (1024, "2048", True):
        with pytest.raises(InvalidArgument):
            seeding.gen_minion_keys(bad)


def test_the_key_pair_is_made_ahead_only_when_the_vm_is_seeded_with_a_new_one():
    future = methods.key_pair_ahead(VmSpec(name="web1", cpu=1, mem=128, image="salt://centos.qcow2"))
    priv, pub = future.result(timeout=30)
    assert priv.startswith("-----BEGIN RSA PRIVATE KEY-----") and pub.startswith("-----BEGIN PUBLIC KEY-----")
    for spec in (VmSpec(name="web1", cpu=1, mem=128, image="salt://centos.qcow2", seed=False),
                 VmSpec(name="web1", cpu=1, mem=128),  # no image: nothing to seed
                 VmSpec(name="web1", cpu=1, mem=128, image="salt://centos.qcow2", pub_key="p", priv_key="k")):
        assert methods.key_pair_ahead(spec) is None
