"""VNC consoles: where a console is reached, one-time web console tokens, the websockify proxy.

Three parts, all plain Python (no Salt, no libvirt import):

* :func:`reach`, :func:`tunnel_command`, :func:`gen_password`, :func:`secure_graphics`: the
  hypervisor side: which address a VNC console is reached at, how to tunnel to it, and whether
  it has a password (libvirt only shows passwords in ``VIR_DOMAIN_XML_SECURE`` XML).
* :class:`TokenStore` and :class:`TokenPlugin`: one-time, expiring tokens for the web console.
  The store is a directory (mode 0700) of one JSON file per token (mode 0600) named after the
  token's SHA-256, so the directory never holds a usable token.  The plugin is what websockify
  loads with ``--token-plugin saltvirt.console.TokenPlugin --token-source DIR``; websockify
  forks per connection, so a token is claimed with an atomic ``rename``: exactly one
  connection wins it, even when two arrive together.
* :class:`Proxy`: starts, checks and stops the websockify daemon (noVNC pages + WebSocket to
  VNC proxy) that the master runs for the web console.
"""

import datetime
import hashlib
import ipaddress
import json
import logging
import os
import re
import secrets
import shlex
import signal
import socket
import string
import subprocess
import sys
import time
import urllib.parse

from saltvirt import fileio
from saltvirt.domain import model as dommod
from saltvirt.errors import InvalidArgument, VirtError

log = logging.getLogger(__name__)

DEFAULT_TTL = 300
DEFAULT_LISTEN = "127.0.0.1"
DEFAULT_PORT = 6080
DEFAULT_WEB = "/usr/share/novnc"
VIR_DOMAIN_XML_SECURE = 1  # libvirt's flag value; libvirt itself is not imported here
WILDCARDS = ("", "0.0.0.0", "::", "[::]")  # noqa: S104 (recognised in order to refuse them)
PASSWORD_CHARS = string.ascii_letters + string.digits
VNC_PASSWORD_MAX = 8  # the VNC authentication scheme uses 8 characters at most
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{16,128}$")
_RECORD = ".json"
_CLAIMED = ".claimed"


# --------------------------------------------------------------------------- hypervisor side


def is_loopback(address):
    if address in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(str(address).strip("[]")).is_loopback
    except ValueError:
        return False


def reach(listen, address):
    """Where a console listening on ``listen`` is reached from other machines.

    Returns ``(host, local_only)``: ``host`` is the address to give out (``address``, the
    hypervisor's own reachable address, for a wildcard or loopback listen; ``listen`` for a
    specific other address); ``local_only`` is True when the console only listens on the
    hypervisor's loopback, so other machines need an SSH tunnel to reach it.
    """
    listen = None if listen is None else str(listen)
    if listen in (None,) + WILDCARDS:
        return address, False
    if listen == address:
        return address, False
    if is_loopback(listen):
        return address, True
    return listen, False


def tunnel_command(listen, port, address, local_port=5901, user=None):
    """``(ssh command, viewer command)`` reaching a console through an SSH tunnel."""
    inner = "127.0.0.1" if listen in (None,) + WILDCARDS else str(listen)
    if ":" in inner:
        inner = f"[{inner.strip('[]')}]"
    target = f"{user}@{address}" if user else str(address)
    ssh = f"ssh -N -L {int(local_port)}:{inner}:{int(port)} {shlex.quote(target)}"
    return ssh, f"vncviewer localhost:{int(local_port)}"


#: ``virt:vnc:password`` on a hypervisor: ``generate`` (default) gives every new console a
#: password unless the call sets one; ``none`` leaves consoles without one unless asked.
PASSWORD_POLICIES = ("generate", "none")


def console_password(requested, policy=None):
    """The password a new console gets: ``True`` (generate one), ``None`` (none) or the text.

    ``requested`` is the call's ``graphics: {password: ...}`` (``None`` when not given);
    ``policy`` the hypervisor's ``virt:vnc:password``. A console without a password is open to
    anyone who reaches its port, so only the operator's policy can ask for that.
    """
    policy = "generate" if policy in (None, "") else str(policy).lower()
    if policy not in PASSWORD_POLICIES:
        raise InvalidArgument(f"virt:vnc:password is {policy!r}: use 'generate' (the default) or 'none'")
    if requested is True:
        return True
    if requested is False or (isinstance(requested, str) and requested.lower() == "none"):
        if policy == "none":
            return None
        raise InvalidArgument(
            "a console without a password is open to anyone who reaches its port: drop "
            "password: False, or have the operator set virt:vnc:password: none on the hypervisor"
        )
    if requested in (None, ""):
        return True if policy == "generate" else None
    text = str(requested)
    if not 0 < len(text) <= VNC_PASSWORD_MAX:
        raise InvalidArgument(f"a VNC password has 1 to {VNC_PASSWORD_MAX} characters, got {len(text)}")
    return text


def gen_password(length=VNC_PASSWORD_MAX):
    """A random VNC password (letters and digits; VNC uses at most 8 characters)."""
    if not 1 <= int(length) <= VNC_PASSWORD_MAX:
        raise InvalidArgument(f"a VNC password has 1 to {VNC_PASSWORD_MAX} characters")
    return "".join(secrets.choice(PASSWORD_CHARS) for _ in range(int(length)))


def secure_graphics(dom):
    """The graphics devices of a libvirt domain, passwords included (needs a read-write
    connection).  Callers report only ``bool(g.password)``."""
    return dommod.Domain.from_xml(dom.XMLDesc(VIR_DOMAIN_XML_SECURE)).graphics


def console_graphics(graphics, address, secure=None):
    """Inventory dicts of graphics (from :meth:`Domain.to_info`) with ``host``/``local_only``
    from :func:`reach` and, given the ``secure`` graphics, a truthful ``password_set``."""
    result = []
    for index, gfx in enumerate(graphics):
        gfx = dict(gfx)
        gfx["host"], gfx["local_only"] = reach(gfx.get("listen"), address)
        if secure is not None and index < len(secure):
            gfx["password_set"] = bool(secure[index].password)
        gfx.pop("password", None)
        result.append(gfx)
    return result


# --------------------------------------------------------------------------- tokens


def _digest(token):
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def iso_time(timestamp):
    return datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc).isoformat(timespec="seconds")


class TokenStore:
    """One-time, expiring tokens, each bound to one VM's VNC ``host:port``."""

    def __init__(self, directory):
        self.directory = str(directory)

    def _ensure_dir(self):
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        os.chmod(self.directory, 0o700)

    def _path(self, token):
        return os.path.join(self.directory, _digest(token) + _RECORD)

    def issue(self, vm, target_host, target_port, ttl=DEFAULT_TTL, hypervisor=None, now=None):
        """Store a new token for ``vm`` at ``target_host:target_port``; return ``(token, expires)``.

        ``expires`` is a UNIX time; the token works once, before then.
        """
        try:
            ttl = int(ttl)
            target_port = int(target_port)
        except (TypeError, ValueError):
            raise InvalidArgument(f"ttl and port must be integers (got {ttl!r}, {target_port!r})") from None
        if ttl < 1:
            raise InvalidArgument(f"token ttl must be at least 1 second, not {ttl}")
        if not 1 <= target_port <= 65535:
            raise InvalidArgument(f"{vm}: VNC port {target_port} is not a TCP port (is the VM running?)")
        if not target_host:
            raise InvalidArgument(f"{vm}: no VNC host to connect to")
        now = time.time() if now is None else now
        self._ensure_dir()
        self.purge(now)
        token = secrets.token_urlsafe(32)
        record = {
            "vm": vm,
            "hypervisor": hypervisor,
            "host": str(target_host),
            "port": target_port,
            "issued": now,
            "expires": now + ttl,
        }
        fileio.write_json(self._path(token), record)
        return token, record["expires"]

    def consume(self, token, now=None):
        """The record of ``token`` if it is valid, unused and not expired, else None.

        Either way the token cannot be used again: the first caller claims (renames) its file,
        every later or concurrent caller finds nothing.
        """
        if not isinstance(token, str) or not _TOKEN_RE.match(token):
            return None
        path = self._path(token)
        claimed = f"{path}{_CLAIMED}-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            os.rename(path, claimed)
        except FileNotFoundError:
            return None  # unknown, used already, or purged after expiry
        try:
            with open(claimed) as fh:
                record = json.load(fh)
        except (OSError, ValueError):
            return None
        finally:
            _unlink(claimed)
        now = time.time() if now is None else now
        if now >= float(record.get("expires", 0)):
            log.info("console token for %s expired %.0fs ago", record.get("vm"), now - record["expires"])
            return None
        return record

    def purge(self, now=None):
        """Delete expired tokens and leftovers; return how many files were removed."""
        now = time.time() if now is None else now
        removed = 0
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return 0
        for name in names:
            path = os.path.join(self.directory, name)
            if name.endswith(_RECORD):
                try:
                    with open(path) as fh:
                        expired = now >= float(json.load(fh).get("expires", 0))
                except FileNotFoundError:
                    continue
                except (OSError, ValueError):
                    expired = True
            else:
                # claimed or half-written files left by a crash: gone after a minute
                try:
                    expired = now - os.stat(path).st_mtime > 60
                except FileNotFoundError:
                    continue
            if expired and _unlink(path):
                removed += 1
        return removed

    def pending(self, now=None):
        """``[{vm, hypervisor, expires}]`` of tokens still usable (never the tokens)."""
        now = time.time() if now is None else now
        result = []
        try:
            names = sorted(os.listdir(self.directory))
        except FileNotFoundError:
            return result
        for name in names:
            if not name.endswith(_RECORD):
                continue
            try:
                with open(os.path.join(self.directory, name)) as fh:
                    record = json.load(fh)
            except (OSError, ValueError):
                continue
            if now < float(record.get("expires", 0)):
                result.append({"vm": record.get("vm"), "hypervisor": record.get("hypervisor"),
                               "expires": iso_time(record["expires"])})
        return result


def _unlink(path):
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False


class TokenPlugin:
    """websockify token plugin: ``--token-plugin saltvirt.console.TokenPlugin --token-source DIR``.

    websockify calls ``lookup(token)`` once per WebSocket connection and connects to the
    ``[host, port]`` returned, or refuses the connection on None.
    """

    def __init__(self, src):
        self.source = src
        self.store = TokenStore(src)

    def lookup(self, token):
        record = self.store.consume(token)
        if record is None:
            log.info("console: refused a WebSocket with an unknown, used or expired token")
            return None
        log.info("console: token for VM %s (on %s) -> %s:%s", record["vm"], record.get("hypervisor"),
                    record["host"], record["port"])
        return [record["host"], str(record["port"])]


# --------------------------------------------------------------------------- web URL


def web_url(base, token, page="vnc.html"):
    """The noVNC URL of a token: parameters go in the fragment, which browsers never send to
    the server; only the WebSocket request carries the token."""
    base = base if base.endswith("/") else base + "/"
    params = {
        "autoconnect": "true",
        "reconnect": "false",  # a token works once: reconnecting could only fail
        "resize": "scale",
        "path": f"websockify?token={token}",
    }
    # noVNC 1.3's fragment parser splits on '&' and decodes each value: encode everything.
    fragment = "&".join(f"{k}={urllib.parse.quote(v, safe='')}" for k, v in params.items())
    return f"{base}{page}#{fragment}"


def default_base_url(listen, port, fqdn=None, tls=False):
    host = listen
    if listen in WILDCARDS:
        host = fqdn or socket.getfqdn()
    if ":" in host:
        host = f"[{host.strip('[]')}]"
    return f"{'https' if tls else 'http'}://{host}:{int(port)}/"


# --------------------------------------------------------------------------- proxy daemon


class Proxy:
    """The websockify daemon serving noVNC and proxying WebSockets to VNC consoles.

    ``state_dir`` (mode 0700) holds ``tokens/``, ``proxy.json`` (pid and command line of the
    running daemon) and ``proxy.log``.
    """

    def __init__(self, state_dir, listen=DEFAULT_LISTEN, port=DEFAULT_PORT, web=DEFAULT_WEB,
                 python=None, pythonpath=None, cert=None, key=None):
        self.state_dir = str(state_dir)
        self.listen = str(listen or DEFAULT_LISTEN)
        # Beyond loopback the proxy speaks https/wss only: a console URL, its token and the
        # password in its fragment must not cross a network in clear text.
        self.cert, self.key = (str(cert) if cert else None), (str(key) if key else None)
        if bool(self.cert) != bool(self.key):
            raise InvalidArgument("virt:console needs both cert and key (PEM files) for https, or neither")
        if not self.cert and not is_loopback(self.listen):
            raise InvalidArgument(
                f"virt:console:listen is {self.listen}, not loopback: set virt:console:cert and "
                "virt:console:key (PEM files) so that the proxy serves https/wss only, or keep it "
                "on 127.0.0.1 and reach it through an SSH tunnel or a TLS reverse proxy"
            )
        for path in filter(None, (self.cert, self.key)):
            if not os.path.isabs(path) or not os.path.isfile(path):
                raise InvalidArgument(f"virt:console: {path!r} is not an existing absolute file path")
        try:
            self.port = int(port)
        except (TypeError, ValueError):
            raise InvalidArgument(f"console proxy port must be an integer, not {port!r}") from None
        if not 1 <= self.port <= 65535:
            raise InvalidArgument(f"console proxy port {self.port} is not a TCP port")
        self.web = str(web or DEFAULT_WEB)
        self.python = python or sys.executable
        # Where websockify imports this module from (the _utils directory holding saltvirt).
        self.pythonpath = pythonpath or os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        self.token_dir = os.path.join(self.state_dir, "tokens")
        self.state_file = os.path.join(self.state_dir, "proxy.json")
        self.log_file = os.path.join(self.state_dir, "proxy.log")

    @property
    def tokens(self):
        return TokenStore(self.token_dir)

    def argv(self):
        listen = f"[{self.listen}]" if ":" in self.listen else self.listen
        return [
            self.python, "-m", "websockify",
            "--web", self.web,
            "--file-only",  # no directory listings
            "--token-plugin", f"{__name__}.TokenPlugin",
            "--token-source", self.token_dir,
            *(["--cert", self.cert, "--key", self.key, "--ssl-only"] if self.cert else []),
            f"{listen}:{self.port}",
        ]

    @property
    def tls(self):
        return bool(self.cert)

    # ------------------------------------------------------------------ state

    def _read_state(self):
        try:
            with open(self.state_file) as fh:
                return json.load(fh)
        except (OSError, ValueError):
            return {}

    def _alive(self, state):
        """True if the pid in ``state`` is a live (not zombie) websockify with our argv."""
        pid = state.get("pid")
        if not isinstance(pid, int) or pid <= 0:
            return False
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmdline = [a.decode(errors="replace") for a in fh.read().split(b"\0") if a]
            with open(f"/proc/{pid}/stat") as fh:
                zombie = fh.read().rsplit(")", 1)[1].split()[0] == "Z"
        except (OSError, IndexError):
            return False
        if zombie:
            _reap(pid)
            return False
        return cmdline == state.get("argv")

    def status(self):
        """``{running, pid, listen, port, url, pending_tokens}``."""
        state = self._read_state()
        running = self._alive(state)
        return {
            "running": running,
            "pid": state.get("pid") if running else None,
            "listen": state.get("listen", self.listen) if running else self.listen,
            "port": state.get("port", self.port) if running else self.port,
            "log": self.log_file,
            "pending_tokens": len(self.tokens.pending()),
        }

    # ------------------------------------------------------------------ start / stop

    def check_requirements(self):
        index = os.path.join(self.web, "vnc.html")
        if not os.path.isfile(index):
            raise VirtError(f"noVNC is not installed: {index} is missing (apt-get install novnc, "
                            f"or set virt:console:web to a noVNC directory)")
        probe = subprocess.run([self.python, "-c", "import websockify.websocketproxy"],  # noqa: S603 (fixed argv)
                               capture_output=True, text=True, timeout=60)
        if probe.returncode != 0:
            raise VirtError(f"websockify is not importable by {self.python} "
                            f"(pip install websockify): {probe.stderr.strip().splitlines()[-1:]}")

    def ensure(self, timeout=15):
        """Start the daemon unless the same configuration already runs; return :meth:`status`.

        A daemon running with another configuration (listen, port, web) is restarted.
        """
        state = self._read_state()
        if self._alive(state):
            if state.get("argv") == self.argv():
                return dict(self.status(), started=False)
            self._terminate(state["pid"])
        self.start(timeout)
        return dict(self.status(), started=True)

    def start(self, timeout=15):
        self.check_requirements()
        os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
        os.chmod(self.state_dir, 0o700)
        self.tokens._ensure_dir()
        if _port_open(self.listen, self.port):
            raise VirtError(f"cannot start the console proxy: {self.listen}:{self.port} is already in use "
                            f"(set virt:console:port in the master config)")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (self.pythonpath, env.get("PYTHONPATH")) if p)
        argv = self.argv()
        with open(self.log_file, "ab") as logfh:
            os.chmod(self.log_file, 0o600)
            proc = subprocess.Popen(  # noqa: S603 (argv built by self.argv() from validated settings)
                argv, stdin=subprocess.DEVNULL, stdout=logfh, stderr=subprocess.STDOUT,
                cwd="/", env=env, close_fds=True, start_new_session=True,
            )
        state = {"pid": proc.pid, "argv": argv, "listen": self.listen, "port": self.port,
                 "started": iso_time(time.time())}
        fileio.write_json(self.state_file, state)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise VirtError(f"the console proxy exited with {proc.returncode}: {self._log_tail()}")
            if _port_open(self.listen, self.port):
                return proc.pid
            time.sleep(0.1)
        self._terminate(proc.pid)
        raise VirtError(f"the console proxy did not listen on {self.listen}:{self.port} within "
                        f"{timeout}s: {self._log_tail()}")

    def stop(self):
        """Stop the daemon (and the console sessions it carries); True if one was running."""
        state = self._read_state()
        running = self._alive(state)
        if running:
            self._terminate(state["pid"])
        _unlink(self.state_file)
        return running

    def _terminate(self, pid, timeout=5):
        # start_new_session made the daemon a process group leader: its per-connection
        # children go with it.
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(pid, sig)
            except ProcessLookupError:
                try:
                    os.kill(pid, sig)  # not a group leader after all
                except ProcessLookupError:
                    break
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                _reap(pid)
                if not os.path.exists(f"/proc/{pid}"):
                    return
                time.sleep(0.1)

    def _log_tail(self, lines=5):
        try:
            with open(self.log_file, errors="replace") as fh:
                return " | ".join(fh.read().strip().splitlines()[-lines:]) or "(no output)"
        except OSError:
            return "(no log)"


def _reap(pid):
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _port_open(host, port):
    try:
        with socket.create_connection((host.strip("[]"), port), timeout=0.5):
            return True
    except OSError:
        return False
