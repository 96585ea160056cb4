"""Host device passthrough: the classic ``host_devices`` (node device names, as ``virt.node_devices``
lists them) as ``<hostdev>`` elements, for the devices the operator allows.

Giving a guest a host's PCI or USB device hands it that hardware (and, for PCI, DMA into the
host's memory unless an IOMMU confines it): no caller may do that on their own. Only devices
named in ``virt:host_devices:allowed`` (node device names or shell globs such as
``pci_0000_3b_*``) are accepted; the default is none. :class:`HostDevices` manages a domain's
whole set of PCI/USB ``<hostdev>`` elements: the list given is the set the domain ends up with.
"""

import fnmatch
import xml.etree.ElementTree as ET  # noqa: S405 (building our own XML)

from saltvirt.errors import InvalidArgument, NotFound
from saltvirt.errors import libvirt_message as _err
from saltvirt.host.devices import parse_node_device

try:
    import libvirt
except ImportError:
    libvirt = None


def check_allowed(names, allowed, host="this hypervisor"):
    """``names`` as a list, each one matched by an ``allowed`` pattern; else a clear refusal."""
    if names is None:
        return None
    if isinstance(names, str):
        names = [names]
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise InvalidArgument("host_devices must be a list of node device names (see virt.node_devices)")
    allowed = [allowed] if isinstance(allowed, str) else list(allowed or [])
    refused = [n for n in names if not any(fnmatch.fnmatchcase(n, pattern) for pattern in allowed)]
    if refused:
        raise InvalidArgument(
            f"host device(s) {', '.join(refused)} may not be passed through on {host}: only the devices in "
            f"virt:host_devices:allowed are ({', '.join(allowed) or 'none configured'}); an operator must add them")
    return list(dict.fromkeys(names))


def source_of(info):
    """The passthrough identity of a node device (:func:`parse_node_device` dict): a hashable key."""
    caps = info["caps"].split()
    if "pci" in caps:
        domain, bus, rest = info["address"].split(":")
        slot, function = rest.split(".")
        return ("pci", int(domain, 16), int(bus, 16), int(slot, 16), int(function, 16))
    if "usb_device" in caps:
        bus, device = info["address"].split(":")
        return ("usb", info["vendor_id"], info["product_id"], int(bus), int(device))
    raise InvalidArgument(f"host device {info['name']}: only PCI and USB devices can be passed through")


def resolve(conn, names):
    """``{name: key}`` of ``names`` on ``conn``; a clear error for a missing or unsupported device."""
    out = {}
    for name in names:
        try:
            dev = conn.nodeDeviceLookupByName(name)
            info = parse_node_device(dev.XMLDesc(0), dev.listCaps())
        except libvirt.libvirtError as exc:
            raise NotFound(f"host device {name}: {_err(exc)} (virt.node_devices lists them)") from None
        if not info or "net" in info["caps"].split():
            raise InvalidArgument(f"host device {name}: only PCI and USB devices can be passed through")
        out[name] = source_of(info)
    return out


def to_element(key):
    kind = key[0]
    elem = ET.Element("hostdev", mode="subsystem", type=kind, managed="yes")
    source = ET.SubElement(elem, "source")
    if kind == "pci":
        ET.SubElement(source, "address", domain=f"0x{key[1]:04x}", bus=f"0x{key[2]:02x}",
                      slot=f"0x{key[3]:02x}", function=f"0x{key[4]:x}")
    else:
        ET.SubElement(source, "vendor", id=key[1])
        ET.SubElement(source, "product", id=key[2])
        ET.SubElement(source, "address", bus=str(key[3]), device=str(key[4]))
    return elem


def _hex(value):
    return int(value, 16) if str(value).startswith("0x") else int(value)


def from_element(elem):
    """The key of a ``<hostdev>`` element, or None for one this module does not manage."""
    source = elem.find("source")
    if elem.get("mode") != "subsystem" or source is None:
        return None
    addr = source.find("address")
    if elem.get("type") == "pci" and addr is not None:
        return ("pci", *(_hex(addr.get(k, "0")) for k in ("domain", "bus", "slot", "function")))
    vendor, product = source.find("vendor"), source.find("product")
    if elem.get("type") == "usb" and None not in (vendor, product, addr):
        return ("usb", vendor.get("id").lower(), product.get("id").lower(), _hex(addr.get("bus")),
                _hex(addr.get("device")))
    return None


def describe(key):
    if key[0] == "pci":
        return "pci {:04x}:{:02x}:{:02x}.{:x}".format(*key[1:])
    return "usb {}:{} at {:03}:{:03}".format(*key[1:])


class HostDevices:
    """The PCI/USB ``<hostdev>`` elements of a domain, as a set."""

    name = "host_devices"

    def __init__(self, keys):
        self.keys = list(keys)

    def _elements(self, view):
        return [(e, from_element(e)) for e in view.device_elements("hostdev") if from_element(e)]

    def read(self, view):
        return [key for _elem, key in self._elements(view)]

    def differences(self, view):
        have = self.read(view)
        if set(have) == set(self.keys):
            return {}
        return {"host_devices": (sorted(map(describe, have)), sorted(map(describe, self.keys)))}

    def write(self, view):
        devices = view.make("devices")
        kept = set()
        for elem, key in self._elements(view):
            if key in self.keys:
                kept.add(key)
            else:
                devices.remove(elem)
        for key in self.keys:
            if key not in kept:
                devices.append(to_element(key))
