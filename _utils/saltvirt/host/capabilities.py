"""Host and domain capabilities and the CPU baseline, parsed from libvirt's XML.

The parsers are pure (XML in, dicts out, the shapes of the classic ``virt.domain_capabilities``,
``virt.all_capabilities`` and ``virt.cpu_baseline``); the functions taking ``conn`` ask libvirt.
"""

import xml.etree.ElementTree as ET  # noqa: S405 (libvirt's own XML)

from saltvirt.errors import InvalidArgument, VirtError
from saltvirt.errors import libvirt_message as _err

try:
    import libvirt
except ImportError:
    libvirt = None


def _root(xml, tag):
    try:
        root = ET.fromstring(xml)  # noqa: S314 (libvirt's own XML)
    except ET.ParseError as exc:
        raise VirtError(f"libvirt returned unreadable {tag} XML: {exc}") from exc
    if root.tag != tag:
        raise VirtError(f"expected <{tag}>, libvirt returned <{root.tag}>")
    return root


def _text(node, path, kind=str):
    found = node.find(path)
    if found is None or found.text is None:
        return None
    return kind(found.text.strip())


def _enums(node):
    """``{name: [values]}`` of the ``<enum>`` children of ``node``."""
    return {enum.get("name"): [v.text for v in enum.findall("value")]
            for enum in node.findall("enum") if enum.get("name")}


def _supported(node):
    return node is not None and node.get("supported") == "yes"


# --------------------------------------------------------------------------- domain capabilities


def _cpu_modes(cpu):
    modes = {}
    for mode in cpu.findall("mode"):
        if not _supported(mode):
            continue
        name = mode.get("name")
        if name in ("host-passthrough", "maximum"):
            modes[name] = True
        elif name == "host-model":
            entry = {}
            model = mode.find("model")
            if model is not None:
                entry["model"] = {"name": model.text}
                entry["model"].update({k: model.get(k) for k in ("vendor_id", "fallback") if model.get(k)})
            vendor = _text(mode, "vendor")
            if vendor:
                entry["vendor"] = vendor
            features = {f.get("name"): f.get("policy") for f in mode.findall("feature")}
            if features:
                entry["features"] = features
            modes[name] = entry
        elif name == "custom":
            models = {m.text: m.get("usable") for m in mode.findall("model")}
            modes[name] = {"models": models} if models else {}
    return modes


def _supported_children(node):
    """``{tag: {enum: values}}`` of the supported children of ``<devices>`` or ``<features>``."""
    return {child.tag: _enums(child) for child in node if _supported(child)}


def parse_domain_caps(xml):
    """``virConnectGetDomainCapabilities``' XML as the classic dict: emulator, domain, machine,
    arch, max_vcpus, iothreads, os (loader), cpu (supported modes), devices, features."""
    root = _root(xml, "domainCapabilities")
    result = {
        "emulator": _text(root, "path"),
        "domain": _text(root, "domain"),
        "machine": _text(root, "machine"),
        "arch": _text(root, "arch"),
    }
    vcpu = root.find("vcpu")
    if vcpu is not None and vcpu.get("max"):
        result["max_vcpus"] = int(vcpu.get("max"))
    iothreads = root.find("iothreads")
    if iothreads is not None:
        result["iothreads"] = _supported(iothreads)
    os_node = root.find("os")
    if os_node is not None:
        result["os"] = {}
        loader = os_node.find("loader")
        if _supported(loader):
            parsed = _enums(loader)
            values = [v.text for v in loader.findall("value")]
            if values:
                parsed["values"] = values
            result["os"]["loader"] = parsed
    for tag, parse in (("cpu", _cpu_modes), ("devices", _supported_children),
                       ("features", _supported_children)):
        node = root.find(tag)
        parsed = parse(node) if node is not None else None
        if parsed:
            result[tag] = parsed
    return result


# --------------------------------------------------------------------------- host capabilities


def _machines(parent):
    """``{machine name: {alternate names, maxcpus}}`` of the ``<machine>`` children."""
    machines = {}
    for node in parent.findall("machine"):
        name = node.text
        canonical = node.get("canonical")
        key = canonical or name
        entry = machines.setdefault(key, {"alternate_names": []})
        if canonical:
            entry["alternate_names"].append(name)
        if node.get("maxCpus"):
            entry["maxcpus"] = int(node.get("maxCpus"))
    return machines


def parse_guest(guest):
    """One ``<guest>`` of the host capabilities: os_type, arch (name, wordsize, emulator,
    machines, domains: {type: {emulator, machines}}), features."""
    arch = guest.find("arch")
    result = {
        "os_type": _text(guest, "os_type"),
        "arch": {
            "name": arch.get("name"),
            "wordsize": _text(arch, "wordsize", int),
            "emulator": _text(arch, "emulator"),
            "machines": _machines(arch),
            "domains": {
                dom.get("type"): {"emulator": _text(dom, "emulator"), "machines": _machines(dom)}
                for dom in arch.findall("domain")
            },
        },
    }
    features = guest.find("features")
    if features is not None:
        result["features"] = {
            f.tag: {"toggle": f.get("toggle", "no") == "yes", "default": f.get("default", "on") == "on"}
            for f in features
        }
    return result


def _cells(topology):
    cells = []
    for cell in topology.findall("cells/cell"):
        entry = {"id": int(cell.get("id"))}
        memory = cell.find("memory")
        if memory is not None:
            entry["memory"] = f"{memory.text} {memory.get('unit', 'KiB')}"
        cpus = [{"id": int(cpu.get("id")),
                 **{k: int(cpu.get(k)) for k in ("socket_id", "core_id") if cpu.get(k)},
                 **({"siblings": cpu.get("siblings")} if cpu.get("siblings") else {})}
                for cpu in cell.findall("cpus/cpu")]
        if cpus:
            entry["cpus"] = cpus
        cells.append(entry)
    return cells


def parse_host(host):
    """The ``<host>`` of the host capabilities: uuid, cpu (arch, model, vendor, features,
    topology), power_management, migration, topology (NUMA cells), security models."""
    result = {"uuid": _text(host, "uuid")}
    cpu = host.find("cpu")
    if cpu is not None:
        entry = {
            "arch": _text(cpu, "arch"),
            "model": _text(cpu, "model"),
            "vendor": _text(cpu, "vendor"),
            "features": [f.get("name") for f in cpu.findall("feature")],
            "pages": [{"size": f"{p.get('size')} {p.get('unit', 'KiB')}"} for p in cpu.findall("pages")],
        }
        topology = cpu.find("topology")
        if topology is not None:
            entry.update({k: int(topology.get(k)) for k in ("sockets", "cores", "threads") if topology.get(k)})
        result["cpu"] = entry
    power = host.find("power_management")
    if power is not None:
        result["power_management"] = [node.tag for node in power]
    migration = host.find("migration_features")
    if migration is not None:
        result["migration"] = {
            "live": migration.find("live") is not None,
            "transports": [t.text for t in migration.findall("uri_transports/uri_transport")],
        }
    topology = host.find("topology")
    if topology is not None:
        result["topology"] = {"cells": _cells(topology)}
    result["security"] = [
        {"model": _text(sec, "model"), "doi": _text(sec, "doi"),
         "baselabels": [{"type": b.get("type"), "label": b.text} for b in sec.findall("baselabel")]}
        for sec in host.findall("secmodel")
    ]
    return result


def parse_capabilities(xml):
    """``virConnectGetCapabilities``' XML as ``{host, guests}``."""
    root = _root(xml, "capabilities")
    return {"host": parse_host(root.find("host")), "guests": [parse_guest(g) for g in root.findall("guest")]}


def guest_domains(caps):
    """``(arch, domain type, emulator)`` for every domain type of every guest of parsed caps."""
    return [
        (guest["arch"]["name"], dom_type, dom["emulator"] or guest["arch"]["emulator"])
        for guest in caps["guests"]
        for dom_type, dom in guest["arch"]["domains"].items()
    ]


def hypervisor_types(caps):
    """The domain types this host offers (``kvm``, ``qemu``, ...), sorted."""
    return sorted({dom_type for _arch, dom_type, _emulator in guest_domains(caps)})


# --------------------------------------------------------------------------- CPU baseline


def host_cpu_xml(caps_xml):
    """The ``<cpu>`` of the host capabilities, as XML for ``virConnectBaselineCPU``."""
    cpu = _root(caps_xml, "capabilities").find("host/cpu")
    if cpu is None:
        raise VirtError("the host capabilities have no <cpu>")
    return ET.tostring(cpu, encoding="unicode")


def parse_cpu(xml):
    """A ``<cpu>`` definition as ``{model, vendor, features: [{name, policy}]}``."""
    root = _root(xml, "cpu")
    return {
        "model": _text(root, "model"),
        "vendor": _text(root, "vendor"),
        "features": [dict(f.attrib) for f in root.findall("feature")],
    }


# --------------------------------------------------------------------------- libvirt calls


def _call(what, func, *args):
    try:
        return func(*args)
    except libvirt.libvirtError as exc:
        raise VirtError(f"cannot read {what}: {_err(exc)}") from exc


def capabilities(conn):
    return parse_capabilities(_call("the host capabilities", conn.getCapabilities))


def domain_capabilities(conn, emulator=None, arch=None, machine=None, domain=None):
    xml = _call("the domain capabilities", conn.getDomainCapabilities, emulator, arch, machine, domain, 0)
    return parse_domain_caps(xml)


def all_capabilities(conn):
    """``{host: {host, guests}, domains: [domain capabilities of each guest domain type]}``."""
    caps = capabilities(conn)
    domains = [domain_capabilities(conn, emulator, arch, None, dom_type)
               for arch, dom_type, emulator in guest_domains(caps)]
    return {"host": caps, "domains": domains}


def cpu_baseline(conn, full=False, migratable=False, out="libvirt"):
    """The best CPU definition every domain on this host can use: libvirt's XML, or with
    ``out='salt'`` :func:`parse_cpu`'s dict. ``full``: every feature, not only those on top of the
    model; ``migratable``: without the features that prevent migration."""
    if out not in ("libvirt", "salt"):
        raise InvalidArgument(f"out must be 'libvirt' or 'salt', not {out!r}")
    flags = 0
    if full:
        flags |= libvirt.VIR_CONNECT_BASELINE_CPU_EXPAND_FEATURES
    if migratable:
        flags |= libvirt.VIR_CONNECT_BASELINE_CPU_MIGRATABLE
    cpu = host_cpu_xml(_call("the host capabilities", conn.getCapabilities))
    xml = _call("the CPU baseline", conn.baselineCPU, [cpu], flags)
    return parse_cpu(xml) if out == "salt" else xml


def hypervisor_name(conn):
    """The hypervisor libvirt drives here: ``kvm`` when the QEMU driver offers KVM domains,
    ``qemu`` when it offers only emulation (TCG), else the driver's name (``xen``, ``bhyve``...)."""
    driver = _call("the hypervisor type", conn.getType).lower()
    if driver == "qemu":
        return "kvm" if "kvm" in hypervisor_types(capabilities(conn)) else "qemu"
    return driver
