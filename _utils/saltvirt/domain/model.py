"""Domain XML object model: the same dataclasses write libvirt domain XML and read it back.

Building a domain (:meth:`Domain.to_xml`) and reporting on it (:meth:`Domain.from_xml`, then
:meth:`Domain.to_info`) go through the same fields, so what was asked for and what is reported
cannot drift apart.  Parsing tolerates everything libvirt adds to live XML (aliases, addresses,
seclabels, controllers...); building is strict and raises :class:`InvalidArgument` early.
"""

import re
import secrets
import uuid as uuidlib
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from saltvirt.domain import platform as domplatform
from saltvirt.domain import xmlview
from saltvirt.errors import InvalidArgument

NAME_MAX = 64
NAME_CHARS = "A-Za-z0-9_.+-"
DISK_BUSES = {"virtio": "vd", "sata": "sd", "scsi": "sd", "usb": "sd", "ide": "hd"}
DISK_CACHES = ("default", "none", "writethrough", "writeback", "directsync", "unsafe")
BOOT_DEVICES = ("hd", "cdrom", "network", "fd")
# States (virsh's words) in which a domain holds its memory and vCPUs on its host: what placement
# counts as taken, on the hypervisor (vmops.freemem) and in the master's copy (fleet.capacities).
CLAIMING_STATES = ("running", "paused", "blocked")
CPU_MODES = ("host-passthrough", "host-model", "maximum", "custom")
DIRECT_MODES = ("vepa", "bridge", "private", "passthrough")
_ACTIONS = ("destroy", "restart", "preserve", "rename-restart")
_LIFECYCLE = {"on_poweroff": _ACTIONS, "on_reboot": _ACTIONS,
              "on_crash": _ACTIONS + ("coredump-destroy", "coredump-restart")}
_NIC_SOURCE_ATTR = {"bridge": "bridge", "network": "network", "direct": "dev"}
_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


def _require(ok, message):
    if not ok:
        raise InvalidArgument(message)


def _is_int(value, low):
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def validate_name(name):
    """Return ``name`` if it is a safe domain name; else raise :class:`InvalidArgument` why."""
    # Names end up in file paths (images, logs, NVRAM) and on command lines, hence the strictness.
    _require(isinstance(name, str) and name, "domain name must be a non-empty string")
    problem = None
    if len(name) > NAME_MAX:
        problem = f"is {len(name)} characters long (at most {NAME_MAX})"
    elif "\0" in name:
        problem = "contains a NUL byte"
    elif "/" in name:
        problem = "contains '/'"
    elif ".." in name:
        problem = "contains '..'"
    elif any(c.isspace() for c in name):
        problem = "contains whitespace"
    elif name[0] in "-.":
        problem = f"starts with {name[0]!r}"
    else:
        bad = "".join(sorted({c for c in name if not re.fullmatch(f"[{NAME_CHARS}]", c)}))
        if bad:
            problem = f"contains {bad!r}; only characters in [{NAME_CHARS}] are allowed"
    _require(problem is None, f"invalid domain name {name!r}: it {problem}")
    return name


def next_disk_target(existing_targets, bus="virtio"):
    """First free target for ``bus``: 'vda', 'vdb'... for virtio, 'sda'... for sata/scsi/usb."""
    _require(bus in DISK_BUSES, f"unknown disk bus {bus!r} (one of {', '.join(DISK_BUSES)})")
    taken = set(existing_targets or ())
    limit = 4 if bus == "ide" else 26 * 27  # IDE has two channels x master/slave: hda..hdd
    for index in range(limit):
        # libvirt's naming (virIndexToDiskName): a..z, aa..az, ba..; bijective base 26.
        suffix, rest = "", index + 1
        while rest:
            rest, rem = divmod(rest - 1, 26)
            suffix = chr(ord("a") + rem) + suffix
        if DISK_BUSES[bus] + suffix not in taken:
            return DISK_BUSES[bus] + suffix
    raise InvalidArgument(f"no free disk target left on bus {bus!r} (at most {limit} disks)")


def random_mac(prefix="52:54:00"):
    """Random unicast MAC under ``prefix`` (default: the locally administered OUI QEMU uses)."""
    octets = prefix.lower().split(":") if prefix else []
    _require(len(octets) <= 5 and all(re.fullmatch("[0-9a-f]{2}", o) for o in octets),
             f"MAC prefix {prefix!r} must be 0 to 5 hex octets like '52:54:00'")
    _require(not (octets and int(octets[0], 16) & 1),
             f"MAC prefix {prefix!r} is multicast; guests need a unicast MAC")
    tail = list(secrets.token_bytes(6 - len(octets)))
    if not octets:
        tail[0] = (tail[0] & 0xFC) | 0x02  # unicast, locally administered
    return ":".join(octets + [f"{b:02x}" for b in tail])


def _sub(parent, tag, text=None, **attrs):
    """Append ``<tag attrs>text</tag>``, leaving out attributes that are None."""
    elem = ET.SubElement(parent, tag, {k: str(v) for k, v in attrs.items() if v is not None})
    if text is not None:
        elem.text = str(text)
    return elem


def _int(value, default=None):
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _attr(parent, path, name, default=None):
    elem = parent.find(path) if parent is not None else None
    return elem.get(name, default) if elem is not None else default


@dataclass
class Disk:
    """A ``<disk>``; ``backing`` is read from live ``<backingStore>`` chains and never written."""

    target: str
    source: str | None = None  # file path
    source_dev: str | None = None  # block device path
    type: str | None = None  # None: 'block' when only source_dev is set, else 'file'
    device: str = "disk"
    format: str = "raw"
    bus: str | None = None  # None: 'virtio', or 'sata' for a cdrom (virtio has no cdrom)
    readonly: bool = False
    cache: str | None = None
    backing: list[str] = field(default_factory=list)
    boot_order: int | None = None

    def __post_init__(self):
        if self.type is None:
            self.type = "block" if self.source_dev and not self.source else "file"
        if self.bus is None:
            self.bus = "sata" if self.device == "cdrom" else "virtio"
        if self.device == "cdrom":
            self.readonly = True  # libvirt always reports cdroms read-only; keeps round trips equal

    def check(self):
        where = f"disk {self.target!r}"
        _require(self.bus in DISK_BUSES, f"{where}: bus must be one of {', '.join(DISK_BUSES)}")
        prefix = DISK_BUSES[self.bus]
        _require(re.fullmatch(f"{prefix}[a-z]+", str(self.target)),
                 f"{where}: a target on bus {self.bus!r} must look like '{prefix}a'")
        _require(self.device in ("disk", "cdrom"), f"{where}: device must be 'disk' or 'cdrom'")
        _require(not (self.device == "cdrom" and self.bus == "virtio"),
                 f"{where}: a cdrom cannot be on the virtio bus (use sata or scsi)")
        # QEMU's IDE/AHCI hard disks have no read-only mode; libvirt refuses them on define.
        _require(not (self.readonly and self.device == "disk" and self.bus in ("ide", "sata")),
                 f"{where}: a read-only disk cannot be on the {self.bus} bus (use virtio or scsi)")
        _require(self.type in ("file", "block"), f"{where}: type must be 'file' or 'block'")
        _require(not (self.source and self.source_dev),
                 f"{where}: give either source (a file) or source_dev (a block device)")
        path = self.source if self.type == "file" else self.source_dev
        need = "source" if self.type == "file" else "source_dev"
        # Only a cdrom may be an empty tray.
        _require(path or self.device == "cdrom", f"{where}: a {self.type} disk needs {need}")
        _require(not path or str(path).startswith("/"), f"{where}: {path!r} is not absolute")
        _require(re.fullmatch(r"[a-z0-9]+", str(self.format)), f"{where}: bad format")
        _require(self.cache in (None,) + DISK_CACHES,
                 f"{where}: cache must be one of {', '.join(DISK_CACHES)}")
        _require(self.boot_order is None or _is_int(self.boot_order, 1),
                 f"{where}: boot_order must be a positive integer")

    def to_element(self, devices):
        disk = _sub(devices, "disk", type=self.type, device=self.device)
        _sub(disk, "driver", name="qemu", type=self.format, cache=self.cache)
        path = self.source if self.type == "file" else self.source_dev
        if path:
            _sub(disk, "source", **{"file" if self.type == "file" else "dev": path})
        _sub(disk, "target", dev=self.target, bus=self.bus)
        if self.readonly:
            _sub(disk, "readonly")
        if self.boot_order is not None:
            _sub(disk, "boot", order=self.boot_order)

    @classmethod
    def from_view(cls, disk):
        """From a :class:`~saltvirt.domain.xmlview.DiskXml`; None for a disk without a target."""
        if not disk.target:
            return None
        return cls(
            target=disk.target, source=disk.source_file, source_dev=disk.source_dev, type=disk.type,
            device=disk.device, format=disk.format or "raw", bus=disk.bus, readonly=disk.readonly,
            cache=disk.cache, backing=disk.backing, boot_order=disk.boot_order,
        )


@dataclass
class Interface:
    """An ``<interface>``; ``target`` is the live tap device (vnet0...) and never written."""

    type: str = "network"
    source: str | None = None  # bridge, network ('default' if None) or host NIC; None for user
    mac: str = field(default_factory=random_mac)
    model: str = "virtio"
    mode: str | None = None  # macvtap mode, 'direct' only; None there means 'bridge'
    target: str | None = None

    def __post_init__(self):
        self.mac = str(self.mac).lower()
        if self.type == "network" and self.source is None:
            self.source = "default"
        if self.type == "direct" and self.mode is None:
            self.mode = "bridge"

    def check(self):
        where = f"interface {self.mac}"
        _require(self.type in ("bridge", "network", "user", "direct"),
                 f"{where}: type must be bridge, network, user or direct, not {self.type!r}")
        _require(self.type == "user" or self.source, f"{where}: a {self.type} NIC needs a source")
        _require(self.type != "user" or not self.source, f"{where}: a user NIC takes no source")
        _require(_MAC_RE.match(self.mac) and not int(self.mac[:2], 16) & 1,
                 f"{where}: MAC must be unicast, six hex octets like 52:54:00:12:34:56")
        _require(re.fullmatch(r"[A-Za-z0-9_-]+", str(self.model)), f"{where}: bad model")
        _require(self.mode is None or (self.type == "direct" and self.mode in DIRECT_MODES),
                 f"{where}: mode is for direct NICs only: {', '.join(DIRECT_MODES)}")

    def to_element(self, devices):
        nic = _sub(devices, "interface", type=self.type)
        _sub(nic, "mac", address=self.mac)
        if self.type in _NIC_SOURCE_ATTR:
            _sub(nic, "source", **{_NIC_SOURCE_ATTR[self.type]: self.source, "mode": self.mode})
        # No <target dev>: libvirt names taps itself and drops vnet*/macvtap* names on define.
        _sub(nic, "model", type=self.model)

    @classmethod
    def from_view(cls, nic):
        return cls(
            type=nic.type, source=nic.source, mac=nic.mac or random_mac(), model=nic.model,
            mode=_attr(nic.element, "source", "mode") if nic.type == "direct" else None, target=nic.target,
        )


@dataclass
class Graphics:
    """VNC or SPICE ``<graphics>``; ``listen=None`` leaves the address to qemu.conf."""

    type: str = "vnc"
    listen: str | None = "127.0.0.1"  # never 0.0.0.0 by default: a console is root on the guest
    port: int = -1  # -1: pick one (autoport); live XML reports the real port
    autoport: bool | None = None  # None: port == -1
    password: str | None = field(default=None, repr=False)  # repr=False keeps it out of logs
    websocket: int | None = None

    def __post_init__(self):
        if self.autoport is None:
            self.autoport = self.port == -1

    def check(self):
        where = f"{self.type} graphics"
        _require(self.type in ("vnc", "spice"), "graphics type must be 'vnc' or 'spice'")
        low = 5900 if self.type == "vnc" else 1  # QEMU takes a VNC display number, port - 5900
        _require(self.port == -1 or (_is_int(self.port, low) and self.port <= 65535),
                 f"{where}: port must be -1 (automatic) or {low}..65535")
        _require(self.port != -1 or self.autoport, f"{where}: port -1 needs autoport")
        ws = self.websocket
        _require(ws is None or (self.type == "vnc" and _is_int(ws, -1) and ws != 0 and ws <= 65535),
                 f"{where}: websocket is VNC only, -1 (automatic) or 1..65535")
        # The VNC protocol uses 8 characters at most; QEMU would silently ignore the rest.
        _require(self.password is None or self.type != "vnc" or 0 < len(self.password) <= 8,
                 f"{where}: a VNC password must be 1 to 8 characters")

    def to_element(self, devices):
        gfx = _sub(devices, "graphics", type=self.type, port=self.port,
                   autoport="yes" if self.autoport else "no", listen=self.listen,
                   passwd=self.password, websocket=self.websocket)
        if self.listen:
            _sub(gfx, "listen", type="address", address=self.listen)

    @classmethod
    def from_view(cls, gfx):
        elem = gfx.element
        return cls(
            type=gfx.type, listen=gfx.listen, port=gfx.port if gfx.port is not None else -1,
            autoport=None if elem.get("autoport") is None else gfx.autoport,
            # Only in VIR_DOMAIN_XML_SECURE output; otherwise libvirt hides it.
            password=gfx.passwd, websocket=_int(elem.get("websocket")),
        )


@dataclass
class Serial:
    """A pty ``<serial>``; ``tty`` is the live /dev/pts path and never written."""

    port: int = 0
    log: str | None = None
    tty: str | None = None

    def check(self):
        _require(_is_int(self.port, 0), f"serial port must be an integer >= 0, not {self.port!r}")
        _require(self.log is None or str(self.log).startswith("/"),
                 f"serial {self.port}: log {self.log!r} is not an absolute path")

    def to_element(self, devices):
        serial = _sub(devices, "serial", type="pty")
        if self.log:
            # append='on': the log survives migration and restarts instead of being truncated.
            _sub(serial, "log", file=self.log, append="on")
        _sub(serial, "target", port=self.port)

    @classmethod
    def from_view(cls, serial):
        elem = serial.element
        return cls(port=_int(_attr(elem, "target", "port"), 0), log=serial.log,
                   tty=_attr(elem, "source", "path") or elem.get("tty"))


@dataclass
class Domain:
    """A whole domain; ``memory`` and ``current_memory`` are in KiB, like libvirt's XML."""

    name: str
    memory: int = 524288
    vcpus: int = 1
    type: str = "kvm"
    uuid: str | None = None
    current_memory: int | None = None  # None: same as memory
    os_type: str = "hvm"
    arch: str = "x86_64"
    machine: str | None = None
    boot: list[str] = field(default_factory=lambda: ["hd"])
    kernel: str | None = None
    initrd: str | None = None
    cmdline: str | None = None
    # Without ACPI the guest never sees the power button, so it cannot be shut down cleanly.
    features: list[str] = field(default_factory=lambda: ["acpi", "apic"])
    cpu_mode: str | None = None
    cpu_model: str | None = None  # only with cpu_mode='custom'
    on_poweroff: str = "destroy"
    on_reboot: str = "restart"
    on_crash: str = "destroy"
    emulator: str | None = None
    disks: list[Disk] = field(default_factory=list)
    interfaces: list[Interface] = field(default_factory=list)
    graphics: list[Graphics] = field(default_factory=list)
    serials: list[Serial] = field(default_factory=list)
    memballoon: bool = True
    rng: bool = False  # virtio-rng fed from the host's /dev/urandom
    # Written over the XML built from the fields above, last (saltvirt.provision.hardware:
    # cpu/mem dicts, numatune, serials, consoles, host devices); never read back.
    sections: list = field(default_factory=list, repr=False)
    # Firmware, clock, hypervisor features: saltvirt.domain.platform settings beyond the fields
    # above (see platform_settings), written over what they build.
    platform: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.current_memory is None:
            self.current_memory = self.memory

    def check(self):
        """Raise :class:`InvalidArgument` for what libvirt would refuse or we never want."""
        name = validate_name(self.name)
        if self.uuid is not None:
            try:
                uuidlib.UUID(str(self.uuid))
            except ValueError:
                raise InvalidArgument(f"{name}: bad uuid {self.uuid!r}") from None
        _require(self.type in ("qemu", "kvm"), f"{name}: type must be 'qemu' or 'kvm'")
        for what in ("memory", "current_memory", "vcpus"):
            _require(_is_int(getattr(self, what), 1),
                     f"{name}: {what} must be a positive integer, not {getattr(self, what)!r}")
        _require(self.current_memory <= self.memory, f"{name}: current_memory exceeds memory")
        _require(self.os_type == "hvm", f"{name}: only os_type 'hvm' is supported")
        _require(re.fullmatch(r"[a-z0-9_]+", str(self.arch)), f"{name}: bad arch {self.arch!r}")
        _require(set(self.boot) <= set(BOOT_DEVICES),
                 f"{name}: boot devices must be among {', '.join(BOOT_DEVICES)}")
        # libvirt refuses to define a domain that mixes <os><boot> with per-device <boot order>.
        _require(not (self.boot and any(d.boot_order is not None for d in self.disks)),
                 f"{name}: per-disk boot_order needs boot=[]")
        _require(self.kernel or not (self.initrd or self.cmdline),
                 f"{name}: initrd and cmdline need a kernel")
        _require(all(re.fullmatch(r"[a-z0-9_-]+", str(f)) for f in self.features),
                 f"{name}: bad feature name in {self.features!r}")
        _require(self.cpu_mode in (None,) + CPU_MODES,
                 f"{name}: cpu_mode must be one of {', '.join(CPU_MODES)}")
        # Plain TCG emulation has no host CPU to pass through; QEMU would refuse to start.
        _require(self.cpu_mode != "host-passthrough" or self.type == "kvm",
                 f"{name}: cpu_mode 'host-passthrough' needs type 'kvm'")
        _require((self.cpu_mode == "custom") == bool(self.cpu_model),
                 f"{name}: cpu_model goes with, and only with, cpu_mode 'custom'")
        for attr, allowed in _LIFECYCLE.items():
            _require(getattr(self, attr) in allowed, f"{name}: {attr} must be one of {allowed}")
        for kind, items, key in (("disk target", self.disks, "target"),
                                 ("MAC", self.interfaces, "mac"),
                                 ("serial port", self.serials, "port")):
            keys = [getattr(item, key) for item in items]
            dupes = sorted({str(k) for k in keys if keys.count(k) > 1})
            _require(not dupes, f"{name}: duplicate {kind} {', '.join(dupes)}")
        for device in (*self.disks, *self.interfaces, *self.graphics, *self.serials):
            device.check()
        domplatform.check(self.platform, name, self.effective_cpu_mode())

    def effective_cpu_mode(self):
        """The CPU mode the XML gets: a ``cpu`` dict's ``mode`` (a section, written last) wins
        over the plain :attr:`cpu_mode`."""
        for section in self.sections:
            if getattr(section, "name", None) == "cpu" and "mode" in getattr(section, "want", {}):
                return section.want["mode"]
        return self.cpu_mode

    def to_xml(self):
        """Checked libvirt domain XML for defining this domain."""
        self.check()
        root = ET.Element("domain", type=self.type)
        _sub(root, "name", self.name)
        if self.uuid:
            _sub(root, "uuid", self.uuid)
        _sub(root, "memory", self.memory, unit="KiB")
        _sub(root, "currentMemory", self.current_memory, unit="KiB")
        _sub(root, "vcpu", self.vcpus, placement="static")
        os_el = _sub(root, "os")
        _sub(os_el, "type", self.os_type, arch=self.arch, machine=self.machine)
        for tag in ("kernel", "initrd", "cmdline"):
            if getattr(self, tag):
                _sub(os_el, tag, getattr(self, tag))
        for dev in self.boot:
            _sub(os_el, "boot", dev=dev)
        if self.features:
            features = _sub(root, "features")
            for feature in self.features:
                _sub(features, feature)
        if self.cpu_mode:
            cpu = _sub(root, "cpu", mode=self.cpu_mode,
                       match="exact" if self.cpu_mode == "custom" else None)
            if self.cpu_model:
                _sub(cpu, "model", self.cpu_model, fallback="allow")
        for attr in _LIFECYCLE:
            _sub(root, attr, getattr(self, attr))
        devices = _sub(root, "devices")
        if self.emulator:
            _sub(devices, "emulator", self.emulator)
        for device in (*self.disks, *self.interfaces, *self.serials, *self.graphics):
            device.to_element(devices)
        if self.serials:
            # Only the first <console> may alias a serial port, so exactly one.
            console = _sub(devices, "console", type="pty")
            _sub(console, "target", type="serial", port=self.serials[0].port)
        _sub(devices, "memballoon", model="virtio" if self.memballoon else "none")
        if self.rng:
            _sub(_sub(devices, "rng", model="virtio"), "backend", "/dev/urandom", model="random")
        view = xmlview.DomainXml(root)
        for section in self.sections:
            section.write(view)
        domplatform.write(xmlview.DomainXml(root), self.platform)
        ET.indent(root)
        return ET.tostring(root, encoding="unicode") + "\n"

    @classmethod
    def from_xml(cls, xml):
        """Parse defined or live domain XML (through :class:`~saltvirt.domain.xmlview.DomainXml`);
        elements and devices not modelled here are ignored."""
        view = xmlview.DomainXml.parse(xml)
        return cls(
            name=view.name, uuid=view.uuid, type=view.type, memory=view.memory or 0,
            current_memory=view.current_memory, vcpus=view.vcpus, os_type=view.os_type, arch=view.arch,
            machine=view.machine, boot=view.boot, kernel=view.kernel, initrd=view.initrd, cmdline=view.cmdline,
            features=view.features, cpu_mode=view.cpu_mode, cpu_model=view.cpu_model,
            on_poweroff=view.on_poweroff, on_reboot=view.on_reboot, on_crash=view.on_crash,
            emulator=view.emulator,
            disks=[d for d in map(Disk.from_view, view.disks) if d],
            interfaces=[Interface.from_view(n) for n in view.interfaces],
            graphics=[Graphics.from_view(g) for g in view.graphics if g.type in ("vnc", "spice")],
            serials=[Serial.from_view(s) for s in view.serials if s.type == "pty"],
            memballoon=_attr(view.find("devices"), "memballoon", "model", "none") != "none",
            rng=bool(view.device_elements("rng")),
            platform=domplatform.beyond_fields(domplatform.read(view)),
        )

    def platform_settings(self):
        """Every :mod:`saltvirt.domain.platform` setting of this domain (for comparisons)."""
        return {"boot:kernel": self.kernel, "boot:initrd": self.initrd, "boot:cmdline": self.cmdline,
                "boot_dev": list(self.boot) or None, "stop_on_reboot": self.on_reboot == "destroy",
                **self.platform}

    def to_info(self):
        """Stable inventory dict; a password shows only as ``password_set``."""
        return {
            "name": self.name,
            "uuid": self.uuid,
            "type": self.type,
            "cpu": self.vcpus,
            "memory": self.memory,
            "os": {"type": self.os_type, "arch": self.arch, "machine": self.machine,
                   "boot": list(self.boot), "kernel": self.kernel, "initrd": self.initrd,
                   "cmdline": self.cmdline, "efi": domplatform.uefi(self.platform),
                   "nvram": self.platform.get(domplatform.NVRAM_PATH)},
            "graphics": [{"type": g.type, "listen": g.listen, "port": g.port,
                          "autoport": g.autoport, "password_set": bool(g.password)}
                         for g in self.graphics],
            "disks": {d.target: {"file": d.source or d.source_dev, "type": d.type,
                                 "device": d.device, "format": d.format, "bus": d.bus,
                                 "readonly": d.readonly, "backing": list(d.backing)}
                      for d in self.disks},
            "nics": {n.mac: {"type": n.type, "source": n.source, "model": n.model,
                             "target": n.target}
                     for n in self.interfaces},
        }
