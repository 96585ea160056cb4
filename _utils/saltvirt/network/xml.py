"""Network XML as a view over the parsed document: read, change, write back, lose nothing.

:class:`NetworkXml` reads each setting salt-virt models (the keys of :data:`PARTS`, in the
normalised form of :meth:`saltvirt.network.spec.NetworkSpec.settings`) from a libvirt
``<network>`` and writes one back in place. A change touches only the elements of the settings
that differ, so ``parse -> change -> to_xml`` keeps the uuid, the MAC address, the bridge's
``stp``/``delay``, port groups, routes, bandwidth, metadata and anything else libvirt or an
operator put there. A new network is the same view over ``<network><name/></network>`` with
every setting written.
"""

import ipaddress
import xml.etree.ElementTree as ET  # noqa: S405 (libvirt's own XML, or ours)

from saltvirt.domain.xmlview import NamedXml, XPath
from saltvirt.errors import InvalidArgument

#: Settings modelled here, in the order they are written (forward before what lives in it).
PARTS = ("forward", "bridge", "mtu", "domain", "nat", "interfaces", "addresses", "physical_function",
         "vport", "tag", "dns", "ipv4_config", "ipv6_config")


def _yesno(value):
    return "yes" if value else "no"


def _bool(raw):
    return None if raw is None else raw.strip() in ("yes", "on", "1")


def _replace(parent, old, new):
    """Replace the elements ``old`` of ``parent`` by ``new``, where the first of ``old`` was."""
    index = list(parent).index(old[0]) if old else len(parent)
    for elem in old:
        parent.remove(elem)
    for offset, elem in enumerate(new):
        parent.insert(index + offset, elem)


def _refill(parent, tag, modelled, children, keep_empty=False):
    """Give ``parent``'s ``<tag>`` the modelled ``children`` (tags ``modelled``), keeping its
    attributes and other children; a ``<tag>`` left with nothing at all is removed."""
    elem = parent.find(tag)
    if elem is None:
        if not children:
            return
        elem = _elem(tag)
        parent.append(elem)
    _replace(elem, [c for c in elem if c.tag in modelled], children)
    if not keep_empty and not len(elem) and not elem.attrib and not (elem.text or "").strip():
        parent.remove(elem)


def _elem(tag, attrs=None, **kw):
    elem = ET.Element(tag, {k: str(v) for k, v in (attrs or {}).items() if v is not None})
    for key, value in kw.items():
        if value is not None:
            elem.set(key, str(value))
    return elem


class NetworkXml(NamedXml):
    """A ``<network>``: the settings salt-virt models; everything else is kept as it is."""

    TAG = "network"

    # ------------------------------------------------------------------ reading

    def settings(self):
        """Every modelled setting, normalised like :meth:`NetworkSpec.settings`."""
        return {part: getattr(self, f"_read_{part}")() for part in PARTS}

    def _read_forward(self):
        fwd = self.find("forward")
        # <forward/> without a mode is libvirt's NAT.
        return None if fwd is None else fwd.get("mode", "nat")

    def _read_bridge(self):
        return XPath("bridge", "name").__get__(self)

    def _read_mtu(self):
        return XPath("mtu", "size", int).__get__(self)

    def _read_domain(self):
        dom = self.find("domain")
        if dom is None or not dom.get("name"):
            return None
        out = {"name": dom.get("name")}
        if dom.get("localOnly") is not None:
            out["localOnly"] = _bool(dom.get("localOnly"))
        return out

    def _read_nat(self):
        nat = self.find("forward/nat")
        if nat is None:
            return None
        out = {}
        addr, port = nat.find("address"), nat.find("port")
        if addr is not None:
            out["address"] = {"start": addr.get("start"), "end": addr.get("end") or addr.get("start")}
        if port is not None:
            out["port"] = {"start": int(port.get("start")), "end": int(port.get("end"))}
        return out or None

    def _read_interfaces(self):
        return [i.get("dev") for i in self.element.findall("forward/interface")]

    def _read_addresses(self):
        if self.find("forward/pf") is not None:
            return []  # libvirt lists the VFs of the physical function: not the caller's
        out = []
        for addr in self.element.findall("forward/address"):
            if addr.get("type", "pci") == "pci":
                parts = [int(addr.get(k, "0"), 16) for k in ("domain", "bus", "slot", "function")]
                out.append("{:04x}:{:02x}:{:02x}.{}".format(*parts))
        return out

    def _read_physical_function(self):
        return XPath("forward/pf", "dev").__get__(self)

    def _read_vport(self):
        vport = self.find("virtualport")
        if vport is None:
            return None
        out = {"type": vport.get("type")}
        params = vport.find("parameters")
        if params is not None and params.attrib:
            out["parameters"] = dict(params.attrib)
        return out

    def _read_tag(self):
        vlan = self.find("vlan")
        if vlan is None:
            return None
        tags = []
        for tag in vlan.findall("tag"):
            entry = {"id": int(tag.get("id"))}
            if tag.get("nativeMode"):
                entry["nativeMode"] = tag.get("nativeMode")
            tags.append(entry)
        out = {"tags": tags}
        if vlan.get("trunk") is not None:
            out["trunk"] = _bool(vlan.get("trunk"))
        return out

    def _read_dns(self):
        dns = self.find("dns")
        if dns is None:
            return None
        out = {"forwarders": [], "txt": {}, "hosts": {}, "srvs": []}
        for fwd in dns.findall("forwarder"):
            out["forwarders"].append({k: fwd.get(k) for k in ("domain", "addr") if fwd.get(k)})
        for txt in dns.findall("txt"):
            out["txt"][txt.get("name")] = txt.get("value")
        for host in dns.findall("host"):
            out["hosts"][host.get("ip")] = [(h.text or "").strip() for h in host.findall("hostname")]
        for srv in dns.findall("srv"):
            entry = {"name": srv.get("service"), "protocol": srv.get("protocol")}
            entry.update({k: srv.get(k) for k in ("domain", "target", "port", "priority", "weight")
                          if srv.get(k) is not None})
            out["srvs"].append(entry)
        if not any(out.values()):
            return None
        return out

    def _ips(self, version):
        family = f"ipv{version}"
        return [ip for ip in self.element.findall("ip") if ip.get("family", "ipv4") == family]

    def _read_ip(self, version):
        ips = self._ips(version)
        if not ips:
            return None
        ip = ips[0]  # the classic API has one address per family
        address = ipaddress.ip_address(ip.get("address"))
        out = {"address": str(address), "prefix": self._prefix(ip, version), "dhcp_ranges": [], "hosts": {}}
        dhcp = ip.find("dhcp")
        if dhcp is not None:
            for rng in dhcp.findall("range"):
                out["dhcp_ranges"].append({"start": str(ipaddress.ip_address(rng.get("start"))),
                                           "end": str(ipaddress.ip_address(rng.get("end")))})
            for host in dhcp.findall("host"):
                out["hosts"][str(ipaddress.ip_address(host.get("ip")))] = {
                    k: host.get(k) for k in ("mac", "id", "name") if host.get(k) is not None}
            bootp = dhcp.find("bootp")
            if bootp is not None:
                out["bootp"] = {k: bootp.get(k) for k in ("file", "server") if bootp.get(k)}
        tftp = ip.find("tftp")
        if tftp is not None and tftp.get("root"):
            out["tftp"] = tftp.get("root")
        return out

    def _read_ipv4_config(self):
        return self._read_ip(4)

    def _read_ipv6_config(self):
        return self._read_ip(6)

    # ------------------------------------------------------------------ writing

    def write(self, part, value):
        """Set one modelled setting (None removes it), leaving every other element alone."""
        getattr(self, f"_write_{part}")(value)

    def _write_forward(self, mode):
        fwd = self.find("forward")
        if mode is None:
            if fwd is not None:
                self.element.remove(fwd)
            return
        if fwd is None:
            fwd = _elem("forward")
            self._insert_after(fwd, ("uuid", "name"))
        fwd.set("mode", mode)
        if mode == "hostdev":
            fwd.set("managed", "yes")

    def _forward_children(self, tag, new):
        fwd = self.find("forward")
        if fwd is None:
            if new:
                raise InvalidArgument(f"network {self.name}: <{tag}> needs a forward mode")
            return
        _replace(fwd, fwd.findall(tag), new)

    def _write_bridge(self, name):
        bridge = self.find("bridge")
        if name is None:
            if bridge is not None:
                self.element.remove(bridge)
            return
        if bridge is None:
            bridge = _elem("bridge")
            self._insert_after(bridge, ("forward", "uuid", "name"))
        bridge.set("name", name)

    def _insert_after(self, elem, anchors):
        for anchor in anchors:
            found = self.find(anchor)
            if found is not None:
                self.element.insert(list(self.element).index(found) + 1, elem)
                return
        self.element.append(elem)

    def _set_single(self, tag, elem, anchors):
        old = self.element.findall(tag)
        if old:
            _replace(self.element, old, [elem] if elem is not None else [])
        elif elem is not None:
            self._insert_after(elem, anchors)

    def _write_mtu(self, mtu):
        self._set_single("mtu", None if mtu is None else _elem("mtu", size=mtu), ("bridge", "forward", "name"))

    def _write_domain(self, domain):
        elem = None
        if domain is not None:
            local = domain.get("localOnly")
            elem = _elem("domain", name=domain["name"], localOnly=None if local is None else _yesno(local))
        self._set_single("domain", elem, ("mtu", "bridge", "forward", "name"))

    def _write_nat(self, nat):
        fwd = self.find("forward")
        if fwd is None:
            if nat:
                raise InvalidArgument(f"network {self.name}: nat needs forward: nat")
            return
        children = []
        if nat and nat.get("address"):
            children.append(_elem("address", nat["address"]))
        if nat and nat.get("port"):
            children.append(_elem("port", nat["port"]))
        # <nat ipv6='yes'> and the like stay: only address and port are modelled.
        _refill(fwd, "nat", ("address", "port"), children)

    def _write_interfaces(self, devices):
        self._forward_children("interface", [_elem("interface", dev=dev) for dev in devices or []])

    def _write_addresses(self, addresses):
        new = []
        for addr in addresses or []:
            dom, bus, rest = addr.split(":")
            slot, function = rest.split(".")
            new.append(_elem("address", type="pci", domain=f"0x{dom}", bus=f"0x{bus}", slot=f"0x{slot}",
                             function=f"0x{function}"))
        self._forward_children("address", new)

    def _write_physical_function(self, dev):
        self._forward_children("pf", [_elem("pf", dev=dev)] if dev else [])

    def _write_vport(self, vport):
        if not vport:
            self._set_single("virtualport", None, ())
            return
        self._ensure("virtualport", ("domain", "mtu", "bridge", "forward", "name")).set("type", vport["type"])
        params = [_elem("parameters", vport["parameters"])] if vport.get("parameters") else []
        _refill(self.element, "virtualport", ("parameters",), params, keep_empty=True)

    def _write_tag(self, tag):
        if not tag:
            self._set_single("vlan", None, ())
            return
        vlan = self._ensure("vlan", ("virtualport", "domain", "mtu", "bridge", "forward", "name"))
        vlan.attrib.pop("trunk", None)
        if tag.get("trunk") is not None:
            vlan.set("trunk", _yesno(tag["trunk"]))
        tags = [_elem("tag", entry) for entry in tag["tags"]]
        _refill(self.element, "vlan", ("tag",), tags)

    def _write_dns(self, dns):
        children = []
        if dns:
            self._ensure("dns", ("vlan", "virtualport", "domain", "mtu", "bridge", "forward", "name"))
            for fwd in dns.get("forwarders", []):
                children.append(_elem("forwarder", fwd))
            for name in sorted(dns.get("txt", {})):
                children.append(_elem("txt", name=name, value=dns["txt"][name]))
            for ip in sorted(dns.get("hosts", {})):
                host = _elem("host", ip=ip)
                for hostname in dns["hosts"][ip]:
                    ET.SubElement(host, "hostname").text = hostname
                children.append(host)
            for srv in dns.get("srvs", []):
                attrs = {"service": srv["name"], "protocol": srv["protocol"]}
                attrs.update({k: v for k, v in srv.items() if k not in ("name", "protocol")})
                children.append(_elem("srv", attrs))
        # <dns enable=... forwardPlainNames=...> stays: only its entries are modelled.
        _refill(self.element, "dns", ("forwarder", "txt", "host", "srv"), children)

    def _ensure(self, tag, anchors):
        elem = self.find(tag)
        if elem is None:
            elem = _elem(tag)
            self._insert_after(elem, anchors)
        return elem

    def _write_ip(self, version, config):
        old = self._ips(version)
        if not config:
            for elem in old:
                self.element.remove(elem)
            return
        if old:
            ip = old[0]
            for extra in old[1:]:  # one address per family, as in the classic API
                self.element.remove(extra)
        else:
            ip = ET.SubElement(self.element, "ip", family=f"ipv{version}")
        have = ipaddress.ip_address(ip.get("address")) if ip.get("address") else None
        if (str(have), self._prefix(ip, version)) != (config["address"], config["prefix"]):
            ip.attrib.pop("netmask", None)
            ip.set("address", config["address"])
            ip.set("prefix", str(config["prefix"]))
        if ip.get("family") or version == 6:
            ip.set("family", f"ipv{version}")
        dhcp = ip.find("dhcp")
        if dhcp is None and (config["dhcp_ranges"] or config["hosts"] or config.get("bootp")):
            dhcp = ET.SubElement(ip, "dhcp")
        if dhcp is not None:
            # Ranges and hosts that stay keep their element (and what is in it, e.g. <lease>).
            ranges = {(r.get("start"), r.get("end")): r for r in dhcp.findall("range")}
            new = [ranges.get((r["start"], r["end"])) or _elem("range", r) for r in config["dhcp_ranges"]]
            hosts = {h.get("ip"): h for h in dhcp.findall("host")}
            for addr in sorted(config["hosts"], key=ipaddress.ip_address):
                host = hosts.get(addr)
                if host is None:
                    host = _elem("host", ip=addr)
                for key in ("mac", "id", "name"):
                    host.attrib.pop(key, None)
                    if config["hosts"][addr].get(key) is not None:
                        host.set(key, config["hosts"][addr][key])
                new.append(host)
            if config.get("bootp"):
                new.append(_elem("bootp", config["bootp"]))
            _refill(ip, "dhcp", ("range", "host", "bootp"), new)
        tftp = [_elem("tftp", root=config["tftp"])] if config.get("tftp") else []
        _replace(ip, ip.findall("tftp"), tftp)

    @staticmethod
    def _prefix(ip, version):
        if ip.get("prefix") is not None:
            return int(ip.get("prefix"))
        if ip.get("netmask") is not None:
            return ipaddress.ip_network(f"0.0.0.0/{ip.get('netmask')}").prefixlen
        return 24 if version == 4 else 64  # libvirt's defaults

    def _write_ipv4_config(self, config):
        self._write_ip(4, config)

    def _write_ipv6_config(self, config):
        self._write_ip(6, config)


def differences(view, wanted, owns_bridge):
    """``{part: {"old": ..., "new": ...}}`` for each modelled setting of ``view`` that is not
    ``wanted`` (a :meth:`NetworkSpec.settings`). A network whose bridge libvirt makes and names
    itself keeps that name when none is asked for (as in the classic API)."""
    have = view.settings()
    diff = {}
    for part in PARTS:
        if part == "bridge" and wanted[part] is None and owns_bridge:
            continue
        if have[part] != wanted[part]:
            diff[part] = {"old": have[part], "new": wanted[part]}
    return diff


def build(spec):
    """The XML of a new network from a :class:`~saltvirt.network.spec.NetworkSpec`."""
    view = NetworkXml.new(spec.name)
    wanted = spec.settings()
    for part in PARTS:
        if wanted[part] not in (None, [], {}):
            view.write(part, wanted[part])
    return view.to_xml()


def change(view, spec):
    """Bring ``view`` to ``spec`` in place; returns :func:`differences` (empty: untouched)."""
    diff = differences(view, spec.settings(), spec.owns_bridge)
    for part in PARTS:  # in writing order: the forward element before what lives in it
        if part in diff:
            view.write(part, diff[part]["new"])
    return diff
