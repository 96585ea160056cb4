"""Domain XML as views over the parsed document: read, change, write back, lose nothing.

A view wraps one element of the parsed XML; its properties are declared as paths into it
(:class:`XPath`, :class:`Flag`). Reading a property reads the document, setting one changes the
document (creating the elements on the way, removing the attribute or element for None), so
``parse -> change -> to_xml`` keeps every element and attribute the code does not model --
whatever virt-install, virt-manager or libvirt itself put there.

Every reader of existing domain XML in salt-virt goes through :class:`DomainXml`: the inventory
(:meth:`saltvirt.domain.model.Domain.from_xml`), "which files does this domain use"
(:meth:`DomainXml.files`), migration facts, updates and snapshots. New domains are written by
:class:`saltvirt.domain.model.Domain`.
"""

import io
import os
import xml.etree.ElementTree as ET  # noqa: S405 (libvirt's own XML, or ours)

from saltvirt.errors import InvalidArgument
from saltvirt.units import parse_size


def parse(xml, root_tag=None):
    """The root element of ``xml``; a clear error for anything that is not XML (or not ``root_tag``)."""
    try:
        # Namespaced metadata (libosinfo, virt-manager...) keeps its own prefixes when written
        # back: ElementTree would otherwise rename them ns0, ns1...
        for _event, (prefix, uri) in ET.iterparse(io.StringIO(xml), events=("start-ns",)):  # noqa: S314
            if prefix and not prefix.startswith("ns"):
                ET.register_namespace(prefix, uri)
        root = ET.fromstring(xml)  # noqa: S314 (libvirt's XML or ours; no external entities)
    except ET.ParseError as exc:
        raise InvalidArgument(f"not valid {root_tag or ''} XML: {exc}".replace("  ", " ")) from None
    if root_tag and root.tag != root_tag:
        raise InvalidArgument(f"not {root_tag} XML: <{root.tag}> root")
    return root


def _split(path):
    return [p for p in path.split("/") if p and p != "."]


class XPath:
    """A property at ``path`` (a simple ``a/b`` path below the view's element): the element's
    text, or its attribute ``attr``. ``kind`` converts on read (int, bool for yes/no)."""

    def __init__(self, path=".", attr=None, kind=str, default=None):
        self.path, self.attr, self.kind, self.default = path, attr, kind, default

    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, view, owner=None):
        if view is None:
            return self
        elem = view.find(self.path)
        raw = None if elem is None else (elem.get(self.attr) if self.attr else elem.text)
        if raw is None:
            return self.default
        raw = raw.strip()
        if self.kind is bool:
            return raw in ("yes", "on", "1")
        try:
            return self.kind(raw)
        except ValueError:
            return self.default

    def __set__(self, view, value):
        if value is None:
            elem = view.find(self.path)
            if elem is None:
                return
            if self.attr:
                elem.attrib.pop(self.attr, None)
            else:
                view.remove_path(self.path)
            return
        if self.kind is bool:
            value = "yes" if value else "no"
        elem = view.make(self.path)
        if self.attr:
            elem.set(self.attr, str(value))
        else:
            elem.text = str(value)


class Flag:
    """A property that is true when the empty element at ``path`` exists (``<readonly/>``)."""

    def __init__(self, path):
        self.path = path

    def __get__(self, view, owner=None):
        return self if view is None else view.find(self.path) is not None

    def __set__(self, view, value):
        if value and view.find(self.path) is None:
            view.make(self.path)
        elif not value:
            view.remove_path(self.path)


class XmlView:
    """A view over ``element``; subclasses declare properties with :class:`XPath`/:class:`Flag`."""

    TAG = None

    def __init__(self, element):
        self.element = element

    def find(self, path):
        parts = _split(path)
        return self.element.find("/".join(parts)) if parts else self.element

    def make(self, path):
        """The element at ``path``, created (with its parents) when missing."""
        elem = self.element
        for part in _split(path):
            child = elem.find(part)
            elem = child if child is not None else ET.SubElement(elem, part)
        return elem

    def remove_path(self, path):
        parts = _split(path)
        if not parts:
            return
        parent = self.find("/".join(parts[:-1]))
        child = parent.find(parts[-1]) if parent is not None else None
        if child is not None:
            parent.remove(child)

    def to_xml(self):
        return ET.tostring(self.element, encoding="unicode")


class NamedXml(XmlView):
    """A top-level libvirt object with a ``<name>`` (a network, a storage pool): parsed from
    its XML, or made new."""

    name = XPath("name")
    uuid = XPath("uuid")

    @classmethod
    def parse(cls, xml):
        view = cls(parse(xml, cls.TAG))
        if not view.name:
            raise InvalidArgument(f"not {cls.TAG} XML: <{cls.TAG}> root without a <name>")
        return view

    @classmethod
    def new(cls, name):
        view = cls(ET.Element(cls.TAG))
        view.name = name
        return view


class DiskXml(XmlView):
    """A ``<disk>``: file, block or network source, target, driver, flags, backing chain."""

    TAG = "disk"
    type = XPath(".", "type", default="file")
    device = XPath(".", "device", default="disk")
    format = XPath("driver", "type")
    cache = XPath("driver", "cache")
    source_file = XPath("source", "file")
    source_dev = XPath("source", "dev")
    source_name = XPath("source", "name")  # network disks: pool/image
    source_protocol = XPath("source", "protocol")
    source_pool = XPath("source", "pool")  # type='volume'
    source_volume = XPath("source", "volume")
    target = XPath("target", "dev")
    bus = XPath("target", "bus")
    readonly = Flag("readonly")
    shareable = Flag("shareable")
    boot_order = XPath("boot", "order", int)

    @property
    def path(self):
        """The host path of a file or block disk (None for network and volume disks)."""
        return self.source_file or self.source_dev

    @property
    def backing(self):
        """The live ``<backingStore>`` chain, newest first (file, dev or network name)."""
        chain, store = [], self.element.find("backingStore")
        # An empty <backingStore/> ends the chain.
        while store is not None and store.find("source") is not None:
            src = store.find("source")
            chain.append(src.get("file") or src.get("dev") or src.get("name"))
            store = store.find("backingStore")
        return chain


class InterfaceXml(XmlView):
    TAG = "interface"
    _SOURCE_ATTR = {"bridge": "bridge", "network": "network", "direct": "dev"}
    type = XPath(".", "type")
    mac = XPath("mac", "address")
    model = XPath("model", "type")
    target = XPath("target", "dev")  # the live tap device

    @property
    def source(self):
        src = self.find("source")
        return None if src is None else src.get(self._SOURCE_ATTR.get(self.type, "bridge"))

    @source.setter
    def source(self, value):
        self.make("source").set(self._SOURCE_ATTR.get(self.type, "bridge"), str(value))


class GraphicsXml(XmlView):
    TAG = "graphics"
    type = XPath(".", "type")
    port = XPath(".", "port", int)
    autoport = XPath(".", "autoport", bool)
    passwd = XPath(".", "passwd")

    @property
    def listen(self):
        return self.element.get("listen") or XPath("listen", "address").__get__(self)


class SerialXml(XmlView):
    TAG = "serial"
    type = XPath(".", "type")
    log = XPath("log", "file")


class DomainXml(XmlView):
    """A ``<domain>``: what salt-virt reads and changes; everything else is kept as it is."""

    TAG = "domain"
    name = XPath("name")
    uuid = XPath("uuid")
    type = XPath(".", "type")
    vcpus = XPath("vcpu", kind=int, default=1)
    os_type = XPath("os/type", default="hvm")
    arch = XPath("os/type", "arch")
    machine = XPath("os/type", "machine")
    kernel = XPath("os/kernel")
    initrd = XPath("os/initrd")
    cmdline = XPath("os/cmdline")
    emulator = XPath("devices/emulator")
    cpu_model = XPath("cpu/model")
    on_poweroff = XPath("on_poweroff", default="destroy")
    on_reboot = XPath("on_reboot", default="restart")
    on_crash = XPath("on_crash", default="destroy")

    @classmethod
    def parse(cls, xml):
        root = parse(xml, "domain")
        view = cls(root)
        if not view.name:
            raise InvalidArgument("not domain XML: <domain> root without a <name>")
        return view

    # -------------------------------------------------------------- memory and CPU

    def _kib(self, path):
        # <memory unit=...> may use any libvirt unit; live XML says KiB but hand-written XML need not.
        elem = self.find(path)
        if elem is None or not (elem.text or "").strip():
            return None
        return parse_size(elem.text.strip(), elem.get("unit", "KiB")) // 1024

    def _set_kib(self, path, kib):
        elem = self.make(path)
        elem.set("unit", "KiB")
        elem.text = str(int(kib))

    @property
    def memory(self):
        """Maximum memory in KiB."""
        return self._kib("memory")

    @memory.setter
    def memory(self, kib):
        self._set_kib("memory", kib)

    @property
    def current_memory(self):
        return self._kib("currentMemory")

    @current_memory.setter
    def current_memory(self, kib):
        self._set_kib("currentMemory", kib)

    @property
    def cpu_mode(self):
        # A <cpu> without mode but with a model is libvirt's implicit 'custom'.
        cpu = self.find("cpu")
        if cpu is None:
            return None
        return cpu.get("mode") or ("custom" if cpu.find("model") is not None else None)

    @property
    def boot(self):
        return [b.get("dev") for b in self.element.findall("os/boot")]

    @property
    def features(self):
        """Plain feature flags like ``<acpi/>`` (features with settings are not listed)."""
        features = self.find("features")
        return [f.tag for f in (features if features is not None else ()) if not f.attrib and not len(f)]

    # -------------------------------------------------------------- devices

    def _devices(self, view_class, keep=None):
        devices = self.find("devices")
        elems = devices.findall(view_class.TAG) if devices is not None else []
        views = [view_class(e) for e in elems]
        return [v for v in views if keep is None or keep(v)]

    @property
    def disks(self):
        return self._devices(DiskXml)

    @property
    def interfaces(self):
        return self._devices(InterfaceXml)

    @property
    def graphics(self):
        return self._devices(GraphicsXml)

    @property
    def serials(self):
        return self._devices(SerialXml)

    def device_elements(self, tag):
        devices = self.find("devices")
        return devices.findall(tag) if devices is not None else []

    def add_device(self, element):
        """Append a device element (e.g. from :meth:`saltvirt.domain.model.Disk.to_element`)."""
        self.make("devices").append(element)
        return element

    def remove_device(self, view):
        self.make("devices").remove(view.element)

    def files(self):
        """Real paths of every host file this domain's disks use, backing files included."""
        used = set()
        for disk in self.disks:
            for path in [disk.source_file, *disk.backing]:
                if path and path.startswith("/"):
                    used.add(os.path.realpath(path))
        nvram = (self.find("os/nvram").text or "").strip() if self.find("os/nvram") is not None else ""
        if nvram.startswith("/"):
            used.add(os.path.realpath(nvram))
        return used
