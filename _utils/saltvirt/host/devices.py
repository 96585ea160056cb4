"""The host's node devices that matter to guests: PCI and USB devices (which may be passed
through) and physical network interfaces, in the shape of the classic ``virt.node_devices``."""

import xml.etree.ElementTree as ET  # noqa: S405 (libvirt's own XML)

from saltvirt.errors import VirtError
from saltvirt.errors import libvirt_message as _err

try:
    import libvirt
except ImportError:
    libvirt = None

LISTED_CAPS = {"pci", "usb_device", "net"}
# The Linux Foundation's root hubs: part of every USB host controller, nothing to pass through.
LINUX_ROOT_HUBS = {("0x1d6b", "0x0001"), ("0x1d6b", "0x0002"), ("0x1d6b", "0x0003")}


def _text(node, path):
    found = node.find(path)
    return None if found is None else found.text


def _hex_pci(addr):
    """``<address domain='0x0000' bus='0x3b' ...>`` as ``0000:3b:00.1``."""
    parts = [addr.get(k, "0").replace("0x", "") for k in ("domain", "bus", "slot", "function")]
    return "{}:{}:{}.{}".format(*parts)


def _net(root, caps):
    parent = _text(root, "parent")
    if parent == "computer":  # lo, dummies and the interfaces libvirt made (bridges, taps)
        return None
    link = root.find(".//link")
    return {
        "caps": caps,
        "name": _text(root, ".//interface"),
        "address": _text(root, ".//address"),
        "device name": parent,
        "state": None if link is None else link.get("state"),
    }


def parse_node_device(xml, caps=None):
    """One node device's XML as the classic dict, or None when it is not listed (not PCI, USB or
    a physical NIC; a PCI bridge; a USB root hub)."""
    root = ET.fromstring(xml)  # noqa: S314 (libvirt's own XML)
    cap_types = caps if caps is not None else [c.get("type") for c in root.findall("capability")]
    if not set(cap_types) & LISTED_CAPS:
        return None
    caps_text = " ".join(cap_types)
    if "net" in cap_types:
        return _net(root, caps_text)
    vendor, product = root.find(".//vendor"), root.find(".//product")
    vendor_id = (vendor.get("id") or "").lower() if vendor is not None else None
    product_id = (product.get("id") or "").lower() if product is not None else None
    if (vendor_id, product_id) in LINUX_ROOT_HUBS or root.find(".//capability[@type='pci-bridge']") is not None:
        return None
    info = {"caps": caps_text, "name": _text(root, "name"), "vendor_id": vendor_id, "product_id": product_id}
    if vendor is not None and vendor.text:
        info["vendor"] = vendor.text
    if product is not None and product.text:
        info["product"] = product.text
    if "pci" in cap_types:
        pci = root.find("capability[@type='pci']")
        info["address"] = "{:04x}:{:02x}:{:02x}.{}".format(
            int(_text(pci, "domain")), int(_text(pci, "bus")), int(_text(pci, "slot")), _text(pci, "function"))
        pci_class = _text(pci, "class")
        if pci_class:
            info["PCI class"] = pci_class
        vfs = [_hex_pci(a) for a in pci.findall("capability[@type='virt_functions']/address")]
        if vfs:
            info["virtual functions"] = vfs
        pf = pci.find("capability[@type='phys_function']/address")
        if pf is not None:
            info["physical function"] = _hex_pci(pf)
    elif "usb_device" in cap_types:
        usb = root.find("capability[@type='usb_device']")
        info["address"] = "{:03}:{:03}".format(int(_text(usb, "bus")), int(_text(usb, "device")))
    return info


def node_devices(conn):
    """The listed node devices of this host (see :func:`parse_node_device`)."""
    try:
        devices = conn.listAllDevices(0)
        found = []
        for dev in devices:
            parsed = parse_node_device(dev.XMLDesc(0), dev.listCaps())
            if parsed:
                found.append(parsed)
    except libvirt.libvirtError as exc:
        raise VirtError(f"cannot list this host's devices: {_err(exc)}") from exc
    return found
