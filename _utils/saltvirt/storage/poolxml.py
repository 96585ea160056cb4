"""Storage pools: the classic arguments checked and named (:class:`PoolSpec`), and pool XML as a
view over the parsed document (:class:`PoolXml`): read, change, write back, lose nothing.

:meth:`PoolSpec.settings` and :meth:`PoolXml.settings` give the same normalised form::

    {"ptype": "dir", "target": "/srv/pools/a", "permissions": {"mode": "0755", "owner": "107"},
     "source": {"devices": [{"path": "/dev/sdb"}], "dir": ..., "adapter": {...},
                "hosts": [{"name": "nfs1", "port": 2049}], "auth": {...}, "name": ..., "format": ...,
                "initiator": ...}}

so "what the caller asked for" and "what the pool has" compare as plain dicts. Only what the
caller gives is compared: libvirt fills in defaults (a logical pool's target and format, a
running pool's permissions), which are not differences.
"""

import xml.etree.ElementTree as ET  # noqa: S405 (libvirt's own XML, or ours)
from dataclasses import dataclass, field

from saltvirt.domain.xmlview import NamedXml, XmlView, XPath
from saltvirt.errors import InvalidArgument
from saltvirt.provision.spec import _FromKwargs, check_name
from saltvirt.storage import paths

PERMISSION_KEYS = ("mode", "owner", "group", "label")
#: The ``source_*`` arguments, in the order libvirt writes ``<source>``'s children.
SOURCE_KEYS = ("hosts", "devices", "dir", "adapter", "name", "format", "auth", "initiator")
ADAPTER_KEYS = ("type", "name", "parent", "managed", "parent_wwnn", "parent_wwpn", "parent_fabric_wwn", "wwnn",
                "wwpn")
#: The ``source_*`` settings that are one attribute of one element: ``(path, attribute)``.
_SOURCE_ATTRS = {"dir": ("dir", "path"), "format": ("format", "type"), "initiator": ("initiator/iqn", "name")}
PCI_KEYS = ("domain", "bus", "slot", "function")
#: Secret usage types by pool type, for ``source_auth: {username, password}``.
SECRET_TYPES = {"rbd": "ceph", "iscsi": "chap", "iscsi-direct": "chap"}


@dataclass
class PoolSpec(_FromKwargs):
    """A storage pool as ``virt.pool_define`` takes it (see its docstring per field)."""

    REQUIRED = ("name", "ptype")
    ALIASES = {}
    DOC = "virt.pool_define"

    name: str
    ptype: str
    target: str | None = None
    permissions: dict | None = None
    source_devices: list | None = None
    source_dir: str | None = None
    source_initiator: str | None = None
    source_adapter: dict | None = None
    source_hosts: list | None = None
    source_auth: dict | None = None
    source_name: str | None = None
    source_format: str | None = None
    transient: bool = False
    start: bool = True
    extra: dict = field(default_factory=dict, repr=False)  # set aside: connection arguments

    def __post_init__(self):
        self._settings = _settings(self)

    def settings(self):
        """The normalised settings (see the module documentation); a copy."""
        out = dict(self._settings)
        out["source"] = {k: v for k, v in self._settings["source"].items()}
        return out

    @property
    def password(self):
        """The password of ``source_auth: {username, password}`` (becomes a libvirt secret)."""
        return (self.source_auth or {}).get("password")


def _bad(name, what, value, fix):
    return InvalidArgument(f"pool {name}: {what}={value!r} {fix}")


def _settings(spec):
    check_name("pool", spec.name)
    if spec.ptype not in paths.POOL_TYPES:
        raise _bad(spec.name, "ptype", spec.ptype, f"is not a libvirt pool type: use one of "
                   f"{', '.join(paths.POOL_TYPES)}")
    for flag in ("transient", "start"):
        if not isinstance(getattr(spec, flag), bool):
            raise _bad(spec.name, flag, getattr(spec, flag), "must be True or False")
    if spec.target is not None and (not isinstance(spec.target, str) or not spec.target.startswith("/")):
        raise _bad(spec.name, "target", spec.target, "must be an absolute path")
    source = {
        "hosts": _hosts(spec),
        "devices": _devices(spec),
        "dir": _text(spec, "source_dir", spec.source_dir),
        "adapter": _adapter(spec),
        "name": _text(spec, "source_name", spec.source_name),
        "format": _text(spec, "source_format", spec.source_format),
        "auth": _auth(spec),
        "initiator": _text(spec, "source_initiator", spec.source_initiator),
    }
    if source["dir"] and source["format"] == "cifs":
        source["dir"] = source["dir"].lstrip("/")  # a share name, not a path
    return {"ptype": spec.ptype, "target": spec.target, "permissions": _permissions(spec.name, spec.permissions),
            "source": {k: v for k, v in source.items() if v not in (None, [], {})}}


def _text(spec, what, value):
    if value is None or value == "":
        return None
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise _bad(spec.name, what, value, "must be a string")
    return str(value)


def _merge_listed(name, value):
    """The classic state documentation writes ``permissions`` as a list of one-key mappings
    (``- mode: 0770``, ``- owner: 1000``): the same settings as one mapping."""
    if not isinstance(value, list) or not all(isinstance(i, dict) and len(i) == 1 for i in value):
        return value
    keys = [next(iter(item)) for item in value]
    if len(set(keys)) != len(keys):
        raise _bad(name, "permissions", value, "names a setting twice")
    return {key: item[key] for key, item in zip(keys, value, strict=True)}


def _mode(item):
    """A mode as written: ``"0755"``, or a number. Salt's YAML reads ``mode: 0755`` as the number
    755, whose digits are the octal mode (the classic module wrote them as they are); a number
    with an 8 or a 9 can only be the mode's value itself (0o750 from Python is 488)."""
    if isinstance(item, bool):
        return -1
    digits = str(item)
    if isinstance(item, int) and not set(digits) <= set("01234567"):
        return item
    try:
        return int(digits, 8)
    except ValueError:
        return -1


def _permissions(name, value):
    value = _merge_listed(name, value)
    if value in (None, {}, []):
        return None
    if not isinstance(value, dict) or set(value) - set(PERMISSION_KEYS):
        raise _bad(name, "permissions", value, f"must be a mapping of {', '.join(PERMISSION_KEYS)}")
    out = {}
    for key, item in value.items():
        if item is None:
            continue
        if key == "mode":
            mode = _mode(item)
            if not 0 <= mode <= 0o777:  # libvirt takes no setuid/setgid/sticky bits here
                raise _bad(name, "permissions mode", item, "must be an octal mode like 0755 (at most 0777)")
            out["mode"] = f"{mode:04o}"
        elif key in ("owner", "group"):
            if not str(item).lstrip("-").isdigit():
                raise _bad(name, f"permissions {key}", item, "must be a numeric id")
            out[key] = str(int(item))
        else:
            out[key] = str(item)
    return out or None


def _hosts(spec):
    hosts = spec.source_hosts
    if not hosts:
        return []
    if isinstance(hosts, str):
        hosts = [hosts]
    out = []
    for host in hosts if isinstance(hosts, list) else [None]:
        if not isinstance(host, str) or not host or host.count(":") > 1 or "/" in host:
            raise _bad(spec.name, "source_hosts", spec.source_hosts, "must list host names, each optionally "
                       "followed by :port")
        hostname, _, port = host.partition(":")
        entry = {"name": hostname}
        if port:
            if not port.isdigit() or not 0 < int(port) < 65536:
                raise _bad(spec.name, "source_hosts", host, "has a port that is not a number 1-65535")
            entry["port"] = int(port)
        out.append(entry)
    return out


def _devices(spec):
    devices = spec.source_devices
    if not devices:
        return []
    out = []
    for device in devices if isinstance(devices, list) else [None]:
        device = {"path": device} if isinstance(device, str) else device
        if not isinstance(device, dict) or set(device) - {"path", "part_separator"} or not isinstance(
                device.get("path"), str) or not device["path"]:
            raise _bad(spec.name, "source_devices", spec.source_devices,
                       "must be a list of {path: ..., part_separator: ...} (part_separator optional)")
        entry = {"path": device["path"]}
        if device.get("part_separator") is not None:
            entry["part_separator"] = bool(device["part_separator"])
        out.append(entry)
    return out


def _adapter(spec):
    adapter = spec.source_adapter
    if not adapter:
        return None
    if not isinstance(adapter, dict) or set(adapter) - set(ADAPTER_KEYS) - {"parent_address"}:
        raise _bad(spec.name, "source_adapter", adapter, f"must be a mapping of {', '.join(ADAPTER_KEYS)}, "
                   "parent_address")
    out = {k: (("yes" if v else "no") if isinstance(v, bool) else str(v))
           for k, v in adapter.items() if k != "parent_address" and v is not None}
    parent = adapter.get("parent_address")
    if parent:
        address = parent.get("address") if isinstance(parent, dict) else None
        if not isinstance(address, dict) or set(parent) - {"unique_id", "address"} or set(address) - set(PCI_KEYS):
            raise _bad(spec.name, "source_adapter parent_address", parent,
                       "must be {unique_id: ..., address: {domain, bus, slot, function}}")
        out["parent_address"] = {"address": {k: str(v) for k, v in address.items()}}
        if parent.get("unique_id") is not None:
            out["parent_address"]["unique_id"] = str(parent["unique_id"])
    return out


def _auth(spec):
    auth = spec.source_auth
    if not auth:
        return None
    if isinstance(auth, dict) and set(auth) == {"username", "password"}:
        if spec.ptype not in SECRET_TYPES:
            raise _bad(spec.name, "source_auth", "{username, password}", f"needs a pool type with secrets "
                       f"({', '.join(SECRET_TYPES)})")
        # The secret holding the password is named after the pool (see saltvirt.storage.pools).
        return {"type": SECRET_TYPES[spec.ptype], "username": str(auth["username"]),
                "secret": {"type": "usage", "value": f"pool_{spec.name}"}}
    secret = auth.get("secret") if isinstance(auth, dict) else None
    if (not isinstance(secret, dict) or set(auth) - {"type", "username", "secret"}
            or secret.get("type") not in ("uuid", "usage") or not secret.get("value")
            or auth.get("type") not in ("ceph", "chap") or not auth.get("username")):
        raise _bad(spec.name, "source_auth", "(hidden)", "must be {type: ceph|chap, username: ..., secret: "
                   "{type: uuid|usage, value: ...}} or {username: ..., password: ...}")
    return {"type": auth["type"], "username": str(auth["username"]),
            "secret": {"type": secret["type"], "value": str(secret["value"])}}


def _elem(tag, **attrs):
    return ET.Element(tag, {k: str(v) for k, v in attrs.items() if v is not None})


class PoolXml(NamedXml):
    """A ``<pool>``: the settings salt-virt models; everything else is kept as it is."""

    TAG = "pool"
    ptype = XPath(".", "type")
    target = XPath("target/path")

    # ------------------------------------------------------------------ reading

    def settings(self):
        """The modelled settings, normalised like :meth:`PoolSpec.settings`."""
        perms = self.find("target/permissions")
        permissions = None
        if perms is not None:
            permissions = {c.tag: (c.text or "").strip() for c in perms if c.tag in PERMISSION_KEYS}
            if "mode" in permissions:
                permissions["mode"] = f"{int(permissions['mode'], 8):04o}"
        source = self.find("source")
        found = {}
        if source is not None:
            found = {key: self._read(key, source) for key in SOURCE_KEYS}
        return {"ptype": self.ptype, "target": self.target, "permissions": permissions or None,
                "source": {k: v for k, v in found.items() if v not in (None, [], {})}}

    @staticmethod
    def _read(key, source):
        if key in _SOURCE_ATTRS:
            return XPath(*_SOURCE_ATTRS[key]).__get__(XmlView(source))
        return getattr(PoolXml, f"_read_{key}")(source)

    @staticmethod
    def _read_hosts(source):
        return [{"name": h.get("name"), **({"port": int(h.get("port"))} if h.get("port") else {})}
                for h in source.findall("host")]

    @staticmethod
    def _read_devices(source):
        out = []
        for dev in source.findall("device"):
            entry = {"path": dev.get("path")}
            if dev.get("part_separator") is not None:
                entry["part_separator"] = dev.get("part_separator") == "yes"
            out.append(entry)
        return out

    @staticmethod
    def _read_adapter(source):
        adapter = source.find("adapter")
        if adapter is None:
            return None
        out = {k: adapter.get(k) for k in ADAPTER_KEYS if adapter.get(k) is not None}
        parent = adapter.find("parentaddr")
        if parent is not None:
            address = parent.find("address")
            out["parent_address"] = {"address": {k: address.get(k) for k in PCI_KEYS if address is not None
                                                 and address.get(k) is not None}}
            if parent.get("unique_id") is not None:
                out["parent_address"]["unique_id"] = parent.get("unique_id")
        return out

    @staticmethod
    def _read_name(source):
        return (source.findtext("name") or "").strip() or None

    @staticmethod
    def _read_auth(source):
        auth = source.find("auth")
        if auth is None:
            return None
        secret = auth.find("secret")
        kind = "uuid" if secret is not None and secret.get("uuid") else "usage"
        return {"type": auth.get("type"), "username": auth.get("username"),
                "secret": {"type": kind, "value": secret.get(kind) if secret is not None else None}}

    # ------------------------------------------------------------------ writing

    def write(self, part, value):
        """Set one setting (``ptype``, ``target``, ``permissions`` or ``source:<key>``)."""
        if part == "ptype":
            self.element.set("type", value)
        elif part == "target":
            target = self._child(self.element, "target", ("source", "name"))
            path = target.find("path")
            if path is None:
                path = _elem("path")
                target.insert(0, path)
            path.text = value
        elif part == "permissions":
            target = self._child(self.element, "target", ("source", "name"))
            perms = self._child(target, "permissions", ("path",))
            for key in PERMISSION_KEYS:
                if key in value:
                    self._child(perms, key, ()).text = value[key]
        else:
            key = part.split(":", 1)[1]
            source = self._child(self.element, "source", ("uuid", "name"))
            for old in source.findall(_SOURCE_TAGS[key]):
                source.remove(old)
            new = _source_elements(key, value) if value not in (None, [], {}) else []
            anchor = max((i for i, child in enumerate(source)
                          if _ORDER.get(child.tag, 99) < SOURCE_KEYS.index(key)), default=-1)
            for offset, elem in enumerate(new):
                source.insert(anchor + 1 + offset, elem)

    @staticmethod
    def _child(parent, tag, anchors):
        elem = parent.find(tag)
        if elem is None:
            elem = _elem(tag)
            index = len(parent)
            for anchor in anchors:
                found = parent.find(anchor)
                if found is not None:
                    index = list(parent).index(found) + 1
                    break
            parent.insert(index, elem)
        return elem


_SOURCE_TAGS = {"hosts": "host", "devices": "device", "dir": "dir", "adapter": "adapter", "name": "name",
                "format": "format", "auth": "auth", "initiator": "initiator"}
_ORDER = {tag: SOURCE_KEYS.index(key) for key, tag in _SOURCE_TAGS.items()}


def _source_elements(key, value):
    if key == "hosts":
        return [_elem("host", name=h["name"], port=h.get("port")) for h in value]
    if key == "devices":
        return [_elem("device", path=d["path"], part_separator=None if d.get("part_separator") is None
                      else ("yes" if d["part_separator"] else "no")) for d in value]
    if key == "dir":
        return [_elem("dir", path=value)]
    if key == "adapter":
        adapter = _elem("adapter", **{k: v for k, v in value.items() if k != "parent_address"})
        parent = value.get("parent_address")
        if parent:
            addr = ET.SubElement(adapter, "parentaddr", {"unique_id": parent["unique_id"]}
                                 if parent.get("unique_id") else {})
            ET.SubElement(addr, "address", parent["address"])
        return [adapter]
    if key == "name":
        elem = _elem("name")
        elem.text = value
        return [elem]
    if key == "format":
        return [_elem("format", type=value)]
    if key == "auth":
        auth = _elem("auth", type=value["type"], username=value["username"])
        ET.SubElement(auth, "secret", {value["secret"]["type"]: value["secret"]["value"]})
        return [auth]
    initiator = _elem("initiator")
    ET.SubElement(initiator, "iqn", name=value)
    return [initiator]


def differences(view, wanted):
    """``{part: {"old", "new"}}`` for each setting the caller gave (``wanted``: a
    :meth:`PoolSpec.settings`) that ``view`` does not have; parts as in :meth:`PoolXml.write`.
    Passwords never appear: ``source_auth`` compares by its secret's reference."""
    have = view.settings()
    diff = {}
    if have["ptype"] != wanted["ptype"]:
        diff["ptype"] = {"old": have["ptype"], "new": wanted["ptype"]}
    if wanted["target"] is not None and have["target"] != wanted["target"]:
        diff["target"] = {"old": have["target"], "new": wanted["target"]}
    if wanted["permissions"]:
        old = {k: v for k, v in (have["permissions"] or {}).items() if k in wanted["permissions"]}
        if old != wanted["permissions"]:
            diff["permissions"] = {"old": have["permissions"], "new": wanted["permissions"]}
    for key in SOURCE_KEYS:
        if key in wanted["source"] and have["source"].get(key) != wanted["source"][key]:
            diff[f"source:{key}"] = {"old": have["source"].get(key), "new": wanted["source"][key]}
        elif "ptype" in diff and key in have["source"] and key not in wanted["source"]:
            # Another pool type: what the old type's source had does not carry over.
            diff[f"source:{key}"] = {"old": have["source"][key], "new": None}
    return diff


def build(spec):
    """The XML of a new pool from a :class:`PoolSpec`."""
    view = PoolXml.new(spec.name)
    wanted = spec.settings()
    view.write("ptype", wanted["ptype"])
    for key in SOURCE_KEYS:
        if key in wanted["source"]:
            view.write(f"source:{key}", wanted["source"][key])
    if wanted["target"]:
        view.write("target", wanted["target"])
    if wanted["permissions"]:
        view.write("permissions", wanted["permissions"])
    return view.to_xml()


def change(view, spec):
    """Bring ``view`` to ``spec`` in place; returns :func:`differences` (empty: untouched)."""
    diff = differences(view, spec.settings())
    for part, values in diff.items():
        view.write(part, values["new"])
    return diff
