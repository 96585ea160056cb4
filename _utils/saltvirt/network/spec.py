"""The network spec: one validated description of a libvirt virtual network.

:meth:`NetworkSpec.from_kwargs` takes the keyword arguments of the classic Salt 3001-3007
``virt.network_define`` / ``virt.network_update`` and of the ``virt.network_defined`` /
``virt.network_running`` states (same names, same value shapes), refuses unknown ones by name,
and checks every value before anything reaches libvirt. :meth:`NetworkSpec.settings` gives the
normalised form that :mod:`saltvirt.network.xml` writes and reads back, so "what the caller
asked for" and "what the network has" compare as plain dicts.
"""

import ipaddress
import re
from dataclasses import dataclass, field

from saltvirt.errors import InvalidArgument
from saltvirt.provision.spec import _FromKwargs, check_name

#: Forward modes of libvirt's network XML; None (or "none"/"isolated") is a network without one.
FORWARD_MODES = ("nat", "route", "open", "bridge", "private", "vepa", "passthrough", "hostdev")
ISOLATED = (None, "", "none", "None", "isolated")
#: Modes in which libvirt creates the bridge itself (and names it when no bridge is given).
OWN_BRIDGE_MODES = (None, "nat", "route", "open")
# Linux interface names: at most 15 bytes, no '/', ':' or whitespace.
DEVICE_RE = re.compile(r"^[A-Za-z0-9_.+-]{1,15}$")
PCI_RE = re.compile(r"^(?:0x)?([0-9a-fA-F]{1,4}):([0-9a-fA-F]{1,2}):([0-9a-fA-F]{1,2})\.([0-7])$")
IP_KEYS = {"cidr", "dhcp_ranges", "hosts", "bootp", "tftp"}
DNS_KEYS = {"forwarders", "txt", "hosts", "srvs"}
SRV_KEYS = {"name", "protocol", "domain", "target", "port", "priority", "weight"}
NATIVE_MODES = ("tagged", "untagged")


@dataclass
class NetworkSpec(_FromKwargs):
    """A virtual network as ``virt.network_define`` takes it (see its docstring per field)."""

    REQUIRED = ("name",)
    ALIASES = {}
    DOC = "virt.network_define"

    name: str
    bridge: str | None = None
    forward: str | None = None
    ipv4_config: dict | None = None
    ipv6_config: dict | None = None
    vport: str | dict | None = None
    tag: int | str | dict | None = None
    autostart: bool = True
    start: bool = True
    mtu: int | None = None
    domain: str | dict | None = None
    nat: dict | None = None
    interfaces: str | list | None = None
    addresses: str | list | None = None
    physical_function: str | None = None
    dns: dict | None = None
    extra: dict = field(default_factory=dict, repr=False)  # set aside: connection arguments

    def __post_init__(self):
        # Every check runs here, so a spec that exists is one libvirt can be given.
        self._settings = _settings(self)

    def settings(self):
        """The normalised settings (the keys of :data:`saltvirt.network.xml.PARTS`)."""
        return {key: _copy(value) for key, value in self._settings.items()}

    @property
    def owns_bridge(self):
        """libvirt makes (and, without ``bridge``, names) the bridge of this network itself."""
        return self._settings["forward"] in OWN_BRIDGE_MODES


def _copy(value):
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _bad(spec, what, value, fix):
    return InvalidArgument(f"network {spec.name}: {what}={value!r} {fix}")


def _settings(spec):
    check_name("network", spec.name)
    forward = _forward(spec)
    out = {
        "bridge": _device(spec, "bridge", spec.bridge),
        "forward": forward,
        "vport": _vport(spec),
        "tag": _tag(spec),
        "ipv4_config": _ip(spec, "ipv4_config", 4),
        "ipv6_config": _ip(spec, "ipv6_config", 6),
        "mtu": _mtu(spec),
        "domain": _domain(spec),
        "nat": _nat(spec, forward),
        "interfaces": _words(spec, "interfaces", spec.interfaces, _device),
        "addresses": _words(spec, "addresses", spec.addresses, _pci),
        "physical_function": _device(spec, "physical_function", spec.physical_function),
        "dns": _dns(spec),
    }
    if forward == "bridge" and not (out["bridge"] or out["interfaces"]):
        raise _bad(spec, "forward", forward, "needs a bridge (an existing host bridge) or interfaces")
    if forward not in ("nat", "route", "open", None) and (out["ipv4_config"] or out["ipv6_config"]):
        raise _bad(spec, "forward", forward, "cannot have ipv4_config/ipv6_config: libvirt serves "
                   "addresses only on nat, route, open or isolated networks")
    if forward in ("nat", "route") and not (out["ipv4_config"] or out["ipv6_config"]):
        raise _bad(spec, "forward", forward, "needs an address range: give ipv4_config (or ipv6_config) "
                   "with a cidr")
    for flag in ("autostart", "start"):
        if not isinstance(getattr(spec, flag), bool):
            raise _bad(spec, flag, getattr(spec, flag), "must be True or False")
    return out


def _forward(spec):
    if spec.forward in ISOLATED:
        return None
    if spec.forward not in FORWARD_MODES:
        raise _bad(spec, "forward", spec.forward,
                   f"is not a libvirt forward mode: use one of {', '.join(FORWARD_MODES)} or None (isolated)")
    return spec.forward


def _device(spec, what, value):
    if value is None or value == "":
        return None
    if isinstance(value, str) and PCI_RE.match(value):
        # The classic documentation's hostdev example wrote PCI addresses under interfaces.
        raise _bad(spec, what, value, "is a PCI address: give PCI devices as addresses")
    if not isinstance(value, str) or not DEVICE_RE.match(value):
        raise _bad(spec, what, value, "is not a host interface name (at most 15 letters, digits or _.+-)")
    return value


def _words(spec, what, value, check):
    """A whitespace-separated string (the classic shape) or a list."""
    if value is None or value == "":
        return []
    items = value.split() if isinstance(value, str) else value
    if not isinstance(items, list):
        raise _bad(spec, what, value, "must be a whitespace-separated string or a list")
    return [check(spec, what, item) for item in items]


def _pci(spec, what, value):
    match = PCI_RE.match(value) if isinstance(value, str) else None
    if not match:
        raise _bad(spec, what, value, "is not a PCI address like 0000:04:00.1")
    domain, bus, slot, function = (int(g, 16) for g in match.groups())
    return f"{domain:04x}:{bus:02x}:{slot:02x}.{function}"


def _vport(spec):
    vport = spec.vport
    if vport in (None, ""):
        return None
    if isinstance(vport, str):
        vport = {"type": vport}
    if not isinstance(vport, dict) or set(vport) - {"type", "parameters"} or not isinstance(vport.get("type"), str):
        raise _bad(spec, "vport", spec.vport, "must be a virtual port type (e.g. openvswitch) or "
                   "{type: ..., parameters: {...}}")
    params = vport.get("parameters") or {}
    if not isinstance(params, dict):
        raise _bad(spec, "vport", spec.vport, "parameters must be a mapping")
    out = {"type": vport["type"]}
    if params:
        out["parameters"] = {str(k): str(v) for k, v in params.items()}
    return out


def _vlan_id(spec, value):
    try:
        tag = int(value)
    except (TypeError, ValueError):
        tag = -1
    if isinstance(value, bool) or not 0 <= tag <= 4095:
        raise _bad(spec, "tag", value, "is not a VLAN id (0-4095)")
    return tag


def _tag(spec):
    tag = spec.tag
    if tag in (None, ""):
        return None
    if not isinstance(tag, dict):
        return {"tags": [{"id": _vlan_id(spec, tag)}]}
    if set(tag) - {"tags", "trunk"} or not isinstance(tag.get("tags"), list) or not tag["tags"]:
        raise _bad(spec, "tag", tag, "must be a VLAN id or {tags: [{id: ..., nativeMode: ...}], trunk: ...}")
    tags = []
    for item in tag["tags"]:
        item = item if isinstance(item, dict) else {"id": item}
        if set(item) - {"id", "nativeMode"}:
            raise _bad(spec, "tag", item, "entries have only id and nativeMode")
        entry = {"id": _vlan_id(spec, item.get("id"))}
        if item.get("nativeMode") is not None:
            if item["nativeMode"] not in NATIVE_MODES:
                raise _bad(spec, "nativeMode", item["nativeMode"], "must be tagged or untagged")
            entry["nativeMode"] = item["nativeMode"]
        tags.append(entry)
    out = {"tags": tags}
    if tag.get("trunk") is not None:
        out["trunk"] = bool(tag["trunk"])
    return out


def _address(spec, what, value, network):
    try:
        addr = ipaddress.ip_address(str(value))
    except ValueError:
        raise _bad(spec, what, value, "is not an IP address") from None
    if network is not None and addr not in network:
        raise _bad(spec, what, value, f"is outside {network}")
    return str(addr)


def _ip(spec, what, version):
    config = getattr(spec, what)
    if config in (None, {}):
        return None
    if not isinstance(config, dict) or set(config) - IP_KEYS or "cidr" not in config:
        unknown = sorted(set(config) - IP_KEYS) if isinstance(config, dict) else []
        raise _bad(spec, what, config, "must be a mapping with cidr and optionally dhcp_ranges, hosts, "
                   f"bootp, tftp{' (unknown: ' + ', '.join(unknown) + ')' if unknown else ''}")
    try:
        iface = ipaddress.ip_interface(str(config["cidr"]))
    except ValueError:
        raise _bad(spec, "cidr", config["cidr"], "is not an address range like 192.168.42.0/24") from None
    if iface.version != version:
        raise _bad(spec, "cidr", config["cidr"], f"is not IPv{version} ({what})")
    net = iface.network
    # Classic: the network's first host is the host's address; an address with host bits
    # (192.168.42.254/24) names the host's address itself.
    if iface.ip == net.network_address:
        hosts = net.hosts()
        address = next(iter(hosts), None)
        if address is None:
            raise _bad(spec, "cidr", config["cidr"], "has no room for the host's own address")
    else:
        address = iface.ip
    out = {"address": str(address), "prefix": net.prefixlen, "dhcp_ranges": [], "hosts": {}}
    for item in config.get("dhcp_ranges") or []:
        if not isinstance(item, dict) or set(item) != {"start", "end"}:
            raise _bad(spec, "dhcp_ranges", item, "entries are {start: ..., end: ...}")
        start = _address(spec, "dhcp_ranges start", item["start"], net)
        end = _address(spec, "dhcp_ranges end", item["end"], net)
        if ipaddress.ip_address(start) > ipaddress.ip_address(end):
            raise _bad(spec, "dhcp_ranges", item, "starts after its end")
        out["dhcp_ranges"].append({"start": start, "end": end})
    out["hosts"] = _dhcp_hosts(spec, config.get("hosts"), net)
    bootp = config.get("bootp")
    if bootp:
        if not isinstance(bootp, dict) or set(bootp) - {"file", "server"} or not bootp.get("file"):
            raise _bad(spec, "bootp", bootp, "must be {file: ..., server: ...} (server optional)")
        out["bootp"] = {"file": str(bootp["file"])}
        if bootp.get("server"):
            out["bootp"]["server"] = _address(spec, "bootp server", bootp["server"], None)
    if config.get("tftp"):
        out["tftp"] = str(config["tftp"])
    return out


def _dhcp_hosts(spec, hosts, net):
    """Fixed DHCP hosts: ``{ip: {mac, id, name}}`` (classic) or ``[{ip, mac, id, name}]``."""
    if not hosts:
        return {}
    if isinstance(hosts, list):
        items = []
        for host in hosts:
            if not isinstance(host, dict) or "ip" not in host:
                raise _bad(spec, "hosts", host, "entries need an ip")
            items.append((host["ip"], {k: v for k, v in host.items() if k != "ip"}))
    elif isinstance(hosts, dict):
        items = list(hosts.items())
    else:
        raise _bad(spec, "hosts", hosts, "must be {ip: {mac: ..., name: ...}} or a list of {ip: ..., ...}")
    out = {}
    for ip, settings in items:
        settings = settings or {}
        if not isinstance(settings, dict) or set(settings) - {"mac", "id", "name"}:
            raise _bad(spec, "hosts", {ip: settings}, "entries have only mac, id and name")
        out[_address(spec, "hosts ip", ip, net)] = {k: str(v) for k, v in settings.items() if v is not None}
    return out


def _mtu(spec):
    if spec.mtu in (None, ""):
        return None
    try:
        mtu = int(spec.mtu)
    except (TypeError, ValueError):
        mtu = 0
    if isinstance(spec.mtu, bool) or not 68 <= mtu <= 65535:
        raise _bad(spec, "mtu", spec.mtu, "must be a number of bytes between 68 and 65535")
    return mtu


def _domain(spec):
    domain = spec.domain
    if domain in (None, ""):
        return None
    if isinstance(domain, str):
        domain = {"name": domain}
    if not isinstance(domain, dict) or set(domain) - {"name", "localOnly"} or not domain.get("name"):
        raise _bad(spec, "domain", spec.domain, "must be a DNS domain name or {name: ..., localOnly: ...}")
    out = {"name": str(domain["name"])}
    if domain.get("localOnly") is not None:
        out["localOnly"] = bool(domain["localOnly"])
    return out


def _range(spec, what, value, convert):
    if not isinstance(value, dict) or set(value) != {"start", "end"}:
        raise _bad(spec, what, value, "must be {start: ..., end: ...}")
    start, end = convert(value["start"]), convert(value["end"])
    if start > end:
        raise _bad(spec, what, value, "starts after its end")
    return {"start": str(start), "end": str(end)}


def _port(spec):
    def convert(value):
        try:
            port = int(value)
        except (TypeError, ValueError):
            port = 0
        if not 1 <= port <= 65535:
            raise _bad(spec, "nat port", value, "is not a port number (1-65535)")
        return port
    return convert


def _nat(spec, forward):
    nat = spec.nat
    if not nat:
        return None
    if forward != "nat":
        raise _bad(spec, "nat", nat, "needs forward: nat")
    if not isinstance(nat, dict) or set(nat) - {"address", "port"}:
        raise _bad(spec, "nat", nat, "must be {address: {start, end}, port: {start, end}}")
    out = {}
    if nat.get("address"):
        def convert(value):
            return ipaddress.IPv4Address(_address(spec, "nat address", value, None))
        out["address"] = _range(spec, "nat address", nat["address"], convert)
    if nat.get("port"):
        rng = _range(spec, "nat port", nat["port"], _port(spec))
        out["port"] = {"start": int(rng["start"]), "end": int(rng["end"])}
    return out or None


def _dns(spec):
    dns = spec.dns
    if not dns:
        return None
    if not isinstance(dns, dict) or set(dns) - DNS_KEYS:
        unknown = sorted(set(dns) - DNS_KEYS) if isinstance(dns, dict) else []
        raise _bad(spec, "dns", dns, f"must be a mapping of {', '.join(sorted(DNS_KEYS))}"
                   + (f" (unknown: {', '.join(unknown)})" if unknown else ""))
    out = {"forwarders": [], "txt": {}, "hosts": {}, "srvs": []}
    for item in dns.get("forwarders") or []:
        if not isinstance(item, dict) or not item or set(item) - {"domain", "addr"}:
            raise _bad(spec, "dns forwarders", item, "entries are {domain: ..., addr: ...} (either or both)")
        entry = {}
        if item.get("domain"):
            entry["domain"] = str(item["domain"])
        if item.get("addr"):
            entry["addr"] = _address(spec, "dns forwarder addr", item["addr"], None)
        out["forwarders"].append(entry)
    txt = dns.get("txt") or {}
    if not isinstance(txt, dict):
        raise _bad(spec, "dns txt", txt, "must be {name: value}")
    out["txt"] = {str(k): str(v) for k, v in txt.items()}
    hosts = dns.get("hosts") or {}
    if not isinstance(hosts, dict):
        raise _bad(spec, "dns hosts", hosts, "must be {ip: [hostname, ...]}")
    for ip, names in hosts.items():
        names = [names] if isinstance(names, str) else names
        if not isinstance(names, list) or not names:
            raise _bad(spec, "dns hosts", {ip: names}, "must list the host names of each ip")
        out["hosts"][_address(spec, "dns hosts ip", ip, None)] = [str(n) for n in names]
    for srv in dns.get("srvs") or []:
        if not isinstance(srv, dict) or set(srv) - SRV_KEYS or not srv.get("name") or not srv.get("protocol"):
            raise _bad(spec, "dns srvs", srv, f"entries need name and protocol (keys: {', '.join(sorted(SRV_KEYS))})")
        out["srvs"].append({k: str(v) for k, v in srv.items() if v is not None})
    return out
