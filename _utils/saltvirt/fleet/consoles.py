"""A VM's console as the master hands it out: an SSH tunnel command and a one-time web URL.

Secrets (the VNC password, the URL's token) are returned separately (:class:`ConsoleAccess`
``secrets``) so that the runner can print them on its caller's terminal only; the VNC
password travels from the hypervisor sealed to a one-time key of the asking process.
"""

import os
from dataclasses import dataclass, field

from saltvirt import console as vconsole
from saltvirt.errors import InvalidArgument, VirtError
from saltvirt.pki import sealed

SHOWN = "shown on the terminal of the salt-run that asked, only"


def proxy_from(fleet):
    try:
        return vconsole.Proxy(
            os.path.join(fleet.opts["cachedir"], "saltvirt", "console"),
            listen=fleet.conf("console:listen", vconsole.DEFAULT_LISTEN),
            port=fleet.conf("console:port", vconsole.DEFAULT_PORT),
            web=fleet.conf("console:web", vconsole.DEFAULT_WEB),
            cert=fleet.conf("console:cert"),
            key=fleet.conf("console:key"),
        )
    except InvalidArgument as exc:
        raise InvalidArgument(f"master config virt:console: {exc}") from exc


def proxy_action(proxy, action):
    """``status``, ``start``, ``restart`` or ``stop`` the web console proxy."""
    actions = {
        "status": proxy.status,
        "start": proxy.ensure,
        "restart": lambda: (proxy.stop(), proxy.ensure())[1],
        "stop": lambda: {"stopped": proxy.stop()},
    }
    if action not in actions:
        raise InvalidArgument(f"unknown action {action!r} (status, start, restart or stop)")
    try:
        return actions[action]()
    except VirtError as exc:
        raise VirtError(f"console proxy: {exc}") from exc


def web_console(fleet, proxy, name, hypervisor, gfx, ttl):
    """Start the proxy if needed and issue a one-time URL for ``gfx`` of VM ``name``:
    ``(public part, secret URL or None)``."""
    if gfx["local_only"]:
        return {"error": (f"the console of {name} listens on {gfx['listen']}, the loopback of {hypervisor}, "
                          f"which the master cannot reach: use the SSH tunnel, or set virt:vnc:listen on "
                          f"{hypervisor} to an address the master reaches")}, None
    try:
        proxy.ensure()
        token, expires = proxy.tokens.issue(name, gfx["host"], gfx["port"], ttl=ttl, hypervisor=hypervisor)
    except VirtError as exc:
        raise VirtError(f"web console of {name}: {exc}") from exc
    base = fleet.conf("console:url") or vconsole.default_base_url(proxy.listen, proxy.port, tls=proxy.tls)
    public = {"url": SHOWN, "expires": vconsole.iso_time(expires), "ttl": int(ttl),
              "note": "works once, for this VM only; run virt.console again for a new URL"}
    return public, vconsole.web_url(base, token)


def vnc_password(fleet, name, hypervisor):
    """The VNC password of ``name``, asked sealed to a one-time key of this process: the job's
    return on the bus and in the job cache is ciphertext."""
    private, public = sealed.recipient()
    graphics = fleet.call(hypervisor, "virt.get_graphics", [name], {"show_password": True, "seal_to": public})
    box = next((g.get("password_sealed") for g in graphics if g.get("type") == "vnc"), None)
    if not box:
        raise VirtError(f"VM {name} on {hypervisor} has no VNC password")
    try:
        return sealed.unseal(private, box)
    except InvalidArgument as exc:
        raise VirtError(f"VNC password of {name}: {exc}") from exc


@dataclass
class ConsoleAccess:
    result: dict
    secrets: list = field(default_factory=list)  # [(label, value)]: for the caller's eyes only

    def withhold(self, note):
        """Replace every secret's placeholder by ``note`` (the caller cannot be shown them)."""
        if "password" in self.result:
            self.result["password"] = note
        if "url" in self.result.get("web", {}):
            self.result["web"]["url"] = note


def _vnc_of(info, name):
    hypervisor = info["host"]
    vnc = [g for g in info.get("graphics") or [] if g.get("type") == "vnc"]
    if not vnc:
        raise VirtError(f"VM {name} on {hypervisor} has no VNC console (create it with enable_vnc=True)")
    gfx = vnc[0]
    if info.get("state") != "running" or int(gfx.get("port") or -1) < 1:
        raise VirtError(f"VM {name} on {hypervisor} is {info.get('state')}: its console has no port "
                        f"until it runs (salt-run virt.start {name})")
    return hypervisor, gfx


def console_access(fleet, name, host=None, local_port=5901, web=True, ttl=None, show_password=False):
    """How to open the VNC console of VM ``name`` (see the runner's ``virt.console``)."""
    try:
        local_port = int(local_port)
    except (TypeError, ValueError):
        raise InvalidArgument(f"local_port must be a port number, not {local_port!r}") from None
    if not 1 <= local_port <= 65535:
        raise InvalidArgument(f"local_port {local_port} is not a TCP port")
    info = fleet.vm_call(name, "virt.console_info", host=host)
    hypervisor, gfx = _vnc_of(info, name)
    ssh, viewer = vconsole.tunnel_command(gfx["listen"], gfx["port"], info["address"], local_port)
    access = ConsoleAccess({
        "name": name, "hypervisor": hypervisor, "type": "vnc", "host": gfx["host"], "port": gfx["port"],
        "listen": gfx["listen"], "local_only": gfx["local_only"], "password_set": gfx["password_set"],
        "vncviewer": {"tunnel": ssh, "viewer": viewer},
    })
    if not gfx["local_only"]:
        access.result["vncviewer"]["direct"] = f"vncviewer {gfx['host']}::{gfx['port']}"
    password = vnc_password(fleet, name, hypervisor) if gfx["password_set"] and (show_password or web) else None
    if show_password and password:
        access.secrets.append(("VNC password", password))
        access.result["password"] = SHOWN
    if web:
        ttl = ttl if ttl is not None else fleet.conf("console:token_ttl", vconsole.DEFAULT_TTL)
        access.result["web"], url = web_console(fleet, proxy_from(fleet), name, hypervisor, gfx, ttl)
        if url and password:
            url += "&password=" + password  # the fragment: noVNC reads it, no server sees it
        if url:
            access.secrets.append(("web console URL", url))
    return access
