"""libvirt calls on storage pools: define, update, build, start, stop, delete, undefine,
autostart, refresh, inventory and capabilities (the classic ``virt.pool_*`` API).

Every function takes an open libvirt connection (:mod:`saltvirt.connection`) and raises the
library's errors with one-line messages that name the pool and what to do. Whatever can reach
host directories, devices or volume groups -- defining or changing a pool, building or deleting
one -- is first checked against the operator's :class:`saltvirt.storage.paths.PoolPolicy`.
"""

import base64
import binascii
import contextlib
import xml.etree.ElementTree as ET  # noqa: S405 (libvirt's own XML, or ours)

from saltvirt import connection
from saltvirt.connection import libvirt, libvirt_errors
from saltvirt.errors import AlreadyExists, InvalidArgument, VirtError
from saltvirt.storage import poolxml

STATES = ("inactive", "building", "running", "degraded", "inaccessible")


def lookup(conn, name):
    return connection.lookup(conn.storagePoolLookupByName, name, libvirt.VIR_ERR_NO_STORAGE_POOL,
                             f"storage pool {name} is not defined on this hypervisor (virt.list_pools lists "
                             "the pools)", f"storage pool {name}")


def list_names(conn):
    with libvirt_errors("listing the storage pools"):
        return sorted(pool.name() for pool in conn.listAllStoragePools(0))


def _definition(pool):
    """The persistent definition (what the pool starts with next), or the running one."""
    if not pool.isPersistent():
        return pool.XMLDesc(0)
    return connection.inactive_xml(pool, libvirt.VIR_STORAGE_XML_INACTIVE)


def view(conn, name):
    """``(pool, PoolXml of its definition)``."""
    pool = lookup(conn, name)
    with libvirt_errors(f"storage pool {name}"):
        return pool, poolxml.PoolXml.parse(_definition(pool))


def checked(conn, name, policy):
    """The pool ``name`` once its definition passes ``policy``: what callers may build,
    delete or put volumes in is what they could have defined."""
    pool, found = view(conn, name)
    policy.check(name, found.settings())
    return pool, found


def get_xml(conn, name, inactive=False):
    pool = lookup(conn, name)
    with libvirt_errors(f"storage pool {name}"):
        return _definition(pool) if inactive else pool.XMLDesc(0)


def _info(pool):
    state, capacity, allocation, free = pool.info()
    found = poolxml.PoolXml.parse(pool.XMLDesc(0))
    return {
        "uuid": pool.UUIDString(),
        "state": STATES[state] if state < len(STATES) else "unknown",
        "capacity": capacity,
        "allocation": allocation,
        "free": free,
        "autostart": bool(pool.autostart()),
        "persistent": bool(pool.isPersistent()),
        "target_path": found.target,
        "type": found.ptype,
    }


def info(conn, name=None):
    """``{name: {uuid, state, capacity, allocation, free, autostart, persistent, target_path,
    type}}`` of one pool or all (``{}`` when ``name`` is not defined, as classic)."""
    with libvirt_errors("reading the storage pools"):
        return {pool.name(): _info(pool) for pool in conn.listAllStoragePools(0)
                if name is None or pool.name() == name}


def _set_secret(conn, spec, test):
    """Put ``source_auth``'s password in the libvirt secret the pool's XML names (``pool_<name>``),
    defining the secret when missing. Returns whether the secret was made here."""
    password = spec.password
    if password is None or test:
        return False
    usage_type = (libvirt.VIR_SECRET_USAGE_TYPE_CEPH if spec.ptype == "rbd"
                  else libvirt.VIR_SECRET_USAGE_TYPE_ISCSI)
    usage = f"pool_{spec.name}"
    made = False
    with libvirt_errors(f"storage pool {spec.name}: the secret {usage}"):
        try:
            secret = conn.secretLookupByUsage(usage_type, usage)
        except libvirt.libvirtError:
            # libvirt's secret usage types are ceph and iscsi (the pool's auth type is chap).
            usage_tag, kind = ("name", "ceph") if spec.ptype == "rbd" else ("target", "iscsi")
            xml = (f"<secret ephemeral='no' private='yes'><description>Passphrase of storage pool "
                   f"{spec.name}</description><usage type='{kind}'><{usage_tag}>{usage}</{usage_tag}></usage>"
                   "</secret>")
            secret = conn.secretDefineXML(xml, 0)
            made = True
        value = str(password).encode()
        if spec.ptype == "rbd":  # a Ceph key is base64 already; libvirt stores the raw bytes
            try:
                value = base64.b64decode(value, validate=True)
            except binascii.Error:
                raise InvalidArgument(f"pool {spec.name}: a Ceph key (source_auth password) must be "
                                      "base64") from None
        secret.setValue(value, 0)
    return made


def _remove_secret(conn, name, auth):
    """Undefine the secret :func:`_set_secret` made for pool ``name`` (never another one)."""
    if not auth or auth["secret"] != {"type": "usage", "value": f"pool_{name}"}:
        return
    usage_type = libvirt.VIR_SECRET_USAGE_TYPE_CEPH if auth["type"] == "ceph" else libvirt.VIR_SECRET_USAGE_TYPE_ISCSI
    with contextlib.suppress(libvirt.libvirtError):
        conn.secretLookupByUsage(usage_type, f"pool_{name}").undefine()


def define(conn, spec, *, policy):
    """Define (or, ``spec.transient``, create) the pool of ``spec`` and start it (``spec.start``).

    All or nothing: a pool that cannot start is undefined again, a secret made for it removed.
    Returns True.
    """
    if spec.name in list_names(conn):
        raise AlreadyExists(f"storage pool {spec.name} is already defined: change it with virt.pool_update "
                            "(or the virt.pool_defined state), or remove it with virt.pool_undefine")
    policy.check(spec.name, spec.settings())
    document = poolxml.build(spec)
    made_secret = _set_secret(conn, spec, False)
    pool = None
    try:
        with libvirt_errors(f"defining storage pool {spec.name}"):
            if spec.transient:
                conn.storagePoolCreateXML(document, 0)
                return True
            pool = conn.storagePoolDefineXML(document, 0)
        if spec.start:
            with libvirt_errors(f"starting storage pool {spec.name}"):
                pool.create(0)
    except VirtError:
        if pool is not None:
            with contextlib.suppress(libvirt.libvirtError):
                pool.undefine()
        if made_secret:
            _remove_secret(conn, spec.name, spec.settings()["source"].get("auth"))
        raise
    return True


def update(conn, spec, test=False, *, policy):
    """Bring the definition of the pool to ``spec``: only the settings given and different are
    rewritten, the rest of the XML kept. Returns ``{"changed", "changes": {part: {old, new}},
    "restart_needed"}`` (a running pool uses a new definition once stopped and started)."""
    pool, found = view(conn, spec.name)
    changes = poolxml.change(found, spec)
    if changes:
        policy.check(spec.name, found.settings())
    if not test:
        _set_secret(conn, spec, test)
        if changes:
            with libvirt_errors(f"updating storage pool {spec.name}"):
                conn.storagePoolDefineXML(found.to_xml(), 0)
    with libvirt_errors(f"storage pool {spec.name}"):
        active = bool(pool.isActive())
    return {"changed": bool(changes), "changes": changes, "restart_needed": bool(changes) and active}


def build(conn, name, *, policy):
    """Build the pool (make its directory, format its disk, create its volume group)."""
    pool, _found = checked(conn, name, policy)
    return connection.act(f"building storage pool {name}", pool.build, 0)


def start(conn, name):
    return connection.act(f"starting storage pool {name}", lookup(conn, name).create, 0)


def stop(conn, name):
    return connection.act(f"stopping storage pool {name}", lookup(conn, name).destroy)


def delete(conn, name, *, policy):
    """Delete the pool's resources (its directory, volume group...): libvirt refuses while it
    runs or, for a directory, while it holds files."""
    pool, _found = checked(conn, name, policy)
    return connection.act(f"deleting storage pool {name}", pool.delete, libvirt.VIR_STORAGE_POOL_DELETE_NORMAL)


def undefine(conn, name):
    """Remove the definition, and the secret salt-virt made for its ``source_auth`` password."""
    pool, found = view(conn, name)
    connection.act(f"undefining storage pool {name}", pool.undefine)
    _remove_secret(conn, name, found.settings()["source"].get("auth"))
    return True


def refresh(conn, name):
    return connection.act(f"refreshing storage pool {name}", lookup(conn, name).refresh, 0)


def set_autostart(conn, name, on):
    return connection.act(f"storage pool {name}", lookup(conn, name).setAutostart, 1 if on else 0)


def list_volumes(conn, name):
    pool = lookup(conn, name)
    with libvirt_errors(f"storage pool {name}"):
        return sorted(pool.listVolumes()) if pool.isActive() else []


def _pool_caps(elem):
    out = {"name": elem.get("type"), "supported": elem.get("supported", "no") == "yes"}
    options = {}
    for kind, key in (("poolOptions", "pool"), ("volOptions", "volume")):
        node = elem.find(kind)
        if node is None:
            continue
        found = {}
        default = node.find("defaultFormat")
        if default is not None:
            found["default_format"] = default.get("type")
        for enum in node.findall("enum"):
            found[enum.get("name")] = [(v.text or "").strip() for v in enum.findall("value")]
        if found:
            options[key] = found
    if options:
        out["options"] = options
    return out


def capabilities(conn):
    """``{"computed": False, "pool_types": [{name, supported, options: {pool, volume}}]}`` from
    libvirt's storage pool capabilities."""
    with libvirt_errors("reading the storage pool capabilities"):
        document = conn.getStoragePoolCapabilities(0)
    root = ET.fromstring(document)  # noqa: S314 (libvirt's XML)
    return {"computed": False, "pool_types": [_pool_caps(p) for p in root.findall("pool")]}
