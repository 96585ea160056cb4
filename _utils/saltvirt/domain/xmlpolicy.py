"""A caller's domain XML, checked before libvirt sees it (``virt.define_xml_*``, ``create_xml_*``).

Callers granted only ``virt.*`` are not trusted, and a domain definition can hand a guest any
file or device of the hypervisor: a disk on ``/etc/shadow``, a ``<filesystem>`` of ``/``, a
``<kernel>``, a serial ``<log file>`` that libvirt creates (as root) wherever it is told,
``<hostdev>`` passthrough, ``<qemu:commandline>``, an ``<interface type='ethernet'>`` script,
a ``<seclabel>`` that runs QEMU as root. So, before ``defineXML``/``createXML``:

* **every host path** in the document (every attribute or text that is an absolute path,
  outside ``<metadata>``, ``<title>``, ``<description>``, the guest-side ``<target>`` and the
  guest's ``<cmdline>``) must resolve, symlinks followed, under the operator's roots
  (:class:`saltvirt.storage.paths.Roots`): files written or attached writable under the
  attach roots (libvirt pools' directories, ``virt:attach_roots``) or the domain's own
  directory ``<virt:images>/<name>``; read-only ones (``<readonly/>`` disks, CD-ROMs, backing
  stores, kernel, initrd, ACPI tables) also under the image roots and ``<virt:images>/base``;
  firmware (``<loader>``, NVRAM templates, option ROMs) also under
  ``virt:domain_xml:firmware_roots``; host device nodes only if listed in
  ``virt:domain_xml:devices``. The domain's own NVRAM file and serial log at libvirt's and
  salt-virt's default places are accepted;
* a writable disk may not be another domain's disk, and a qcow2 disk's backing chain must stay
  under the roots too (a guest can write a qcow2 header naming any file into a raw disk);
* what has no path but reaches the host is refused unless the operator lists it in
  ``virt:domain_xml:allow``: ``hostdev`` (PCI/USB/SCSI passthrough, NVMe disks, hostdev
  NICs), ``qemu_namespace`` (``<qemu:commandline>`` and the rest of libvirt's QEMU
  namespace), ``seclabel`` (any ``<seclabel>`` but a dynamic, relabelling one),
  ``executables`` (interface scripts, ``<bootloader>``, virtiofsd ``<binary>``),
  ``smartcard`` (host smartcards), ``interface:<type>`` for interfaces other than ``bridge`` and
  ``network``, ``chardev:<type>`` for character devices other than pty, file, unix, pipe,
  dev, null, vc and SPICE's, and ``disk:<type>`` for disks other than file, block, dir and
  volume;
* ``<emulator>`` must be one the host's capabilities list; disk formats are raw or qcow2.

All problems are reported at once. The policy is pure: what needs libvirt or qemu-img (the
emulators, the other domains' disks, volume paths, image headers) is given to it.
"""

import os
from dataclasses import dataclass, field

from saltvirt.domain import model as dommod
from saltvirt.domain import xmlview
from saltvirt.errors import InvalidArgument
from saltvirt.storage import paths

DEFAULT_FIRMWARE_ROOTS = paths.DEFAULT_FIRMWARE_ROOTS  # the same directories as boot: {loader}
DEFAULT_DEVICES = ("/dev/urandom", "/dev/random", "/dev/hwrng", "/dev/net/tun", "/dev/vhost-net")
NVRAM_DIR = "/var/lib/libvirt/qemu/nvram"
QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
ALLOW_WORDS = ("hostdev", "qemu_namespace", "seclabel", "executables", "smartcard")
ALLOW_PREFIXES = ("interface:", "chardev:", "disk:")
INTERFACE_TYPES = ("bridge", "network")
CHARDEV_TYPES = ("pty", "null", "vc", "file", "unix", "pipe", "dev", "spicevmc", "spiceport", "qemu-vdagent")
CHARDEV_TAGS = ("serial", "parallel", "console", "channel", "redirdev", "smartcard")
DISK_TYPES = ("file", "block", "dir", "volume")
DISK_FORMATS = ("raw", "qcow2")
_SKIPPED = ("metadata", "title", "description", "target", "cmdline")
_READ_ONLY_TAGS = ("kernel", "initrd", "dtb", "table", "backingStore")
_EXECUTABLES = ("script", "downscript", "bootloader", "binary")
# Attributes and element texts that are host paths even when they are not absolute.
_PATH_ATTRS = ("file", "dev", "dir", "path", "socket", "evdev", "rendernode", "logFile", "template", "tap", "vhost")
_PATH_TEXTS = ("loader", "nvram", "kernel", "initrd", "dtb", "table", "path", "database", "bootloader", "block",
               "char")


@dataclass
class Problem:
    where: str
    value: str
    fix: str

    def text(self, quote=True):
        shown = f" {self.value}" if quote and self.value else ""
        return f"{self.where}{shown}: {self.fix}"


class Refused(InvalidArgument):
    """The XML was refused; ``redacted()`` says why without quoting the document."""

    head = "domain XML refused, nothing defined: "

    def __init__(self, problems, quote=True):
        self.problems = problems
        super().__init__(self._message(quote))

    def _message(self, quote):
        return self.head + "; ".join(p.text(quote) for p in self.problems)

    def redacted(self):
        return self._message(False)


@dataclass
class Policy:
    """The operator's boundaries for caller XML on one hypervisor (see the module doc)."""

    roots: paths.Roots
    emulators: tuple = ()
    firmware_roots: tuple = DEFAULT_FIRMWARE_ROOTS
    devices: tuple = DEFAULT_DEVICES
    allow: frozenset = field(default_factory=frozenset)
    serial_log: object = None  # name -> the path salt-virt gives a domain's serial log

    @classmethod
    def from_config(cls, config, roots, emulators=(), serial_log=None):
        """From ``virt:domain_xml`` (``firmware_roots``, ``devices``, ``allow``)."""
        config = config or {}
        if not isinstance(config, dict):
            raise InvalidArgument(f"virt:domain_xml must be a mapping, not {config!r}")
        allow = config.get("allow") or []
        allow = [allow] if isinstance(allow, str) else list(allow)
        for word in allow:
            if word not in ALLOW_WORDS and not str(word).startswith(ALLOW_PREFIXES):
                raise InvalidArgument(
                    f"virt:domain_xml:allow: unknown entry {word!r} (known: {', '.join(ALLOW_WORDS)}, "
                    "interface:<type>, chardev:<type>, disk:<type>)")
        firmware = tuple(config.get("firmware_roots", DEFAULT_FIRMWARE_ROOTS) or ())
        devices = tuple(config.get("devices", DEFAULT_DEVICES) or ())
        for entry in firmware + devices:
            if not isinstance(entry, str) or not os.path.isabs(entry):
                raise InvalidArgument(f"virt:domain_xml: firmware_roots and devices take absolute paths, not {entry!r}")
        return cls(roots, tuple(emulators), firmware, devices, frozenset(allow), serial_log)

    def allows(self, word):
        return word in self.allow


@dataclass
class Checked:
    """What the check learnt: the domain's name and the files its disks use."""

    name: str
    disks: list = field(default_factory=list)  # (real path, read-only, format)


def _local(tag):
    return tag.rsplit("}", 1)[-1]


class _Checker:
    def __init__(self, policy, name, volume_path):
        self.policy, self.name, self.volume_path = policy, name, volume_path
        self.problems = []
        self.result = Checked(name)
        roots = policy.roots
        # the domain's own directory (never the shared bases' one, whatever the name)
        self.own = [os.path.join(roots.images, name)] if name != paths.BASE_DIR else []
        self.write = [*roots.pools, *roots.attach_roots]
        self.read = [*self.write, os.path.join(roots.images, paths.BASE_DIR), *roots.image_roots]
        self.firmware = [*self.read, *policy.firmware_roots]

    def refuse(self, where, value, fix):
        self.problems.append(Problem(where, str(value), fix))

    def need(self, word, where, value, what):
        if not self.policy.allows(word):
            self.refuse(where, value, f"{what} is refused unless the hypervisor's virt:domain_xml:allow lists {word}")

    # ---------------------------------------------------------------- paths

    def path(self, where, value, kind="write"):
        """Check one host path; returns its real path when it is allowed."""
        if not os.path.isabs(value):
            self.refuse(where, value, "host paths must be absolute")
            return None
        real = os.path.realpath(value)
        if value in self.policy.devices or real in self.policy.devices:
            return real
        roots = {"write": self.write, "read": self.read, "firmware": self.firmware}[kind]
        images = self.policy.roots.images
        for root in [*self.own, *roots]:
            if paths.is_under(real, root):
                if root in self.own or not paths.is_under(real, images) or paths.is_under(
                        real, os.path.join(images, paths.BASE_DIR)):
                    return real
        listed = ", ".join(dict.fromkeys([os.path.join(self.policy.roots.images, "<domain name>"), *roots]))
        self.refuse(where, value, f"outside the directories allowed for {kind} access here ({listed}); "
                    "the operator adds directories with virt:attach_roots, virt:image_roots, "
                    "virt:domain_xml:firmware_roots or virt:domain_xml:devices")
        return None

    # ---------------------------------------------------------------- the document

    def walk(self, elem, kind, ancestors):
        tag = elem.tag if isinstance(elem.tag, str) else ""
        if tag.startswith("{"):
            namespace = tag[1:].split("}", 1)[0]
            if namespace == QEMU_NS:
                self.need("qemu_namespace", f"<qemu:{_local(tag)}>", "", "libvirt's QEMU namespace")
            else:
                self.refuse(f"<{_local(tag)}> of namespace", namespace, "only <metadata> may hold other namespaces")
            return
        if tag in _SKIPPED:
            return
        kind = self.element(elem, tag, kind, ancestors)
        if kind is None:
            return
        where = "/".join([*ancestors[-2:], tag])
        # an interface's source dev is a NIC's name, <boot dev> a device class: not paths
        names_only = "interface" in ancestors or tag == "boot"
        for attr, value in elem.attrib.items():
            if value.startswith("/") or (attr in _PATH_ATTRS and value and not names_only):
                self.attribute(elem, where, attr, value, self.attr_kind(tag, attr, kind))
        # libvirt reads a path element's whole text content (children's text included); of the
        # others, the element's own text nodes
        if tag in _PATH_TEXTS:
            text = "".join(elem.itertext()).strip()
        else:
            text = ((elem.text or "") + "".join(child.tail or "" for child in elem)).strip()
        if tag != "entry" and (text.startswith("/") or (text and tag in _PATH_TEXTS)):
            self.text(elem, where, tag, text, kind)
        # QEMU allocates a pty: the source path libvirt reports for one is output only.
        pty = tag in CHARDEV_TAGS and elem.get("type") == "pty"
        for child in elem:
            if not (pty and child.tag == "source"):
                self.walk(child, kind, [*ancestors, tag])

    @staticmethod
    def attr_kind(tag, attr, kind):
        if (tag, attr) in (("nvram", "template"), ("rom", "file")):
            return "firmware"
        if (tag, attr) == ("entry", "file"):
            return "read"
        return kind

    def element(self, elem, tag, kind, ancestors):
        """Per-element rules; the access kind for what is inside, or None to skip it."""
        etype = elem.get("type")
        if tag == "hostdev" or (tag == "interface" and etype == "hostdev") or (tag == "disk" and etype == "nvme"):
            self.need("hostdev", f"<{tag}>", etype or "", "host device passthrough")
            return None
        if tag == "interface" and (etype or "") not in INTERFACE_TYPES:
            self.need(f"interface:{etype}", "<interface> type", etype, "this interface type")
        if tag in CHARDEV_TAGS or (tag == "backend" and elem.get("model") == "egd"):
            if etype and etype not in CHARDEV_TYPES:
                self.need(f"chardev:{etype}", f"<{tag}> type", etype, "this character device type")
        if tag == "smartcard" and elem.get("mode") in ("host", "host-certificates"):
            self.need("smartcard", "<smartcard> mode", elem.get("mode"), "the host's smartcards")
        if tag == "seclabel" and not self.harmless_seclabel(elem, ancestors):
            self.need("seclabel", "<seclabel>", "", "a custom security label")
            return None
        if tag in _EXECUTABLES:
            self.need("executables", f"<{tag}>", "", "a host program")
        if tag == "partition":  # a cgroup, not a file
            if (elem.text or "").strip() != "/machine":
                self.refuse("<resource><partition>", (elem.text or "").strip(), "only /machine is accepted")
            return None
        if tag == "emulator":
            self.emulator((elem.text or "").strip())
            return None
        if tag == "disk":
            return self.disk(elem)
        if tag == "filesystem" and elem.find("readonly") is not None:
            return "read"
        if tag in _READ_ONLY_TAGS:
            return "read"
        return kind

    @staticmethod
    def harmless_seclabel(elem, ancestors):
        # libvirt's own dynamic label (what `virsh dumpxml` shows) changes nothing; a static
        # label or relabel='no' decides who QEMU runs as or what it may open.
        return (ancestors == ["domain"] and elem.get("type", "dynamic") == "dynamic"
                and elem.get("relabel", "yes") == "yes" and elem.find("baselabel") is None)

    def emulator(self, value):
        if value and value not in self.policy.emulators:
            self.refuse("<emulator>", value, "not an emulator of this host's capabilities "
                        f"({', '.join(self.policy.emulators) or 'none'}); leave it out to get libvirt's")

    def disk(self, elem):
        dtype = elem.get("type") or "file"
        if dtype not in DISK_TYPES:
            self.need(f"disk:{dtype}", "<disk> type", dtype, "this disk type")
        # no format given: libvirt may look at the file; the host checks treat it as unknown
        fmt = elem.find("driver").get("type") if elem.find("driver") is not None else None
        if dtype != "dir" and fmt is not None and fmt not in DISK_FORMATS:
            self.refuse("<disk><driver type>", fmt, f"disk formats are {' or '.join(DISK_FORMATS)} "
                        "(qemu-img convert the image)")
        readonly = elem.find("readonly") is not None or elem.get("device") == "cdrom"
        kind = "read" if readonly else "write"
        source = elem.find("source")
        if dtype == "volume" and source is not None and source.get("pool") and source.get("volume"):
            volume = f"{source.get('pool')}/{source.get('volume')}"
            try:
                real = self.path("<disk> volume", self.volume_path(source.get("pool"), source.get("volume")), kind)
            except InvalidArgument:
                self.refuse("<disk> volume", volume, "no such volume in this host's libvirt pools")
                real = None
            self.note_disk(real, readonly, fmt)
        elif source is not None:
            for attr in ("file", "dev"):
                if source.get(attr, "").startswith("/"):
                    self.note_disk(os.path.realpath(source.get(attr)), readonly, fmt)
        return kind

    def note_disk(self, real, readonly, fmt):
        if real:
            self.result.disks.append((real, readonly, fmt))

    def attribute(self, elem, where, attr, value, kind):
        if (elem.tag, attr) in (("source", "path"), ("log", "file")) and value == self.own_serial_log():
            return
        self.path(f"<{where}> {attr}", value, kind)

    def text(self, elem, where, tag, value, kind):
        if tag == "nvram" and value == os.path.join(NVRAM_DIR, f"{self.name}_VARS.fd"):
            return
        if tag == "loader":
            kind = "firmware"
        self.path(f"<{where}>", value, kind)

    def own_serial_log(self):
        return self.policy.serial_log(self.name) if self.policy.serial_log else None


def check(xml, policy, volume_path=None, quote=True):
    """Check domain ``xml`` against ``policy``; a :class:`Refused` lists every problem.

    ``volume_path(pool, volume)`` gives a volume disk's path (libvirt). Returns a
    :class:`Checked` (name, the real paths of writable and qcow2 disks) for the checks that
    need the host (:func:`check_disk_files`).
    """
    try:
        if "<!DOCTYPE" in xml or "<!ENTITY" in xml:
            raise InvalidArgument("a domain definition has no DOCTYPE or entities: refused")
        root = xmlview.parse(xml, "domain")
        name = dommod.validate_name(root.findtext("name") or "")
    except InvalidArgument as exc:
        raise InvalidArgument(str(exc) if quote else "the file is not a domain definition with a valid name "
                              "(details not shown: they would quote the file)") from None
    checker = _Checker(policy, name, volume_path or _no_volumes)
    checker.walk(root, "write", [])
    if checker.problems:
        raise Refused(checker.problems, quote)
    return checker.result


def _no_volumes(pool, volume):
    raise InvalidArgument(f"volume {pool}/{volume}: no libvirt connection to resolve it")


def check_disk_files(checked, in_use, backing_of, policy, quote=True):
    """The checks that read the host: no disk of another domain (``in_use``: real path ->
    ``[{domain}]``) unless attached read-only as raw (a guest controls its disk's content: read
    as qcow2 it could name any backing file), and every backing file of a qcow2 disk (or of a
    disk of no stated format) under the read roots (``backing_of(path, fmt)``: the backing file
    its header names, or None; a ``json:``/protocol name or an external data file is refused
    by it)."""
    checker = _Checker(policy, checked.name, _no_volumes)
    for path, readonly, fmt in checked.disks:
        users = sorted({u["domain"] for u in in_use.get(path, ()) if u["domain"] != checked.name})
        if users and (not readonly or fmt != "raw"):
            checker.refuse("<disk>", path, f"a disk of {', '.join(users)}: refused")
    for path, _ro, fmt in checked.disks:
        if fmt == "raw":
            continue
        seen = {path}
        current = path
        while True:
            backing = backing_of(current, fmt)
            fmt = None  # a backing file's own format is whatever its overlay names or it is
            if not backing:
                break
            backing = os.path.join(os.path.dirname(current), backing)
            real = checker.path(f"backing file of {current}", backing, "read")
            if real is None or real in seen:
                break
            seen.add(real)
            current = real
    if checker.problems:
        raise Refused(checker.problems, quote)
