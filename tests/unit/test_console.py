"""saltvirt.console: one-time console tokens, console reachability, the websockify proxy."""

import base64
import hashlib
import json
import multiprocessing
import os
import socket
import stat
import struct
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from saltvirt import console
from saltvirt.console import Proxy, TokenPlugin, TokenStore
from saltvirt.domain.model import Domain, Graphics
from saltvirt.errors import InvalidArgument, VirtError


@pytest.fixture
def store(tmp_path):
    return TokenStore(tmp_path / "tokens")


# --------------------------------------------------------------------------- token store


def test_token_works_once(store):
    token, expires = store.issue("vm1", "10.0.0.5", 5901, ttl=300, hypervisor="hv1")
    assert expires == pytest.approx(time.time() + 300, abs=5)
    record = store.consume(token)
    assert record["vm"] == "vm1" and record["hypervisor"] == "hv1"
    assert (record["host"], record["port"]) == ("10.0.0.5", 5901)
    assert store.consume(token) is None
    assert os.listdir(store.directory) == []  # nothing left behind


def test_expired_token_is_refused_and_removed(store):
    token, expires = store.issue("vm1", "10.0.0.5", 5900, ttl=5, now=1000.0)
    assert expires == 1005.0
    assert store.consume(token, now=1005.0) is None
    assert os.listdir(store.directory) == []
    # and a fresh one still works just before its deadline
    token, _ = store.issue("vm1", "10.0.0.5", 5900, ttl=5, now=2000.0)
    assert store.consume(token, now=2004.9)["vm"] == "vm1"


def test_token_files_are_private_and_do_not_hold_the_token(store):
    token, _ = store.issue("vm1", "10.0.0.5", 5900)
    assert stat.S_IMODE(os.stat(store.directory).st_mode) == 0o700
    (name,) = os.listdir(store.directory)
    path = os.path.join(store.directory, name)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert name == hashlib.sha256(token.encode()).hexdigest() + ".json"
    with open(path) as fh:
        text = fh.read()
    assert token not in text
    assert json.loads(text)["vm"] == "vm1"


def test_tokens_are_per_vm_and_unguessable(store):
    t1, _ = store.issue("vm1", "10.0.0.5", 5900)
    t2, _ = store.issue("vm2", "10.0.0.6", 5900)
    assert t1 != t2 and len(t1) >= 40
    assert store.consume(t2)["vm"] == "vm2"
    assert store.consume(t1)["vm"] == "vm1"


@pytest.mark.parametrize("token", ["", "short", "../../etc/passwd" + "x" * 20, "a" * 200, None, 42,
                                   "with space and more than sixteen"])
def test_malformed_tokens_are_refused(store, token):
    store.issue("vm1", "10.0.0.5", 5900)
    assert store.consume(token) is None
    assert len(os.listdir(store.directory)) == 1


def _race(directory, token, barrier, results):
    barrier.wait()
    results.put(TokenStore(directory).consume(token) is not None)


def test_concurrent_connections_claim_a_token_once(store):
    # websockify forks per connection: two connections with one token must not both get in.
    token, _ = store.issue("vm1", "10.0.0.5", 5900)
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(8), ctx.Queue()
    procs = [ctx.Process(target=_race, args=(store.directory, token, barrier, results)) for _ in range(8)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(10)
    wins = [results.get(timeout=5) for _ in procs]
    assert wins.count(True) == 1


def test_purge_and_pending(store):
    store.issue("new", "10.0.0.5", 5901, ttl=300, hypervisor="hv2")
    store.issue("old", "10.0.0.5", 5900, ttl=10, now=time.time() - 60)
    stale = os.path.join(store.directory, "deadbeef.json.claimed-1-x")
    open(stale, "w").close()
    os.utime(stale, (time.time() - 120, time.time() - 120))
    pending = store.pending()
    assert [(p["vm"], p["hypervisor"]) for p in pending] == [("new", "hv2")]
    assert "token" not in pending[0]
    assert store.purge() == 2
    assert len(os.listdir(store.directory)) == 1
    store.issue("old", "10.0.0.5", 5900, ttl=10, now=time.time() - 60)
    store.issue("newer", "10.0.0.5", 5902)  # issuing purges expired tokens too
    assert sorted(p["vm"] for p in store.pending()) == ["new", "newer"]
    assert len(os.listdir(store.directory)) == 2


@pytest.mark.parametrize("kwargs, message", [
    ({"ttl": 0}, "at least 1 second"),
    ({"target_port": -1}, "is the VM running"),
    ({"target_port": "x"}, "must be integers"),
    ({"target_host": ""}, "no VNC host"),
])
def test_issue_checks_its_arguments(store, kwargs, message):
    args = dict(vm="vm1", target_host="10.0.0.5", target_port=5900, ttl=300)
    args.update(kwargs)
    with pytest.raises(InvalidArgument, match=message):
        store.issue(**args)


def test_plugin_looks_up_once(tmp_path):
    store = TokenStore(tmp_path)
    token, _ = store.issue("vm1", "127.0.0.2", 5900)
    plugin = TokenPlugin(str(tmp_path))
    assert plugin.lookup(token) == ["127.0.0.2", "5900"]
    assert plugin.lookup(token) is None
    assert plugin.lookup("unknown-token-unknown-token") is None


# --------------------------------------------------------------------------- reachability


@pytest.mark.parametrize("listen, address, expected", [
    ("127.0.0.1", "hyper1.example.com", ("hyper1.example.com", True)),
    ("::1", "hyper1.example.com", ("hyper1.example.com", True)),
    ("0.0.0.0", "hyper1.example.com", ("hyper1.example.com", False)),
    (None, "hyper1.example.com", ("hyper1.example.com", False)),
    ("10.1.2.3", "hyper1.example.com", ("10.1.2.3", False)),
    # the lab: each hypervisor's own loopback address is its address
    ("127.0.0.2", "127.0.0.2", ("127.0.0.2", False)),
])
def test_reach(listen, address, expected):
    assert console.reach(listen, address) == expected


def test_tunnel_command():
    ssh, viewer = console.tunnel_command("127.0.0.1", 5903, "hyper1.example.com", 5901)
    assert ssh == "ssh -N -L 5901:127.0.0.1:5903 hyper1.example.com"
    assert viewer == "vncviewer localhost:5901"
    ssh, _ = console.tunnel_command("0.0.0.0", 5900, "hyper1", 5999, user="admin")
    assert ssh == "ssh -N -L 5999:127.0.0.1:5900 admin@hyper1"
    ssh, _ = console.tunnel_command("::1", 5900, "hyper1")
    assert "5901:[::1]:5900" in ssh


def test_gen_password():
    passwords = {console.gen_password() for _ in range(50)}
    assert len(passwords) == 50
    for pw in passwords:
        assert len(pw) == 8 and pw.isalnum()
        Graphics(password=pw).check()  # the domain model accepts it
    with pytest.raises(InvalidArgument):
        console.gen_password(9)


class FakeDom:
    def __init__(self, xml):
        self.xml = xml
        self.flags = []

    def XMLDesc(self, flags):
        self.flags.append(flags)
        return self.xml


def test_secure_graphics_asks_libvirt_for_passwords():
    xml = Domain("d1", graphics=[Graphics(password="hunter22"), Graphics(port=5999)]).to_xml()
    dom = FakeDom(xml)
    secure = console.secure_graphics(dom)
    assert dom.flags == [console.VIR_DOMAIN_XML_SECURE]
    info = console.console_graphics(Domain.from_xml(xml).to_info()["graphics"], "hv1", secure)
    assert [g["password_set"] for g in info] == [True, False]
    assert all("password" not in g and g["host"] == "hv1" and g["local_only"] for g in info)


def test_web_url_keeps_the_token_in_the_fragment():
    url = console.web_url("http://127.0.0.1:6080", "tok_en-123")
    parsed = urllib.parse.urlsplit(url)
    assert parsed.path == "/vnc.html" and parsed.query == ""
    params = dict(p.split("=", 1) for p in parsed.fragment.split("&"))
    assert urllib.parse.unquote(params["path"]) == "websockify?token=tok_en-123"
    assert params["autoconnect"] == "true" and params["reconnect"] == "false"
    assert console.default_base_url("0.0.0.0", 6080, fqdn="salt.example.com") == "http://salt.example.com:6080/"
    assert console.default_base_url("::1", 6080) == "http://[::1]:6080/"


# --------------------------------------------------------------------------- proxy daemon


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ws_connect(port, path):
    """A minimal WebSocket client: ``(socket, status line, bytes after the headers)``."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return sock, head.split(b"\r\n", 1)[0].decode(errors="replace"), rest


def _ws_payload(sock, rest):
    data = rest
    while len(data) < 2:
        data += sock.recv(4096)
    length = data[1] & 0x7F
    offset = 2
    if length == 126:
        length, offset = struct.unpack("!H", data[2:4])[0], 4
    while len(data) < offset + length:
        data += sock.recv(4096)
    return data[offset:offset + length]


@pytest.fixture
def fake_vnc():
    """A TCP server that greets every client like a VNC server does."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(5)

    def serve():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conn.sendall(b"RFB 003.008\n")
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    yield server.getsockname()[1]
    server.close()


@pytest.fixture
def proxy(tmp_path):
    proxy = Proxy(tmp_path / "console", listen="127.0.0.1", port=_free_port())
    yield proxy
    proxy.stop()


def test_proxy_serves_novnc_and_proxies_a_token_once(proxy, fake_vnc):
    status = proxy.ensure()
    assert status["running"] and status["started"] is True
    assert proxy.ensure()["started"] is False  # same configuration: left running
    assert stat.S_IMODE(os.stat(proxy.state_dir).st_mode) == 0o700
    base = f"http://127.0.0.1:{proxy.port}/"
    with urllib.request.urlopen(base + "vnc.html", timeout=5) as resp:
        assert resp.status == 200 and b"noVNC" in resp.read()
    with pytest.raises(urllib.error.HTTPError):  # --file-only: no directory listings
        urllib.request.urlopen(base + "core/", timeout=5)

    token, _ = proxy.tokens.issue("vm1", "127.0.0.1", fake_vnc, ttl=60)
    sock, status_line, rest = _ws_connect(proxy.port, f"/websockify?token={token}")
    with sock:
        assert " 101 " in status_line
        assert _ws_payload(sock, rest) == b"RFB 003.008\n"  # the VNC greeting came through
    for path in (f"/websockify?token={token}", "/websockify", "/websockify?token=" + "x" * 43):
        sock, status_line, _ = _ws_connect(proxy.port, path)
        sock.close()
        assert " 101 " not in status_line, path
    with open(proxy.log_file) as fh:
        log = fh.read()
    assert "token for VM vm1" in log and "refused a WebSocket" in log


def test_proxy_restarts_on_new_config_and_stops(proxy, tmp_path):
    first = proxy.ensure()["pid"]
    moved = Proxy(proxy.state_dir, listen="127.0.0.1", port=_free_port())
    status = moved.ensure()
    assert status["started"] is True and status["pid"] != first
    assert not os.path.exists(f"/proc/{first}") or open(f"/proc/{first}/stat").read().split()[2] == "Z"
    assert moved.stop() is True
    assert moved.status()["running"] is False
    assert moved.stop() is False


def test_proxy_refuses_a_busy_port(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        proxy = Proxy(tmp_path / "console", listen="127.0.0.1", port=busy.getsockname()[1])
        with pytest.raises(VirtError, match="already in use"):
            proxy.ensure()


def test_proxy_needs_novnc(tmp_path):
    proxy = Proxy(tmp_path / "console", port=_free_port(), web=str(tmp_path / "nowhere"))
    with pytest.raises(VirtError, match="apt-get install novnc"):
        proxy.ensure()
    with pytest.raises(InvalidArgument):
        Proxy(tmp_path, port=70000)


# --------------------------------------------------------------------------- authenticated by default


@pytest.mark.parametrize("requested, policy, expected", [
    (None, None, True),             # no password asked for: one is generated
    ("", "generate", True),
    (True, "none", True),           # asked to generate: always
    ("s3cret12", None, "s3cret12"),
    (None, "none", None),           # the operator turned generation off
    (False, "none", None),
    ("none", "NONE", None),
])
def test_console_password_policy(requested, policy, expected):
    assert console.console_password(requested, policy) == expected


def test_console_without_password_needs_the_operator():
    with pytest.raises(InvalidArgument, match="open to anyone who reaches its port.*virt:vnc:password: none"):
        console.console_password(False, "generate")
    with pytest.raises(InvalidArgument, match="virt:vnc:password is 'sometimes'"):
        console.console_password(None, "sometimes")
    with pytest.raises(InvalidArgument, match="1 to 8 characters, got 9"):
        console.console_password("123456789", None)


def _self_signed(tmp_path):
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "proxy.pem", tmp_path / "proxy.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    os.chmod(key_path, 0o600)
    return str(cert_path), str(key_path)


def test_proxy_beyond_loopback_needs_tls(tmp_path):
    with pytest.raises(InvalidArgument,
                       match=r"virt:console:listen is 10\.0\.0\.5, not loopback: set virt:console:cert"):
        Proxy(tmp_path, listen="10.0.0.5")
    with pytest.raises(InvalidArgument, match="not loopback"):
        Proxy(tmp_path, listen="0.0.0.0")
    with pytest.raises(InvalidArgument, match="needs both cert and key"):
        Proxy(tmp_path, listen="10.0.0.5", cert="/etc/hostname")
    with pytest.raises(InvalidArgument, match="is not an existing absolute file path"):
        Proxy(tmp_path, listen="10.0.0.5", cert="/nonexistent.pem", key="/nonexistent.key")
    cert, key = _self_signed(tmp_path)
    exposed = Proxy(tmp_path, listen="10.0.0.5", cert=cert, key=key)
    assert exposed.tls and exposed.argv()[-4:] == ["--key", key, "--ssl-only", "10.0.0.5:6080"]
    assert console.default_base_url("10.0.0.5", 6080, tls=True) == "https://10.0.0.5:6080/"
    assert not Proxy(tmp_path).tls and "--ssl-only" not in Proxy(tmp_path).argv()


def test_proxy_with_a_certificate_serves_https_only(tmp_path):
    import ssl

    cert, key = _self_signed(tmp_path)
    proxy = Proxy(tmp_path / "console", listen="127.0.0.1", port=_free_port(), cert=cert, key=key)
    try:
        proxy.ensure()
        context = ssl.create_default_context(cafile=cert)
        with urllib.request.urlopen(f"https://127.0.0.1:{proxy.port}/vnc.html", context=context, timeout=10) as page:
            assert page.status == 200 and b"noVNC" in page.read()
        with pytest.raises((OSError, urllib.error.URLError)):
            urllib.request.urlopen(f"http://127.0.0.1:{proxy.port}/vnc.html", timeout=10).read()
    finally:
        proxy.stop()
