"""The ``libvirt`` ext_pillar through Salt's real pillar compiler, and ``virt.keys`` through the
real loaders (masterless minion, so ``pillar.ext`` compiles the pillar in-process).

No daemons: the bundle's ``_pillar``/``_states``/``_utils`` directories are handed to the loader
with ``pillar_dirs``/``states_dirs``/``utils_dirs``, as a master configured that way would.
"""

import copy
import json
import os
import stat
import subprocess
import sys
import textwrap

import pytest
import salt.config
import salt.pillar
from cryptography import x509

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

GRAINS = {
    "hypervisor1": {
        "id": "hypervisor1",
        "fqdn": "hv1.example.com",
        "host": "hv1",
        "ipv4": ["127.0.0.1", "127.0.0.2"],
    },
    "hypervisor2": {
        "id": "hypervisor2",
        "fqdn": "hv2.example.com",
        "host": "hv2",
        "ipv4": ["127.0.0.1", "127.0.0.3"],
    },
}


def master_opts(root, **overrides):
    root = str(root)
    config = {
        "root_dir": root,
        "pillar_dirs": [os.path.join(REPO, "_pillar")],
        "utils_dirs": [os.path.join(REPO, "_utils")],
        "file_roots": {"base": [os.path.join(root, "srv", "salt")]},
        "pillar_roots": {"base": [os.path.join(root, "srv", "pillar")]},
        "libvirt_pki": {"key_type": "ec", "organization": "Lab"},
        "virt": {"hypervisors": "hypervisor*"},
    }
    config.update(overrides)
    return salt.config.apply_master_config(config, copy.deepcopy(salt.config.DEFAULT_MASTER_OPTS))


def compile_pillar(opts, minion_id, ext=None):
    pillar = salt.pillar.Pillar(
        copy.deepcopy(opts), dict(GRAINS[minion_id]), minion_id, "base", ext=ext
    )
    return pillar.compile_pillar()


def read(path):
    with open(path) as handle:
        return handle.read()


def common_name(pem):
    cert = x509.load_pem_x509_certificate(pem.encode())
    return cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value


def san(pem):
    cert = x509.load_pem_x509_certificate(pem.encode())
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return ext.get_values_for_type(x509.DNSName), [
        str(ip) for ip in ext.get_values_for_type(x509.IPAddress)
    ]


@pytest.fixture(scope="module")
def configured(tmp_path_factory):
    """A master with ``ext_pillar: [{libvirt: {}}]`` and both hypervisors' compiled pillars."""
    opts = master_opts(tmp_path_factory.mktemp("master"), ext_pillar=[{"libvirt": {}}])
    return opts, {m: compile_pillar(opts, m) for m in GRAINS}


def test_each_minion_gets_its_own_keys(configured):
    opts, pillars = configured
    ca_dir = os.path.join(opts["pki_dir"], "libvirt")
    ca_key = read(os.path.join(ca_dir, "cakey.pem"))
    ca_cert = read(os.path.join(ca_dir, "cacert.pem"))
    assert stat.S_IMODE(os.stat(ca_dir).st_mode) == 0o700

    for minion_id, pillar in pillars.items():
        assert "_errors" not in pillar
        material = pillar["libvirt"]
        assert material["cacert.pem"] == ca_cert
        assert common_name(material["servercert.pem"]) == minion_id
        assert common_name(material["clientcert.pem"]) == minion_id
        grains = GRAINS[minion_id]
        assert san(material["servercert.pem"]) == (
            [minion_id, grains["fqdn"], grains["host"]],
            grains["ipv4"],
        )
        text = json.dumps(pillar)
        assert ca_key.strip() not in text
        assert "PRIVATE KEY" not in material["cacert.pem"] + material["servercert.pem"]

    one, two = pillars["hypervisor1"]["libvirt"], pillars["hypervisor2"]["libvirt"]
    text_one = json.dumps(pillars["hypervisor1"])
    for key in ("serverkey.pem", "clientkey.pem", "servercert.pem", "clientcert.pem"):
        assert two[key] not in text_one
        assert one[key] != two[key]


def test_pillar_is_stable_between_compiles(configured):
    opts, pillars = configured
    assert compile_pillar(opts, "hypervisor1") == pillars["hypervisor1"]


def test_on_demand_requests_are_refused_by_default(tmp_path):
    # libvirt is in Salt's default on_demand_ext_pillar, yet a request gets nothing...
    opts = master_opts(tmp_path)
    assert "libvirt" in opts["on_demand_ext_pillar"]
    for request in (True, "_", {}):
        pillar = compile_pillar(opts, "hypervisor1", ext={"libvirt": request})
        assert "libvirt" not in pillar and "_errors" not in pillar
    assert not os.path.exists(os.path.join(opts["pki_dir"], "libvirt", "issued"))
    # ...also when the configured entry runs in the same compile.
    configured = master_opts(tmp_path / "conf", ext_pillar=[{"libvirt": {}}])
    assert "libvirt" not in compile_pillar(configured, "hypervisor1", ext={"libvirt": True})
    # The legitimate paths: the configured entry, or on-demand once the operator allows it.
    assert "libvirt" in compile_pillar(configured, "hypervisor1")
    allowed = master_opts(
        tmp_path / "allowed", libvirt_pki={"key_type": "ec", "on_demand": True}
    )
    pillar = compile_pillar(allowed, "hypervisor1", ext={"libvirt": True})
    assert common_name(pillar["libvirt"]["servercert.pem"]) == "hypervisor1"


def test_on_demand_options_from_a_minion_are_refused(tmp_path):
    opts = master_opts(tmp_path, ext_pillar=[{"libvirt": {}}])
    evil = str(tmp_path / "minion-chosen-ca")
    request = {"libvirt": {"ca_dir": evil, "extra_names": ["hypervisor2"]}}
    pillar = compile_pillar(opts, "hypervisor1", ext=request)
    assert any("on_demand_ext_pillar" in e for e in pillar["_errors"])
    assert not os.path.exists(evil)
    assert "libvirt" not in pillar


def test_entry_options_once_on_demand_is_off(tmp_path):
    ca_dir = str(tmp_path / "custom-ca")
    opts = master_opts(
        tmp_path,
        ext_pillar=[{"libvirt": {"ca_dir": ca_dir, "extra_ips": {"hypervisor1": ["192.0.2.1"]}}}],
        on_demand_ext_pillar=["virtkey"],
    )
    pillar = compile_pillar(opts, "hypervisor1")
    assert "_errors" not in pillar
    assert os.path.exists(os.path.join(ca_dir, "cakey.pem"))
    assert san(pillar["libvirt"]["servercert.pem"])[1] == ["127.0.0.1", "127.0.0.2", "192.0.2.1"]
    # and a minion can no longer ask on demand (Salt drops the request).
    pillar = compile_pillar(
        master_opts(tmp_path / "b", on_demand_ext_pillar=[]), "hypervisor1", ext={"libvirt": True}
    )
    assert "libvirt" not in pillar


def test_minions_option_limits_who_gets_keys(tmp_path):
    opts = master_opts(
        tmp_path,
        ext_pillar=[{"libvirt": {}}],
        libvirt_pki={"key_type": "ec", "minions": ["hypervisor2"]},
    )
    assert "libvirt" not in compile_pillar(opts, "hypervisor1")
    assert "libvirt" in compile_pillar(opts, "hypervisor2")


def test_only_the_hypervisors_get_keys(tmp_path):
    GRAINS.setdefault("web1", {"id": "web1"})
    opts = master_opts(tmp_path, ext_pillar=[{"libvirt": {}}], virt={"hypervisors": ["hypervisor2"]})
    assert "libvirt" not in compile_pillar(opts, "web1")
    assert "libvirt" not in compile_pillar(opts, "hypervisor1")
    assert "libvirt" in compile_pillar(opts, "hypervisor2")
    # Neither virt:hypervisors nor libvirt_pki:minions: nobody.
    nobody = master_opts(tmp_path / "none", ext_pillar=[{"libvirt": {}}], virt={})
    assert "libvirt" not in compile_pillar(nobody, "hypervisor1")
    # A grain target would let a VM choose to be a hypervisor: a clear error instead.
    grains = master_opts(tmp_path / "grains", ext_pillar=[{"libvirt": {}}],
                         virt={"hypervisors": {"tgt": "virtual:kvm", "tgt_type": "grain"}})
    pillar = compile_pillar(grains, "hypervisor1")
    assert "libvirt" not in pillar and any("tgt_type 'grain'" in e for e in pillar["_errors"])


def test_loader_imports_saltvirt_from_utils_dirs(tmp_path):
    """In a fresh interpreter (no test sys.path tweaks) the pillar module finds ``saltvirt``
    through ``utils_dirs``, as on a master that synced ``_utils``."""
    script = textwrap.dedent(
        f"""
        import copy, json, sys
        hidden = ({REPO!r}, {os.path.join(REPO, "_utils")!r})
        sys.path = [p for p in sys.path if p.rstrip("/") not in hidden]
        import salt.config, salt.pillar
        opts = salt.config.apply_master_config({{
            "root_dir": {str(tmp_path)!r},
            "pillar_dirs": [{os.path.join(REPO, "_pillar")!r}],
            "utils_dirs": [{os.path.join(REPO, "_utils")!r}],
            "file_roots": {{"base": []}}, "pillar_roots": {{"base": []}},
            "ext_pillar": [{{"libvirt": "_"}}],
            "libvirt_pki": {{"key_type": "ec"}},
            "virt": {{"hypervisors": "hypervisor*"}},
        }}, copy.deepcopy(salt.config.DEFAULT_MASTER_OPTS))
        pillar = salt.pillar.Pillar(opts, {{"id": "hypervisor1"}}, "hypervisor1", "base")
        print(json.dumps(sorted(pillar.compile_pillar().get("libvirt", {{}}))))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=str(tmp_path),
        check=False,
    )
    assert out.returncode == 0, out.stderr
    import saltvirt.pki  # pylint: disable=import-outside-toplevel

    assert json.loads(out.stdout.strip().splitlines()[-1]) == sorted(saltvirt.pki.PILLAR_KEYS)


# ---------------------------------------------------------------------------------------------
# virt.keys through the real state machinery (masterless minion)
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def minion_loaders(tmp_path):
    from saltfactories.utils.functional import Loaders  # pylint: disable=import-outside-toplevel

    root = str(tmp_path / "minion")
    opts = salt.config.apply_minion_config(
        {
            "root_dir": root,
            "id": "hypervisor1",
            "file_client": "local",
            "file_roots": {"base": [os.path.join(root, "srv", "salt")]},
            "pillar_roots": {"base": [os.path.join(root, "srv", "pillar")]},
            "pillar_dirs": [os.path.join(REPO, "_pillar")],
            "states_dirs": [os.path.join(REPO, "_states")],
            "utils_dirs": [os.path.join(REPO, "_utils")],
            # masterless: the minion compiles its pillar itself, with these master-side options
            # (pillar.ext is an on-demand request: allowed here explicitly)
            "libvirt_pki": {"key_type": "ec", "ca_dir": str(tmp_path / "ca"), "on_demand": True,
                            "minions": "hypervisor1"},
        },
        copy.deepcopy(salt.config.DEFAULT_MINION_OPTS),
    )
    loaders = Loaders(opts)
    try:
        yield loaders
    finally:
        loaders.reset_state()


def test_virt_keys_state_on_demand(minion_loaders, tmp_path):
    base = str(tmp_path / "etc-pki")
    # test=True: the material is fetched (pillar.ext, unmasked) but nothing is written.
    ret = minion_loaders.states.virt.keys(name="libvirt_keys", basepath=base, test=True)
    assert ret.result is None, ret.comment
    assert os.path.join(base, "libvirt", "private", "serverkey.pem") in ret.changes
    assert not os.path.exists(base)

    ret = minion_loaders.states.virt.keys(name="libvirt_keys", basepath=base)
    assert ret.result is True, ret.comment
    assert len(ret.changes) == 14
    assert "PRIVATE" not in json.dumps(ret.raw, default=str)
    assert "on-demand" in ret.comment
    key = os.path.join(base, "libvirt", "private", "serverkey.pem")
    assert read(key).startswith("-----BEGIN PRIVATE KEY-----")
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    cert = read(os.path.join(base, "qemu", "server-cert.pem"))
    assert common_name(cert) == "hypervisor1"

    ret = minion_loaders.states.virt.keys(name="libvirt_keys", basepath=base)
    assert ret.result is True and ret.changes == {}


# ---------------------------------------------------------------------------------------------
# A real libvirtd accepts the material (server cert, client cert, CA) over TLS
# ---------------------------------------------------------------------------------------------

LISTEN_ADDR = "127.0.0.213"  # away from the lab's hypervisors (127.0.0.N, small N)

LIBVIRTD_SCRIPT = """set -e
mount -t tmpfs tmpfs /run/libvirt
for d in etc lib log cache; do mkdir -p {state}/$d; done
mount --bind {state}/etc /etc/libvirt
mount --bind {state}/lib /var/lib/libvirt
mount --bind {state}/log /var/log/libvirt
mount --bind {state}/cache /var/cache/libvirt
exec libvirtd -l -f {conf} -p {pidfile}
"""


def _free_port(addr):
    import socket  # pylint: disable=import-outside-toplevel

    with socket.socket() as sock:
        sock.bind((addr, 0))
        return sock.getsockname()[1]


def _wait_listening(addr, port, proc, timeout=60):
    import socket  # pylint: disable=import-outside-toplevel
    import time  # pylint: disable=import-outside-toplevel

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        with socket.socket() as sock:
            if sock.connect_ex((addr, port)) == 0:
                return True
        time.sleep(0.2)
    return False


def _client_dir(path, material):
    """A ``pkipath`` directory as libvirt clients read it."""
    os.makedirs(path)
    for name in ("cacert.pem", "clientcert.pem", "clientkey.pem"):
        with open(os.path.join(path, name), "w") as handle:
            handle.write(material[name])
    return path


@pytest.mark.functional
def test_libvirtd_accepts_the_certificates(tmp_path):
    import shutil  # pylint: disable=import-outside-toplevel

    import libvirt  # pylint: disable=import-outside-toplevel

    if os.geteuid() != 0 or not shutil.which("libvirtd") or not shutil.which("unshare"):
        pytest.fail("needs root, libvirtd and unshare (a private mount namespace): run make install")

    import saltvirt.pki  # pylint: disable=import-outside-toplevel
    import saltvirt.pki.tlsfiles  # pylint: disable=import-outside-toplevel

    opts = master_opts(
        tmp_path / "master",
        ext_pillar=[{"libvirt": {}}],
        libvirt_pki={"key_type": "rsa", "organization": "Lab"},
    )
    grains = {"id": "hypervisor1", "ipv4": [LISTEN_ADDR]}
    server = salt.pillar.Pillar(copy.deepcopy(opts), grains, "hypervisor1", "base").compile_pillar()
    peers = {
        minion: salt.pillar.Pillar(
            copy.deepcopy(opts), {"id": minion}, minion, "base"
        ).compile_pillar()
        for minion in ("hypervisor2", "web1")
    }
    assert "libvirt" not in peers["web1"]  # not a hypervisor: no certificate at all
    ca_dir = os.path.join(opts["pki_dir"], "libvirt")
    operator = saltvirt.pki.operator_pki({"ca_dir": ca_dir, "organization": "Lab", "key_type": "rsa"})
    assert stat.S_IMODE(os.stat(os.path.join(operator["pkipath"], "clientkey.pem")).st_mode) == 0o600
    qemu_pair = {
        "cacert.pem": server["libvirt"]["cacert.pem"],
        "clientcert.pem": peers["hypervisor2"]["libvirt"]["qemu-clientcert.pem"],
        "clientkey.pem": peers["hypervisor2"]["libvirt"]["qemu-clientkey.pem"],
    }
    base = str(tmp_path / "etc-pki")
    saltvirt.pki.tlsfiles.sync(server["libvirt"], base)

    port = _free_port(LISTEN_ADDR)
    conf = tmp_path / "libvirtd.conf"
    conf.write_text(
        textwrap.dedent(
            f"""\
            listen_tls = 1
            listen_tcp = 0
            listen_addr = "{LISTEN_ADDR}"
            tls_port = "{port}"
            auth_tls = "none"
            ca_file = "{base}/CA/cacert.pem"
            cert_file = "{base}/libvirt/servercert.pem"
            key_file = "{base}/libvirt/private/serverkey.pem"
            tls_allowed_dn_list = ["{saltvirt.pki.ALLOWED_CLIENT_DN}"]
            unix_sock_dir = "{tmp_path}/sock"
            host_uuid = "0b7d7c8e-3c0a-4a4e-9d0e-5a1f2c3d4e5f"
            """
        )
    )
    (tmp_path / "sock").mkdir()
    pidfile = str(tmp_path / "libvirtd.pid")
    script = LIBVIRTD_SCRIPT.format(state=tmp_path / "state", conf=conf, pidfile=pidfile)
    with open(tmp_path / "libvirtd.log", "w") as log_file:
        proc = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        assert _wait_listening(LISTEN_ADDR, port, proc), (tmp_path / "libvirtd.log").read_text()
        libvirt.registerErrorHandler(lambda *args: None, None)
        uri = f"test+tls://{LISTEN_ADDR}:{port}/default?pkipath="

        # hypervisor2 (its own client certificate, the shared CA) connects, as for a migration;
        # libvirt checks the server certificate names 127.0.0.213 on the way.
        conn = libvirt.open(
            uri + _client_dir(str(tmp_path / "hv2"), peers["hypervisor2"]["libvirt"])
        )
        try:
            assert conn.getHostname()
        finally:
            conn.close()

        # The operator's certificate (issued on the master) connects too.
        conn = libvirt.open(uri + operator["pkipath"])
        conn.close()

        # QEMU's client pair (group-readable by QEMU's user) comes from the same CA, but
        # tls_allowed_dn_list keeps it out.
        with pytest.raises(libvirt.libvirtError, match="TLS confirmation"):
            libvirt.open(uri + _client_dir(str(tmp_path / "qemu"), qemu_pair))
        assert "not on the list of allowed clients" in (tmp_path / "libvirtd.log").read_text()
    finally:
        proc.terminate()  # unshare exec'd sh, which exec'd libvirtd: this is libvirtd
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
