"""Serial ports and consoles: the classic ``serials``/``consoles`` lists over domain XML views.

Each entry is ``{type, ...}`` with ``type`` one of ``pty``, ``tcp`` (``port``, ``host`` default
127.0.0.1, ``mode`` bind|connect, ``protocol`` raw|telnet|telnets|tls, ``tls``), ``file`` or
``unix`` (``path``, which must lie under the operator's ``virt:attach_roots``: a caller may not
make QEMU write host files elsewhere), and optionally ``target_port`` / ``target_type``. Host
character devices (``dev``), pipes and UDP are refused.

salt-virt gives every VM a serial port 0 whose output is kept in ``/var/log/libvirt/qemu/<vm>-
serial.log`` (``virt.console`` and the boot logs read it). With ``serials``, the caller's port 0
(if it is pty, tcp or unix) gets that log; without a port 0, the logged pty serial is added.
The first console is libvirt's alias of serial port 0; ``consoles`` adds the others (virtio by
default). :class:`Serials` and :class:`Consoles` write and compare the XML, as
:class:`saltvirt.domain.tuning.Section` does.
"""

import xml.etree.ElementTree as ET  # noqa: S405 (building our own XML)

from saltvirt.errors import InvalidArgument

TYPES = ("pty", "tcp", "file", "unix")
REFUSED_TYPES = ("dev", "pipe", "udp", "stdio", "null", "vc", "spicevmc", "spiceport", "nmdm", "qemu-vdagent", "dbus")
PROTOCOLS = ("raw", "telnet", "telnets", "tls")
_KEYS = ("type", "target_port", "target_type", "port", "host", "mode", "protocol", "tls", "path")


def _entry(item, index, what, roots):
    if not isinstance(item, dict):
        item = {"type": item}
    unknown = sorted(set(item) - set(_KEYS))
    if unknown:
        raise InvalidArgument(f"{what}: unknown key(s) {', '.join(unknown)} (known: {', '.join(_KEYS)})")
    kind = item.get("type", "pty")
    if kind in REFUSED_TYPES:
        raise InvalidArgument(f"{what}: type {kind!r} (host devices, pipes, UDP) is not supported: "
                              f"use one of {', '.join(TYPES)}")
    if kind not in TYPES:
        raise InvalidArgument(f"{what}: type must be one of {', '.join(TYPES)}, not {kind!r}")
    out = {"type": kind, "target_port": _number(item.get("target_port", index), f"{what}:target_port", 0)}
    if item.get("target_type") is not None:
        out["target_type"] = str(item["target_type"])
    if kind == "tcp":
        out["port"] = _number(item.get("port"), f"{what}:port", 1, 65535)
        out["host"] = str(item.get("host") or "127.0.0.1")  # never every address unless asked
        out["mode"] = item.get("mode") or "bind"
        out["protocol"] = item.get("protocol") or "raw"
        if out["mode"] not in ("bind", "connect") or out["protocol"] not in PROTOCOLS:
            raise InvalidArgument(f"{what}: mode is bind or connect, protocol one of {', '.join(PROTOCOLS)}")
        if item.get("tls") is not None:
            out["tls"] = bool(item["tls"])
    elif kind in ("file", "unix"):
        if not item.get("path"):
            raise InvalidArgument(f"{what}: a {kind} {'console' if what.startswith('consoles') else 'serial'} "
                                  "needs a path")
        out["path"] = roots.attach(item["path"], f"{what}:path")
    for key in ("port", "host", "mode", "protocol", "tls", "path"):
        if key in item and key not in out and item[key] is not None:
            raise InvalidArgument(f"{what}: {key} does not go with type {kind}")
    return out


def _number(value, what, low, high=None):
    if isinstance(value, bool) or not str(value).isdigit() or int(value) < low or (high and int(value) > high):
        raise InvalidArgument(f"{what} must be an integer {low}..{high or 'up'}, not {value!r}")
    return int(value)


def serial_entries(serials, log, roots):
    """The serial ports of a VM: the caller's ``serials`` with the logged port 0 (see the module)."""
    if serials is None:
        return [{"type": "pty", "target_port": 0, "log": log}]
    if not isinstance(serials, list):
        raise InvalidArgument("serials must be a list of {type, ...}")
    entries = [_entry(item, index, f"serials[{index}]", roots) for index, item in enumerate(serials)]
    ports = [e["target_port"] for e in entries]
    if len(set(ports)) != len(ports):
        raise InvalidArgument(f"serials: duplicate target_port in {ports}")
    first = next((e for e in entries if e["target_port"] == 0), None)
    if first is None:
        entries.insert(0, {"type": "pty", "target_port": 0, "log": log})
    elif first["type"] != "file":
        first["log"] = log
    return sorted(entries, key=lambda e: e["target_port"])


def console_entries(consoles, roots):
    """The consoles besides serial port 0's alias (virtio by default); a serial-type one is that alias."""
    if consoles is None:
        return None
    if not isinstance(consoles, list):
        raise InvalidArgument("consoles must be a list of {type, ...}")
    out = []
    for index, item in enumerate(consoles):
        entry = _entry(item, index, f"consoles[{index}]", roots)
        if entry.get("target_type", "serial" if index == 0 else "virtio") == "serial":
            if index or entry["type"] != "pty":
                raise InvalidArgument(f"consoles[{index}]: a serial console is the alias of serial port 0: "
                                      "set its type with serials, and use target_type virtio here")
            continue
        entry.setdefault("target_type", "virtio")
        # libvirt numbers consoles in order, port 0 being serial port 0's alias.
        entry["target_port"] = len(out) + 1
        out.append(entry)
    return out


# --------------------------------------------------------------------------- XML


def to_element(tag, entry):
    elem = ET.Element(tag, type=entry["type"])
    source = {}
    if entry["type"] == "tcp":
        source = {"mode": entry["mode"], "host": entry["host"], "service": str(entry["port"])}
        if "tls" in entry:
            source["tls"] = "yes" if entry["tls"] else "no"
    elif entry["type"] == "unix":
        source = {"mode": "bind", "path": entry["path"]}
    elif entry["type"] == "file":
        source = {"path": entry["path"], "append": "on"}
    if source:
        ET.SubElement(elem, "source", source)
    if entry["type"] == "tcp":
        ET.SubElement(elem, "protocol", type=entry["protocol"])
    if entry.get("log"):
        # append='on': the log survives migration and restarts instead of being truncated.
        ET.SubElement(elem, "log", file=entry["log"], append="on")
    target = ET.SubElement(elem, "target", port=str(entry["target_port"]))
    if entry.get("target_type"):
        target.set("type", entry["target_type"])
    return elem


def from_element(elem):
    """The entry of a ``<serial>``/``<console>`` element (the keys :func:`to_element` writes)."""
    source, target = elem.find("source"), elem.find("target")
    src = source.attrib if source is not None else {}
    kind = elem.get("type")
    entry = {"type": kind, "target_port": int((target.get("port") if target is not None else None) or 0)}
    if target is not None and target.get("type"):
        entry["target_type"] = target.get("type")
    if kind == "tcp":
        entry.update(mode=src.get("mode"), host=src.get("host"), port=int(src.get("service") or 0),
                     protocol=elem.find("protocol").get("type") if elem.find("protocol") is not None else "raw")
        if src.get("tls"):
            entry["tls"] = src["tls"] == "yes"
    elif kind in ("file", "unix"):
        entry["path"] = src.get("path")
    log = elem.find("log")
    if log is not None:
        entry["log"] = log.get("file")
    return entry


def _matches(have, want):
    return len(have) == len(want) and all(
        all(h.get(k) == v for k, v in w.items()) for h, w in zip(have, want, strict=True))


class Serials:
    """All ``<serial>`` elements of a domain (and the console aliasing port 0)."""

    name = "serials"

    def __init__(self, entries):
        self.entries = entries

    def read(self, view):
        return [from_element(e) for e in view.device_elements("serial")]

    def differences(self, view):
        have = self.read(view)
        return {} if _matches(have, self.entries) else {"serials": (have, self.entries)}

    def write(self, view):
        devices = view.make("devices")
        for old in view.device_elements("serial"):
            devices.remove(old)
        for old in view.device_elements("console"):
            target = old.find("target")
            if target is None or target.get("type", "serial") == "serial":
                devices.remove(old)
        consoles = [i for i, c in enumerate(devices) if c.tag == "console"]
        at = consoles[0] if consoles else len(devices)
        for offset, entry in enumerate(self.entries):
            devices.insert(at + offset, to_element("serial", entry))
        if self.entries:
            alias = to_element("console", dict(self.entries[0], target_type="serial", log=None))
            devices.insert(at + len(self.entries), alias)


class Consoles:
    """The ``<console>`` elements besides the alias of serial port 0."""

    name = "consoles"

    def __init__(self, entries):
        self.entries = entries

    def _own(self, view):
        return [e for e in view.device_elements("console")
                if e.find("target") is not None and e.find("target").get("type", "serial") != "serial"]

    def read(self, view):
        return [from_element(e) for e in self._own(view)]

    def differences(self, view):
        have = self.read(view)
        return {} if _matches(have, self.entries) else {"consoles": (have, self.entries)}

    def write(self, view):
        devices = view.make("devices")
        for old in self._own(view):
            devices.remove(old)
        for entry in self.entries:
            devices.append(to_element("console", entry))
