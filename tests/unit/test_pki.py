"""saltvirt.pki (CA, issuing, caching, pillar), saltvirt.pki.tlsfiles and the virt.keys state."""

import datetime
import importlib.util
import ipaddress
import os
import shutil
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from saltvirt import cmd, pki, trust
from saltvirt.errors import CommandFailed, InvalidArgument, VirtError
from saltvirt.pki import files as pki_files
from saltvirt.pki import tlsfiles

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
UTC = datetime.timezone.utc  # noqa: UP017 (Python 3.10)
T0 = datetime.datetime(2030, 1, 1, 12, 0, tzinfo=UTC)

GRAINS = {
    "id": "hypervisor1",
    "fqdn": "hv1.example.com",
    "host": "hv1",
    "nodename": "hv1",
    "ipv4": ["127.0.0.1", "127.0.0.2"],
    "fqdn_ip4": ["127.0.0.2"],
}


class Clock:
    """A settable clock for certificate lifetimes."""

    def __init__(self, now=T0):
        self.now = now

    def __call__(self):
        return self.now

    def advance(self, days):
        self.now += datetime.timedelta(days=days)


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def ca_dir(tmp_path):
    return str(tmp_path / "master-pki" / "libvirt")


@pytest.fixture
def ca(ca_dir, clock):
    # EC keys: instant to generate; RSA is covered by its own tests.
    return pki.CertificateAuthority(ca_dir, key_type="ec", clock=clock).ensure()


def read(path, mode="r"):
    with open(path, mode) as handle:
        return handle.read()


def load(pem):
    return x509.load_pem_x509_certificate(pem.encode() if isinstance(pem, str) else pem)


def san(cert):
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return ext.get_values_for_type(x509.DNSName), ext.get_values_for_type(x509.IPAddress)


def pillar_config(ca_dir, **options):
    return {"ca_dir": ca_dir, "key_type": "ec", "minions": "*", **options}


# ---------------------------------------------------------------------------------------------
# The CA
# ---------------------------------------------------------------------------------------------


def test_ca_created_once_with_private_permissions(ca_dir, clock):
    ca = pki.CertificateAuthority(ca_dir, subject={"organization": "Lab"}, clock=clock).ensure()
    assert stat.S_IMODE(os.stat(ca_dir).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(ca.key_path).st_mode) == 0o600
    cert = load(read(ca.cert_path))
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "Salt Virt CA"
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "Lab"
    assert cert.issuer == cert.subject
    cert.verify_directly_issued_by(cert)
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.key_cert_sign
    assert cert.not_valid_after_utc - clock() == datetime.timedelta(days=3650)
    ca_key = serialization.load_pem_private_key(read(ca.key_path, "rb"), None)
    assert isinstance(ca_key, rsa.RSAPrivateKey) and ca_key.key_size == 3072

    key_before = read(ca.key_path, "rb")
    again = pki.CertificateAuthority(ca_dir, clock=clock).ensure()
    assert again.cert_pem == ca.cert_pem
    assert read(ca.key_path, "rb") == key_before


def test_ca_dir_that_cannot_be_a_directory(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(VirtError, match="cannot"):
        pki.CertificateAuthority(str(blocker), key_type="ec").ensure()
    with pytest.raises(VirtError, match=str(blocker)):
        pki.CertificateAuthority(str(blocker / "ca"), key_type="ec").ensure()


def test_ca_dir_unreadable_for_the_master_user(tmp_path, monkeypatch):
    ca_dir = tmp_path / "ca"
    ca_dir.mkdir(mode=0o700)
    # Tests run as root, which os.access never denies: pretend to be another user.
    monkeypatch.setattr(pki_files.os, "access", lambda path, mode: False)
    with pytest.raises(VirtError, match="cannot read and write"):
        pki.CertificateAuthority(str(ca_dir), key_type="ec").ensure()


def test_incomplete_ca_is_not_replaced(ca, ca_dir):
    os.unlink(ca.key_path)
    with pytest.raises(VirtError, match="incomplete CA"):
        pki.CertificateAuthority(ca_dir, key_type="ec").ensure()
    assert os.path.exists(ca.cert_path)


def test_ca_key_not_matching_certificate(ca, ca_dir, tmp_path, clock):
    other = pki.CertificateAuthority(str(tmp_path / "other"), key_type="ec", clock=clock).ensure()
    shutil.copy(other.key_path, ca.key_path)
    with pytest.raises(VirtError, match="does not belong"):
        pki.CertificateAuthority(ca_dir, clock=clock).ensure()


def test_expired_ca_is_a_clear_error(ca_dir, clock):
    pki.CertificateAuthority(ca_dir, expiration_days=10, key_type="ec", clock=clock).ensure()
    clock.advance(11)
    with pytest.raises(VirtError, match=r"expired on 2030-01-11.*Move .* aside"):
        pki.CertificateAuthority(ca_dir, clock=clock).ensure()
    with pytest.raises(VirtError, match="expired"):
        pki.libvirt_pillar("hypervisor1", GRAINS, {"ca_dir": ca_dir, "minions": "*"}, clock=clock)


def test_bad_ca_options():
    with pytest.raises(InvalidArgument):
        pki.CertificateAuthority("/tmp/x", key_type="dsa")
    with pytest.raises(InvalidArgument):
        pki.CertificateAuthority("/tmp/x", key_size=1024)
    with pytest.raises(InvalidArgument):
        pki.CertificateAuthority("/tmp/x", subject={"email": "a@b"})
    with pytest.raises(InvalidArgument):
        pki.CertificateAuthority("/tmp/x", expiration_days=0)
    with pytest.raises(InvalidArgument, match="two-letter"):
        pki.build_name("x", country="Germany")


# ---------------------------------------------------------------------------------------------
# Issuing
# ---------------------------------------------------------------------------------------------


def test_server_certificate(ca, clock):
    key_pem, cert_pem = ca.issue(
        "hypervisor1",
        "server",
        names=["hypervisor1", "HV1.example.com.", "hv1.example.com"],
        ips=["127.0.0.2", "2001:db8::1"],
        country="DE",
        organization="Lab",
    )
    cert = load(cert_pem)
    ca_cert = load(ca.cert_pem)
    cert.verify_directly_issued_by(ca_cert)
    assert cert.subject.rfc4514_string() == "CN=hypervisor1,OU=salt-virt-libvirt-server,O=Lab,C=DE"
    dns, ips = san(cert)
    assert dns == ["hypervisor1", "hv1.example.com"]
    assert ips == [ipaddress.ip_address("127.0.0.2"), ipaddress.ip_address("2001:db8::1")]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature and usage.value.key_encipherment
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    key = serialization.load_pem_private_key(key_pem.encode(), None)
    assert key.public_key() == cert.public_key()
    assert cert.not_valid_after_utc - clock() == datetime.timedelta(days=365)

    # The whole chain, with the host name checks a TLS client makes.
    store = verification.Store([ca_cert])
    builder = verification.PolicyBuilder().store(store).time(clock() + datetime.timedelta(days=1))
    builder.build_server_verifier(x509.DNSName("hv1.example.com")).verify(cert, [])
    builder.build_server_verifier(x509.IPAddress(ipaddress.ip_address("127.0.0.2"))).verify(
        cert, []
    )
    with pytest.raises(verification.VerificationError):
        builder.build_server_verifier(x509.DNSName("hv2.example.com")).verify(cert, [])


def test_client_certificate(ca):
    _, cert_pem = ca.issue("hypervisor1", "client", organization="Lab")
    cert = load(cert_pem)
    cert.verify_directly_issued_by(load(ca.cert_pem))
    assert cert.subject.rfc4514_string() == "CN=hypervisor1,OU=salt-virt-libvirt-client,O=Lab"
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)


def test_issued_material_is_stored_privately(ca, ca_dir):
    ca.issue("hypervisor1", "server", names=["hypervisor1"])
    directory = os.path.join(ca_dir, "issued", "hypervisor1")
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(os.path.dirname(directory)).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(os.path.join(directory, "server-key.pem")).st_mode) == 0o600


def test_issue_is_cached(ca):
    first = ca.issue("hypervisor1", "server", names=["hv1", "hypervisor1"], ips=["127.0.0.2"])
    second = ca.issue("hypervisor1", "server", names=["hypervisor1", "hv1"], ips=["127.0.0.2"])
    assert first == second
    # A new CertificateAuthority object (another master worker) reads the same material.
    third = (
        pki.CertificateAuthority(ca.ca_dir)
        .ensure()
        .issue("hypervisor1", "server", names=["hypervisor1", "hv1"], ips=["127.0.0.2"])
    )
    assert third == first


@pytest.mark.parametrize(
    "change",
    [
        {"names": ["hypervisor1", "hv1", "new.example.com"]},
        {"names": ["hypervisor1"]},
        {"ips": ["127.0.0.3"]},
        {"organization": "Other"},
    ],
)
def test_reissued_when_request_changes(ca, change):
    request = {"names": ["hypervisor1", "hv1"], "ips": ["127.0.0.2"], "organization": "Lab"}
    key1, cert1 = ca.issue("hypervisor1", "server", **request)
    key2, cert2 = ca.issue("hypervisor1", "server", **{**request, **change})
    assert key2 != key1 and cert2 != cert1
    assert ca.issue("hypervisor1", "server", **{**request, **change}) == (key2, cert2)


def test_reissued_near_expiry(ca, clock):
    first = ca.issue("hypervisor1", "server", names=["hv1"], expiration_days=40, renew_days=30)
    clock.advance(9)
    assert (
        ca.issue("hypervisor1", "server", names=["hv1"], expiration_days=40, renew_days=30) == first
    )
    clock.advance(2)  # 29 days left
    _, cert = ca.issue("hypervisor1", "server", names=["hv1"], expiration_days=40, renew_days=30)
    assert cert != first[1]
    assert load(cert).not_valid_after_utc == clock() + datetime.timedelta(days=40)


def test_reissued_when_ca_changes(ca, ca_dir, clock):
    first = ca.issue("hypervisor1", "server", names=["hv1"])
    shutil.rmtree(ca_dir)
    # The issued directory went with the old CA; simulate a restored stale copy.
    new_ca = pki.CertificateAuthority(ca_dir, key_type="ec", clock=clock).ensure()
    stale = os.path.join(ca_dir, "issued", "hypervisor1")
    os.makedirs(stale)
    with open(os.path.join(stale, "server-key.pem"), "w") as handle:
        handle.write(first[0])
    with open(os.path.join(stale, "server-cert.pem"), "w") as handle:
        handle.write(first[1])
    _, cert = new_ca.issue("hypervisor1", "server", names=["hv1"])
    assert cert != first[1]
    load(cert).verify_directly_issued_by(load(new_ca.cert_pem))


def test_reissued_when_stored_pair_is_broken(ca, ca_dir):
    _, cert1 = ca.issue("hypervisor1", "client")
    other_key, _ = ca.issue("hypervisor2", "client")
    with open(os.path.join(ca_dir, "issued", "hypervisor1", "client-key.pem"), "w") as handle:
        handle.write(other_key)
    key2, cert2 = ca.issue("hypervisor1", "client")
    assert cert2 != cert1 and key2 != other_key
    with open(os.path.join(ca_dir, "issued", "hypervisor1", "client-cert.pem"), "w") as handle:
        handle.write("garbage")
    assert ca.issue("hypervisor1", "client")[1] != cert2


def test_leaf_does_not_outlive_the_ca(ca_dir, clock):
    ca = pki.CertificateAuthority(ca_dir, expiration_days=100, key_type="ec", clock=clock).ensure()
    _, cert = ca.issue("hypervisor1", "server", names=["hv1"], expiration_days=365)
    assert load(cert).not_valid_after_utc == load(ca.cert_pem).not_valid_after_utc
    clock.advance(80)  # within renew_days, but re-issuing would not help: no churn
    assert ca.issue("hypervisor1", "server", names=["hv1"], expiration_days=365)[1] == cert


def test_issue_arguments_are_validated(ca):
    with pytest.raises(InvalidArgument, match="kind"):
        ca.issue("hypervisor1", "peer")
    with pytest.raises(InvalidArgument, match="renew_days"):
        ca.issue("hypervisor1", expiration_days=30, renew_days=30)
    with pytest.raises(InvalidArgument, match="DNS name"):
        ca.issue("hypervisor1", names=["bad name"])
    with pytest.raises(InvalidArgument, match="IP address"):
        ca.issue("hypervisor1", ips=["300.1.1.1"])


@pytest.mark.parametrize(
    "minion_id",
    [
        "",
        "../etc",
        "a/b",
        "..",
        ".hidden",
        "a\x00b",
        "a\\b",
        "new\nline",
        " padded",
        "x" * 65,
        None,
    ],
)
def test_bad_minion_ids_are_refused(ca, ca_dir, minion_id):
    with pytest.raises(InvalidArgument, match="minion id"):
        ca.issue(minion_id, "server")
    with pytest.raises(InvalidArgument, match="minion id"):
        pki.libvirt_pillar(minion_id, {}, pillar_config(ca_dir))
    issued = os.path.join(ca_dir, "issued")
    assert not os.path.isdir(issued) or os.listdir(issued) == []
    assert not os.path.exists(os.path.join(os.path.dirname(ca_dir), "etc"))


@pytest.mark.parametrize(
    "minion_id", ["hypervisor1", "hv-1.example.com", "web_01", "a@b", "x" * 64]
)
def test_good_minion_ids(minion_id):
    assert pki.validate_minion_id(minion_id) == minion_id


# ---------------------------------------------------------------------------------------------
# The pillar
# ---------------------------------------------------------------------------------------------


def test_libvirt_pillar_content(ca_dir):
    pillar = pki.libvirt_pillar(
        "hypervisor1",
        GRAINS,
        pillar_config(
            ca_dir,
            organization="Lab",
            extra_names={"hyper*": ["cloud.example.com"], "other*": ["nope.example.com"]},
            extra_ips=["192.0.2.10"],
        ),
    )
    assert list(pillar) == ["libvirt"]
    material = pillar["libvirt"]
    assert sorted(material) == sorted(pki.PILLAR_KEYS)
    ca_key = read(os.path.join(ca_dir, "cakey.pem"))
    for key, value in material.items():
        assert isinstance(value, str)
        assert ca_key not in value
        assert ("PRIVATE KEY" in value) == key.endswith("key.pem")
    assert material["cacert.pem"] == read(os.path.join(ca_dir, "cacert.pem"))
    server = load(material["servercert.pem"])
    dns, ips = san(server)
    assert dns == ["hypervisor1", "hv1.example.com", "hv1", "cloud.example.com"]
    assert [str(ip) for ip in ips] == ["127.0.0.2", "127.0.0.1", "192.0.2.10"]
    client = load(material["clientcert.pem"])
    assert client.subject.rfc4514_string() == "CN=hypervisor1,OU=salt-virt-libvirt-client,O=Lab"
    # QEMU's own pairs (group-readable on the hypervisor) carry other units and other keys.
    qemu_client = load(material["qemu-clientcert.pem"])
    assert qemu_client.subject.rfc4514_string() == "CN=hypervisor1,OU=salt-virt-qemu-client,O=Lab"
    assert load(material["qemu-servercert.pem"]).subject.rfc4514_string() == (
        "CN=hypervisor1,OU=salt-virt-qemu-server,O=Lab")
    assert san(load(material["qemu-servercert.pem"])) == san(server)
    assert len({material[k] for k in pki.PILLAR_KEYS if k.endswith("key.pem")}) == 4
    # Cached: the same pillar on the next compile.
    assert (
        pki.libvirt_pillar(
            "hypervisor1",
            GRAINS,
            pillar_config(
                ca_dir,
                organization="Lab",
                extra_names={"hyper*": ["cloud.example.com"]},
                extra_ips=["192.0.2.10"],
            ),
        )
        == pillar
    )


def test_libvirt_pillar_minions_option_and_grains(ca_dir):
    assert pki.libvirt_pillar("web1", GRAINS, pillar_config(ca_dir, minions=["hyper*"])) == {}
    # Without a minions set (neither libvirt_pki:minions nor virt:hypervisors): nobody.
    assert pki.libvirt_pillar("hyper1", GRAINS, pillar_config(ca_dir, minions=None)) == {}
    hypervisors = trust.Hypervisors(["hyper1"], "list")
    assert pki.libvirt_pillar("hyper1x", GRAINS, pillar_config(ca_dir, minions=hypervisors)) == {}
    assert "libvirt" in pki.libvirt_pillar("hyper1", GRAINS, pillar_config(ca_dir, minions=hypervisors))
    assert not os.path.exists(os.path.join(ca_dir, "issued", "hyper1x"))
    assert not os.path.exists(os.path.join(ca_dir, "issued", "web1"))
    odd = {"fqdn": "not a name", "host": "*", "ipv4": ["127.0.0.5", "fe80::1%eth0", "junk"]}
    material = pki.libvirt_pillar("hyper2", odd, pillar_config(ca_dir))["libvirt"]
    dns, ips = san(load(material["servercert.pem"]))
    assert dns == ["hyper2"] and [str(i) for i in ips] == ["127.0.0.5"]
    material = pki.libvirt_pillar("hyper3", GRAINS, pillar_config(ca_dir, use_grains=False))
    assert san(load(material["libvirt"]["servercert.pem"])) == (["hyper3"], [])


def test_libvirt_pillar_bad_options(ca_dir):
    with pytest.raises(InvalidArgument, match="unknown libvirt pillar options: colour"):
        pki.libvirt_pillar("hypervisor1", GRAINS, pillar_config(ca_dir, colour="blue"))
    with pytest.raises(InvalidArgument, match="ca_dir"):
        pki.libvirt_pillar("hypervisor1", GRAINS, {})
    with pytest.raises(InvalidArgument, match="DNS name"):
        pki.libvirt_pillar("hypervisor1", GRAINS, pillar_config(ca_dir, extra_names=["a b"]))


# ---------------------------------------------------------------------------------------------
# GnuTLS and QEMU accept the material
# ---------------------------------------------------------------------------------------------


def _certtool_verify(ca_file, cert_file, *extra):
    return cmd.run(
        [
            "certtool",
            "--verify",
            "--verify-profile=medium",
            "--load-ca-certificate",
            ca_file,
            "--infile",
            cert_file,
            *extra,
        ]
    )


@pytest.fixture(params=["rsa", "ec"])
def etc_pki(request, tmp_path):
    if not shutil.which("certtool"):
        pytest.fail("certtool (gnutls-bin) is not installed: run make install")
    material = pki.libvirt_pillar(
        "hypervisor1",
        GRAINS,
        {"ca_dir": str(tmp_path / "ca"), "key_type": request.param, "organization": "Lab", "minions": "*"},
    )["libvirt"]
    base = str(tmp_path / "etc-pki")
    tlsfiles.sync(material, base)
    return base


def test_gnutls_certtool_accepts_certificates(etc_pki):
    ca_file = os.path.join(etc_pki, "CA", "cacert.pem")
    server = os.path.join(etc_pki, "libvirt", "servercert.pem")
    client = os.path.join(etc_pki, "libvirt", "clientcert.pem")
    for host in ("hypervisor1", "hv1.example.com", "127.0.0.2"):
        out = _certtool_verify(
            ca_file, server, f"--verify-hostname={host}", "--verify-purpose=1.3.6.1.5.5.7.3.1"
        )
        assert "Chain verification output: Verified" in out
    assert "Verified" in _certtool_verify(ca_file, client, "--verify-purpose=1.3.6.1.5.5.7.3.2")
    with pytest.raises(CommandFailed):
        _certtool_verify(ca_file, server, "--verify-hostname=127.0.0.9")
    with pytest.raises(CommandFailed):
        _certtool_verify(ca_file, client, "--verify-purpose=1.3.6.1.5.5.7.3.1")


def test_qemu_loads_tls_credentials(etc_pki, tmp_path):
    """QEMU's own checks (key usage, purpose, chain) run when it loads tls-creds-x509."""
    if not shutil.which("qemu-img"):
        pytest.fail("qemu-img is not installed: run make install")
    image = str(tmp_path / "probe.img")
    cmd.run(["qemu-img", "create", "-q", "-f", "raw", image, "1M"])
    qemu_dir = os.path.join(etc_pki, "qemu")
    for endpoint in ("server", "client"):
        cmd.run([
            "qemu-img", "info",
            "--object", f"tls-creds-x509,id=tls0,dir={qemu_dir},endpoint={endpoint},verify-peer=on",
            image,
        ])  # fmt: skip
    # And it refuses a certificate from another CA.
    other = pki.libvirt_pillar("hypervisor1", GRAINS, pillar_config(str(tmp_path / "other-ca")))
    with open(os.path.join(qemu_dir, "server-cert.pem"), "w") as handle:
        handle.write(other["libvirt"]["servercert.pem"])
    with pytest.raises(CommandFailed, match="failed validation"):
        cmd.run([
            "qemu-img", "info",
            "--object", f"tls-creds-x509,id=tls0,dir={qemu_dir},endpoint=server,verify-peer=on",
            image,
        ])  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Writing the files on the hypervisor
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def material(tmp_path_factory):
    ca_dir = str(tmp_path_factory.mktemp("writer") / "ca")
    return pki.libvirt_pillar("hypervisor1", GRAINS, pillar_config(ca_dir))["libvirt"]


def _modes(base):
    found = {}
    for root, _, files in os.walk(base):
        for name in files:
            path = os.path.join(root, name)
            st = os.stat(path)
            found[os.path.relpath(path, base)] = (stat.S_IMODE(st.st_mode), st.st_gid)
    return found


def test_tlsfiles_layout_and_modes(material, tmp_path):
    base = str(tmp_path / "pki")
    changes = tlsfiles.sync(material, base)
    gid = tlsfiles.qemu_gid()
    key_mode = (0o640, gid) if gid is not None else (0o600, os.getegid())
    root = os.getegid()
    assert _modes(base) == {
        "CA/cacert.pem": (0o644, root),
        "libvirt/servercert.pem": (0o644, root),
        "libvirt/clientcert.pem": (0o644, root),
        "libvirt/private/serverkey.pem": (0o600, root),
        "libvirt/private/clientkey.pem": (0o600, root),
        "qemu/ca-cert.pem": (0o644, root),
        "qemu/server-cert.pem": (0o644, root),
        "qemu/client-cert.pem": (0o644, root),
        "qemu/server-key.pem": key_mode,
        "qemu/client-key.pem": key_mode,
    }
    assert stat.S_IMODE(os.stat(os.path.join(base, "libvirt", "private")).st_mode) == 0o700
    assert read(os.path.join(base, "qemu", "server-key.pem")) == material["qemu-serverkey.pem"]
    assert read(os.path.join(base, "qemu", "client-key.pem")) != material["clientkey.pem"]
    assert read(os.path.join(base, "CA", "cacert.pem")) == material["cacert.pem"]
    assert len([c for c in changes.values() if c == "created"]) == 10
    for description in changes.values():
        assert "BEGIN" not in description
    assert tlsfiles.sync(material, base) == {}


def test_tlsfiles_without_qemu_group(material, tmp_path):
    base = str(tmp_path / "pki")
    tlsfiles.sync(material, base, qemu_group="no-such-group-here")
    assert stat.S_IMODE(os.stat(os.path.join(base, "qemu", "server-key.pem")).st_mode) == 0o600


def test_tlsfiles_test_mode_writes_nothing(material, tmp_path):
    base = str(tmp_path / "pki")
    changes = tlsfiles.sync(material, base, test=True)
    assert not os.path.exists(base)
    assert changes[os.path.join(base, "libvirt", "private")] == "directory created (mode 0700)"
    assert changes[os.path.join(base, "qemu", "client-key.pem")] == "created"

    tlsfiles.sync(material, base)
    key = os.path.join(base, "libvirt", "private", "serverkey.pem")
    cert = os.path.join(base, "libvirt", "servercert.pem")
    os.chmod(key, 0o644)
    with open(cert, "w") as handle:
        handle.write("stale\n")
    before = _modes(base)
    changes = tlsfiles.sync(material, base, test=True)
    assert changes == {key: "mode 0644 -> 0600", cert: "content updated"}
    assert _modes(base) == before and read(cert) == "stale\n"

    assert tlsfiles.sync(material, base) == changes
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert read(cert) == material["servercert.pem"]
    assert tlsfiles.sync(material, base) == {}


def test_tlsfiles_replaces_symlinks(material, tmp_path):
    base = tmp_path / "pki"
    tlsfiles.sync(material, str(base))
    target = tmp_path / "elsewhere"
    target.write_text("untouched")
    link = base / "CA" / "cacert.pem"
    link.unlink()
    link.symlink_to(target)
    changes = tlsfiles.sync(material, str(base))
    assert changes == {str(link): "replaced (was not a regular file)"}
    assert not link.is_symlink() and target.read_text() == "untouched"


def test_tlsfiles_refuses_bad_material(material, tmp_path):
    base = str(tmp_path / "pki")
    with pytest.raises(InvalidArgument, match="lacks clientkey.pem"):
        tlsfiles.sync({k: v for k, v in material.items() if k != "clientkey.pem"}, base)
    masked = dict(material, **{"serverkey.pem": "**********"})
    with pytest.raises(InvalidArgument, match="serverkey.pem is not PEM") as info:
        tlsfiles.sync(masked, base)
    assert "PRIVATE" not in str(info.value)
    with pytest.raises(InvalidArgument, match="absolute"):
        tlsfiles.sync(material, "relative/pki")
    assert not os.path.exists(base)


# ---------------------------------------------------------------------------------------------
# The virt.keys state (loaded with stand-in dunders)
# ---------------------------------------------------------------------------------------------


def _state_module(pillar, test=False, pillar_ext=None):
    spec = importlib.util.spec_from_file_location(
        "saltvirt_test_states_virt", os.path.join(REPO, "_states", "virt.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    calls = []

    def ext(external, pillar=None, unmask=None):
        calls.append((external, unmask))
        return pillar_ext if unmask else {"libvirt": {k: "**********" for k in pki.PILLAR_KEYS}}

    module.__pillar__ = pillar
    module.__opts__ = {"test": test}
    module.__salt__ = {"pillar.ext": ext}
    return module, calls


def test_state_keys_from_pillar(material, tmp_path):
    base = str(tmp_path / "pki")
    module, calls = _state_module({"libvirt": material})
    ret = module.keys("libvirt_keys", basepath=base)
    assert ret["result"] is True and len(ret["changes"]) == 14 and not calls
    assert "BEGIN" not in repr(ret)
    ret = module.keys("libvirt_keys", basepath=base)
    assert ret == {
        "name": "libvirt_keys",
        "result": True,
        "changes": {},
        "comment": f"libvirt TLS files under {base} are up to date",
    }


def test_state_keys_on_demand_and_test_mode(material, tmp_path):
    base = str(tmp_path / "pki")
    module, calls = _state_module({}, test=True, pillar_ext={"libvirt": material})
    ret = module.keys("libvirt_keys", basepath=base, country="DE", __id__="libvirt_keys")
    assert calls == [({"libvirt": True}, True)]
    assert ret["result"] is None and "would change" in ret["comment"]
    assert ret["warnings"] and "country" in ret["warnings"][0]
    assert not os.path.exists(base)
    module.__opts__["test"] = False
    ret = module.keys("libvirt_keys", basepath=base)
    assert ret["result"] is True and "on-demand" in ret["comment"]
    assert (
        read(os.path.join(base, "libvirt", "private", "clientkey.pem")) == material["clientkey.pem"]
    )


def test_state_keys_without_material(tmp_path):
    module, _ = _state_module(
        {}, pillar_ext={"_errors": ["Failed to load ext_pillar libvirt: CA expired"]}
    )
    ret = module.keys("libvirt_keys", basepath=str(tmp_path / "pki"))
    assert ret["result"] is False and ret["changes"] == {}
    assert "CA expired" in ret["comment"] and "virt:hypervisors" in ret["comment"]
